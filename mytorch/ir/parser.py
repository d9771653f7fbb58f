"""Read the text form of a Graph back: `parse(str(g))` prints identically."""

from __future__ import annotations

import ast
import re

import numpy as np

from ..ops.registry import DTYPES, TensorType
from ..ops.shape import IntArray, Slice
from .graph import CONST, Graph

_NAME = r"[\w][\w.]*"
_TYPE = r"(\w+)\[([\d,]*)\]"
_SHORT_TO_DTYPE = {
    "f32": "float32",
    "f64": "float64",
    "i64": "int64",
    "i32": "int32",
    "bool": "bool",
}
_HEADER = re.compile(r"^graph\((.*)\) \{$")
_INPUT = re.compile(rf"^%({_NAME}): {_TYPE}( param)?$")
_NODE = re.compile(rf"^%({_NAME}) = (\w+)\(([^)]*)\)(?: \{{(.*)\}})? : {_TYPE}$")
_RETURN = re.compile(r"^return \((.*)\)$")


class ParseError(ValueError):
    """The text is not a graph in mytorch's text form; the message names the line."""


def parse(text: str) -> Graph:
    """A Graph from its text form."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        raise ParseError("empty graph text")
    graph, end = _parse_graph(lines, 0, lines[0])
    if end != len(lines):
        raise ParseError(f"line {end + 1}: unexpected text after the graph: {lines[end]!r}")
    return graph


def _parse_graph(lines: list[str], pos: int, header_text: str) -> tuple[Graph, int]:
    """Parse the graph whose header is on line `pos`; return it and the index of the next line."""
    header = _HEADER.match(header_text)
    if not header:
        raise ParseError(f"line {pos + 1}: expected 'graph(...) {{', got {header_text!r}")
    graph = Graph()
    values = {}
    for k, item in enumerate(_split_top(header.group(1))):
        m = _INPUT.match(item)
        if not m:
            raise ParseError(f"line {pos + 1}: bad input {item!r} (input {k})")
        name, dt, dims, param = m.groups()
        values[name] = graph.add_input(name, _type(dt, dims, pos + 1), param=bool(param))
    pos += 1
    while pos < len(lines) and lines[pos] != "}":
        line, lineno = lines[pos], pos + 1
        pos += 1
        ret = _RETURN.match(line)
        if ret:
            graph.set_outputs(_lookup(values, ret.group(1), lineno))
            continue
        body = None
        if line.endswith("{") and " graph(" in line:
            line, body_header = line.split(" graph(", 1)
            body, pos = _parse_graph(lines, pos - 1, "graph(" + body_header)
        m = _NODE.match(line)
        if not m:
            raise ParseError(f"line {lineno}: cannot read {line!r}")
        name, op, args, params_text, dt, dims = m.groups()
        params = _parse_params(params_text or "", lineno)
        if body is not None:
            params["body"] = body
        type_ = _type(dt, dims, lineno)
        if op == CONST:
            values[name] = graph.add_const(_const_value(params, type_), name=name)
        else:
            inputs = _lookup(values, args, lineno)
            values[name] = graph.add_node(op, inputs, params, type=type_, name=name)
    if pos >= len(lines):
        raise ParseError(f"line {pos}: missing '}}' closing the graph")
    return graph, pos + 1


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets (types such as f32[2,3] contain commas)."""
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(text):
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "," and depth == 0:
            parts.append(text[start:k])
            start = k + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _lookup(values: dict, text: str, lineno: int) -> list:
    out = []
    for ref in _split_top(text):
        if not ref.startswith("%") or ref[1:] not in values:
            raise ParseError(f"line {lineno}: {ref} is not defined before its use")
        out.append(values[ref[1:]])
    return out


def _type(short: str, dims: str, lineno: int) -> TensorType:
    if short not in _SHORT_TO_DTYPE:
        raise ParseError(f"line {lineno}: unknown dtype {short!r}")
    shape = tuple(int(d) for d in dims.split(",") if d)
    return TensorType(shape, DTYPES[_SHORT_TO_DTYPE[short]])


def _const_value(params: dict, type_: TensorType) -> np.ndarray:
    if "fill" in params:
        return np.full(type_.shape, params["fill"], dtype=type_.dtype)
    return np.asarray(params["value"], dtype=type_.dtype).reshape(type_.shape)


def _parse_params(text: str, lineno: int) -> dict:
    # Params are Python syntax, except indices, which print as subscripts: index=[:, 0:3].
    source = re.sub(r"\bindex=\[", "index=_[", text)
    try:
        call = ast.parse(f"f({source})", mode="eval").body
    except SyntaxError as e:
        raise ParseError(f"line {lineno}: cannot read params {{{text}}}: {e.msg}") from None
    try:
        return {kw.arg: _literal(kw.value, index=kw.arg == "index") for kw in call.keywords}
    except ValueError as e:
        raise ParseError(f"line {lineno}: {e}") from None


_NAMES = {"None": None, "True": True, "False": False, "inf": float("inf"), "nan": float("nan")}


def _literal(node: ast.AST, index: bool = False):
    if index:
        items = node.slice
        if isinstance(items, ast.Tuple):
            return tuple(_index_item(e) for e in items.elts)
        return (_index_item(items),)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand)
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    raise ValueError(f"unsupported param syntax {ast.unparse(node)!r}")


def _index_item(node: ast.AST):
    if isinstance(node, ast.Slice):
        parts = (node.lower, node.upper, node.step)
        return Slice(*(None if p is None else _literal(p) for p in parts))
    if isinstance(node, ast.List):
        arr = np.array(_literal(node), dtype=np.int64)
        return IntArray(tuple(arr.ravel().tolist()), arr.shape)
    return _literal(node)
