"""Plugin discovery: passes and backends from installed packages, by entry-point group.

A package declares, in its pyproject.toml:
    [project.entry-points."mytorch.passes"]
    my_pass = "my_package.module:my_pass"
and `passes=["my_pass"]` then runs it. The group `mytorch.backends` works the same way.
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points

from .codegen import BACKENDS, register_backend
from .passes.base import PASSES, add_pass

GROUPS = {"mytorch.passes": (PASSES, add_pass), "mytorch.backends": (BACKENDS, register_backend)}
_loaded = False


def load_entry_points(force: bool = False) -> None:
    """Register every installed plugin once; a plugin that fails to load only warns."""
    global _loaded
    if _loaded and not force:
        return
    _loaded = True
    for group, (registry, add) in GROUPS.items():
        for ep in entry_points(group=group):
            if ep.name in registry:
                dist = ep.dist.name if ep.dist is not None else "unknown distribution"
                warnings.warn(
                    f"mytorch: plugin {ep.name!r} from {dist} (group {group}) is not loaded: "
                    f"the name is already registered",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            try:
                add(ep.name, ep.load())
            except Exception as e:  # a broken plugin must never break mytorch
                dist = ep.dist.name if ep.dist is not None else "unknown distribution"
                warnings.warn(
                    f"mytorch: could not load plugin {ep.name!r} ({ep.value}) from {dist} "
                    f"(group {group}): {type(e).__name__}: {e}",
                    RuntimeWarning,
                    stacklevel=2,
                )


def get_backend(name: str):
    """The backend registered (or discovered) under `name`."""
    load_entry_points()
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; backends: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]
