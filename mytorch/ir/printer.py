"""The text form of a Graph (one node per line), Graphviz DOT export and rendering.

    graph(%x: f32[1,12], %h: f32[1,4], %w: f32[4,16] param) {
      %cat0 = cat(%x, %h) {dim=1} : f32[1,16]
      %transpose0 = transpose(%w) {d0=0, d1=1} : f32[16,4]
      %matmul0 = matmul(%cat0, %transpose0) : f32[1,4]
      return (%matmul0)
    }

`mytorch.ir.parse` reads it back: `parse(str(g))` prints identically.
"""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np

from ..ops.shape import IntArray, Slice
from .graph import Graph, Node

INDENT = "  "


def format_graph(graph: Graph, indent: str = "") -> str:
    """The whole graph as text."""
    header = ", ".join(_format_input(i) for i in graph.inputs)
    lines = [f"{indent}graph({header}) {{"]
    for n in graph.nodes:
        lines.append(indent + INDENT + format_node(n, indent + INDENT))
    outputs = ", ".join(f"%{o.name}" for o in graph.outputs)
    lines.append(f"{indent}{INDENT}return ({outputs})")
    lines.append(f"{indent}}}")
    return "\n".join(lines)


def _format_input(node: Node) -> str:
    return f"%{node.name}: {node.type}" + (" param" if node.is_param else "")


def format_node(node: Node, indent: str = "") -> str:
    """One node: `%name = op(%a, %b) {k=v, ...} : f32[2,3]`, then its body graph if it has one."""
    args = ", ".join(f"%{i.name}" for i in node.inputs)
    params = dict(node.params)
    body = params.pop("body", None)
    if node.is_const:
        params.update(const_params(node.value))
    text = f"%{node.name} = {node.op}({args})"
    if params:
        text += " {" + ", ".join(f"{k}={format_param(k, v)}" for k, v in params.items()) + "}"
    text += f" : {node.type}"
    if body is not None:
        text += " " + format_graph(body, indent).lstrip()
    return text


def const_params(value: np.ndarray) -> dict:
    """A constant's value as params: `fill` when every element is equal, else `value`."""
    flat = value.ravel()
    if flat.size and np.all(flat == flat[0]) and not np.isnan(flat[0]):
        return {"fill": flat[0].item()}
    return {"value": value.tolist()}


def format_param(key: str, value) -> str:
    """A param value in the text form (Python syntax, indices as subscripts)."""
    if key == "index":
        return "[" + (", ".join(_format_index_item(i) for i in value) if value else "()") + "]"
    return _format_value(value)


def _format_value(value) -> str:
    if isinstance(value, (bool, np.bool_)) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return str(value)  # nan, inf, -inf
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(_format_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    raise TypeError(f"cannot print param value {value!r} of type {type(value).__name__}")


def _format_index_item(item) -> str:
    if item is Ellipsis:
        return "..."
    if isinstance(item, (Slice, IntArray)):
        return str(item)
    return _format_value(item)


# ---- DOT --------------------------------------------------------------------------------------


def to_dot(graph: Graph) -> str:
    """Graphviz DOT text: inputs as ellipses (parameters shaded), ops as boxes, data-flow edges."""
    lines = [f'digraph "{_escape(graph.name)}" {{', "  rankdir=TB;", "  node [fontname=monospace];"]
    for n in graph.inputs:
        style = ', style=filled, fillcolor="#dde8f5"' if n.is_param else ""
        lines.append(f'  "{n.name}" [shape=ellipse, label="%{_escape(n.name)}\\n{n.type}"{style}];')
    for n in graph.nodes:
        params = ", ".join(
            f"{k}={format_param(k, v)}" if k != "body" else f"body=<{len(v)} nodes>"
            for k, v in n.params.items()
        )
        label = f"%{n.name}\\n{n.op}" + (f" {{{params}}}" if params else "") + f"\\n{n.type}"
        shape = "note" if n.is_const else "box"
        lines.append(f'  "{n.name}" [shape={shape}, label="{_escape(label)}"];')
        for i in n.inputs:
            lines.append(f'  "{i.name}" -> "{n.name}";')
    for k, o in enumerate(graph.outputs):
        lines.append(f'  "out{k}" [shape=doublecircle, label="out{k}"];')
        lines.append(f'  "{o.name}" -> "out{k}";')
    lines.append("}")
    return "\n".join(lines)


def _escape(text: str) -> str:
    return text.replace('"', '\\"')


def render(graph: Graph, path: str) -> str:
    """Write the graph as SVG or PNG (by the file extension) using Graphviz's `dot`."""
    fmt = path.rsplit(".", 1)[-1].lower()
    if fmt not in ("svg", "png"):
        raise ValueError(f"render: path must end in .svg or .png, got {path!r}")
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(
            "render needs Graphviz's `dot` program, which is not installed "
            "(on Debian: apt-get install graphviz); graph.to_dot() gives the DOT text"
        )
    subprocess.run([dot, f"-T{fmt}", "-o", path], input=to_dot(graph), text=True, check=True)
    return path
