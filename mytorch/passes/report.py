"""The `explain` report: where each fusion pattern fired or why not, and what each pass did."""

from __future__ import annotations

from collections.abc import Sequence

from ..ir.graph import Graph
from ..ir.join_saved import SavedJoin
from .base import PassRecord, Remark


class Explanation:
    """What the pipeline did to one traced graph; `str()` is the readable report."""

    def __init__(self, title: str, traced: Graph, optimized: Graph, records, remarks):
        self.title = title
        self.traced_nodes = len(traced)
        self.graph = optimized
        self.records: list[PassRecord] = list(records)
        self.remarks: list[Remark] = list(remarks)
        self.backward: tuple | None = None  # (derived nodes, graph, pass records, saved values)

    def add_backward(self, derived: int, graph: Graph, records, saved) -> None:
        """The backward graph a call needing gradients builds, and what the forward saves."""
        self.backward = (derived, graph, list(records), list(saved))

    def __str__(self) -> str:
        lines = [f"explain: {self.title}", f"traced graph: {self.traced_nodes} nodes", ""]
        lines += _fusions(self.remarks)
        lines += [""] + _passes(self.records)
        counts = ", ".join(f"{op} x{n}" for op, n in sorted(self.graph.op_counts().items()))
        lines += ["", f"optimized graph: {len(self.graph)} nodes ({counts})"]
        if self.backward:
            lines += [""] + _backward(*self.backward)
        return "\n".join(lines)

    __repr__ = __str__


def _fusions(remarks: Sequence[Remark]) -> list[str]:
    lines = ["fusion patterns:"]
    if not remarks:
        return lines + ["  (no candidates)"]
    patterns: dict[str, list[Remark]] = {}
    for r in remarks:
        patterns.setdefault(r.pattern, []).append(r)
    for pattern, rs in patterns.items():
        fired = sum(r.fired for r in rs)
        lines.append(f"  {pattern}: fired {fired} of {len(rs)} candidates")
        for r in rs:
            verdict = "fired" if r.fired else "not fired"
            lines.append(f"    {r.node}: {verdict}" + (f" ({r.reason})" if r.reason else ""))
    return lines


def _passes(records: Sequence[PassRecord]) -> list[str]:
    width = max([len(r.name) for r in records] + [4])
    lines = [f"passes:  {'pass':<{width}}  nodes before -> after  changed  time"]
    for r in records:
        lines.append(
            f"         {r.name:<{width}}  {r.nodes_before:>12} -> {r.nodes_after:<5}  "
            f"{'yes' if r.changed else 'no':<7}  {r.seconds * 1e3:.2f} ms"
        )
    total = sum(r.seconds for r in records)
    lines.append(f"         {'total':<{width}}  {'':>21}  {'':<7}  {total * 1e3:.2f} ms")
    return lines


def _backward(derived: int, graph: Graph, records, saved) -> list[str]:
    counts = ", ".join(f"{op} x{n}" for op, n in sorted(graph.op_counts().items()))
    joins = [str(n) for n in saved if isinstance(n, SavedJoin)]
    values = [n for n in saved if not isinstance(n, SavedJoin)]
    kept = [f"%{n.name} {n.type}" for n in values if not n.is_input] + joins
    read = [f"%{n.name}" for n in values if n.is_input]
    return [
        f"backward graph (reverse mode over the optimized graph): {derived} nodes derived",
        *_passes(records),
        f"optimized backward graph: {len(graph)} nodes ({counts})",
        f"the forward saves: {', '.join(kept) or 'nothing'}",
        f"the backward also reads: {', '.join(read) or 'nothing'}",
    ]
