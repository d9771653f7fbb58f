"""Saved values that the backward reads side by side are saved joined (`join_saved`).

BPTT's weight gradient is one product over the states the steps started from: cat(h_0, h[:T-1])
along the steps, where h_0 is one forward value (the first step, peeled from the loop) and h is
another (the loop's states). If the backward made that cat, it would copy every state (590 KB
per training step in the names example). In the forward the cat costs nothing: each piece is
computed straight into its place (`codegen.llvm._placed_in_cats`). So the forward saves the
join, cat(h_0, h), instead of its pieces, and the backward reads the pieces, and the cat, as
views of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ops.registry import TensorType
from ..ops.shape import Slice, step_range
from .graph import Graph, Node


@dataclass(frozen=True)
class SavedJoin:
    """A value the forward saves for the backward: its values `pieces` joined along dim 0, a
    piece marked `lifted` given a leading dim of 1 first (a single step)."""

    pieces: tuple[tuple[Node, bool], ...]

    @property
    def type(self) -> TensorType:
        first, _ = self.pieces[0]
        steps = sum(1 if lifted else node.shape[0] for node, lifted in self.pieces)
        rest = first.shape if self.pieces[0][1] else first.shape[1:]
        return TensorType((steps, *rest), first.dtype)

    def make(self, graph: Graph, value_of: dict[Node, Node]) -> Node:
        """The join as a node of `graph`, whose pieces are value_of[piece]."""
        parts = []
        for node, lifted in self.pieces:
            part = value_of[node]
            if lifted:
                part = graph.add_node("reshape", [part], {"shape": (1, *part.shape)})
            parts.append(part)
        return graph.add_node("cat", parts, {"dim": 0})

    def __str__(self) -> str:
        names = ", ".join(f"%{node.name}" + ("[None]" if lifted else "") for node, lifted in self)
        return f"cat({names}) {self.type}"

    def __iter__(self):
        return iter(self.pieces)


@dataclass(frozen=True)
class _Piece:
    input: Node  # a backward input: a saved forward value
    lifted: bool
    start: int  # the steps of it the cat reads
    stop: int

    @property
    def steps(self) -> int:
        return 1 if self.lifted else self.input.shape[0]


def join_saved(graph: Graph, sources: list) -> bool:
    """Rewrite backward `graph` (its inputs' `sources`: ("saved", forward value) or others) so
    that each cat along dim 0 of saved forward values, each whole or a run of its steps, is
    read from one new input, ("joined", SavedJoin), appended to `sources`; whether it did. The
    inputs it replaces are left unread (`Backward.prune_inputs` drops them), and the cats and
    the views only they read are left dead, in a sorted graph (`autodiff.remove_dead`)."""
    source_of = dict(zip(graph.inputs, sources, strict=True))
    changed = False
    for cat in list(graph.nodes):
        if cat.graph is not graph or cat.op != "cat" or cat.params["dim"] % len(cat.shape):
            continue
        pieces = [_piece(x, source_of) for x in cat.inputs]
        if len(pieces) < 2 or None in pieces or not _joinable(pieces, cat):
            continue
        join = SavedJoin(tuple((source_of[p.input][1], p.lifted) for p in pieces))
        joined = graph.add_input("saved_join", join.type, rename=True)
        sources.append(("joined", join))
        offset = 0
        for p in pieces:
            index = offset if p.lifted else Slice(offset, offset + p.steps, None)
            view = graph.add_node("getitem", [joined], {"index": (index,)})
            graph.replace_all_uses(p.input, view)
            offset += p.steps
        start, stop = pieces[0].start, offset - pieces[-1].steps + pieces[-1].stop
        graph.replace_all_uses(cat, _steps(graph, joined, start, stop))
        changed = True
    if changed:
        graph.sort()
    return changed


def _piece(x: Node, source_of: dict) -> _Piece | None:
    """`x` as steps of a saved forward value the forward computes, or None."""
    if x.op == "reshape" and x.shape == (1, *x.inputs[0].shape):
        piece = _Piece(x.inputs[0], True, 0, 1)
    elif x.op == "getitem" and x.inputs[0].shape:
        span = step_range(x.params["index"], x.inputs[0].shape[0])
        if span is None or span[2]:  # (an int index drops the steps' dim: no run of steps)
            return None
        piece = _Piece(x.inputs[0], False, *span[:2])
    elif x.shape:
        piece = _Piece(x, False, 0, x.shape[0])
    else:
        return None
    kind, value = source_of.get(piece.input, (None, None))
    if kind != "saved" or value.is_input or value.is_const:
        return None  # (a forward input would be copied into the join: nothing saved)
    return piece


def _joinable(pieces: list[_Piece], cat: Node) -> bool:
    """Distinct values of the cat's dtype and step shape, each but the first read from its
    first step on and each but the last to its last step: the cat is a run of their join."""
    step_shape = cat.shape[1:]
    for k, p in enumerate(pieces):
        shape = p.input.shape if p.lifted else p.input.shape[1:]
        if shape != step_shape or p.input.dtype != cat.dtype:
            return False
        if (k > 0 and p.start != 0) or (k < len(pieces) - 1 and p.stop != p.steps):
            return False
    return len({p.input for p in pieces}) == len(pieces)


def _steps(graph: Graph, x: Node, start: int, stop: int) -> Node:
    if (start, stop) == (0, x.shape[0]):
        return x
    return graph.add_node("getitem", [x], {"index": (Slice(start, stop, None),)})
