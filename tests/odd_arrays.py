"""Arrays of layouts the native call path must refuse or copy, for the guard tests."""

from __future__ import annotations

import numpy as np


def unaligned(a: np.ndarray) -> np.ndarray:
    """A copy of `a` starting one byte past an aligned address (numpy's aligned flag is False)."""
    raw = np.zeros(a.nbytes + 1, np.uint8)
    out = raw[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


def read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a
