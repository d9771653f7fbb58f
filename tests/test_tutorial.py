"""Run the RNN tutorial notebook dump cell by cell and compare what each cell shows.

Format of `tests/data/rnn_tutorial.txt` (a notebook saved as text):
- A code cell starts at a line `In [N]:` and runs to the next `In [` line. Inside it, the text
  is split into blocks at blank lines. The first block is code. A later block is still code if
  it is indented (the body of a def/class continues after a blank line) or if it parses
  together with the code before it and is not a lone expression (a lone expression after a
  blank line is what a displayed value looks like, e.g. `RNN(12, 4, num_layers=12)`).
- The first block that is not code starts the cell's output, which runs until prose starts:
  a block containing CJK text or markdown (`#`, `![`). Text outside cells is prose.
- A cell shows what it prints, followed by `repr(value)` when its last statement is a bare
  expression whose value is not None (IPython's rule; a trailing `;` suppresses it).
Shown and expected output are compared exactly, after removing whitespace at the very end.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).parent / "data" / "rnn_tutorial.txt"
CELL_HEADER = re.compile(r"^In \[(\d*)\]:\s*$")
PROSE = re.compile(r"[\u3000-\u9fff\uff00-\uffef]|^\s*(#|!\[)", re.MULTILINE)


@dataclass(frozen=True)
class Cell:
    """One code cell: its label, source code, the output the notebook recorded, and its line."""

    label: str
    code: str
    expected: str
    line: int


def _blocks(lines: list[str]) -> list[tuple[int, int]]:
    """Line ranges [start, stop) of the blocks separated by blank (or whitespace-only) lines."""
    blocks: list[tuple[int, int]] = []
    start = None
    for i, line in enumerate(lines):
        if line.strip() and start is None:
            start = i
        elif not line.strip() and start is not None:
            blocks.append((start, i))
            start = None
    if start is not None:
        blocks.append((start, len(lines)))
    return blocks


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


def _continues_code(code: str, block: str) -> bool:
    """Whether a block after a blank line is more code rather than the cell's output."""
    if block[:1].isspace():
        return True
    if PROSE.search(block) or not _parses(code + "\n\n" + block):
        return False
    statements = ast.parse(block).body
    return not (len(statements) == 1 and isinstance(statements[0], ast.Expr))


def _split_cell(lines: list[str]) -> tuple[str, str]:
    """Split the lines after an `In [N]:` header into (code, expected output), both verbatim."""
    blocks = [(start, stop, "\n".join(lines[start:stop])) for start, stop in _blocks(lines)]
    if not blocks:
        return "", ""
    code_stop = blocks[0][1]
    rest = blocks[1:]
    while rest and _continues_code("\n".join(lines[:code_stop]), rest[0][2]):
        code_stop = rest.pop(0)[1]
    output = []
    for start, stop, text in rest:
        if PROSE.search(text):
            break
        output.append((start, stop))
    code = "\n".join(lines[:code_stop])
    # The output is taken verbatim from the file, blank lines inside it included.
    expected = "\n".join(lines[output[0][0] : output[-1][1]]) if output else ""
    return code, expected


def parse_notebook(text: str) -> list[Cell]:
    """All code cells of a notebook dump, in file order."""
    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if CELL_HEADER.match(line)]
    cells = []
    for position, start in enumerate(headers):
        stop = headers[position + 1] if position + 1 < len(headers) else len(lines)
        code, expected = _split_cell(lines[start + 1 : stop])
        label = lines[start].strip()
        cells.append(Cell(label=label, code=code, expected=expected, line=start + 1))
    return cells


class NotebookRunner:
    """Runs cells in order in one namespace, remembering what each one showed."""

    def __init__(self, cells: list[Cell]):
        self.cells = cells
        self.namespace: dict = {"__name__": "__main__"}
        self.shown: list[str] = []
        self.failed: str | None = None

    def show(self, index: int) -> str:
        """What cell `index` showed; runs every earlier cell first (once)."""
        while len(self.shown) <= index:
            cell = self.cells[len(self.shown)]
            if self.failed is not None:
                pytest.fail(f"an earlier cell failed ({self.failed}), so {cell.label} cannot run")
            try:
                self.shown.append(run_cell(cell, self.namespace))
            except BaseException:
                self.failed = cell.label
                raise
        return self.shown[index]


def run_cell(cell: Cell, namespace: dict) -> str:
    """Execute one cell the way IPython does and return what it shows."""
    tree = ast.parse(cell.code)
    display = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not cell.code.rstrip().endswith(";"):
        display = ast.Expression(tree.body.pop().value)
    filename = f"<tutorial {cell.label} line {cell.line}>"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(tree, filename, "exec"), namespace)
        if display is not None:
            value = eval(compile(display, filename, "eval"), namespace)
            if value is not None:
                print(repr(value))
    return stdout.getvalue()


CELLS = parse_notebook(TUTORIAL.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runner() -> NotebookRunner:
    return NotebookRunner(CELLS)


def test_parser_found_every_cell():
    labels = [cell.label for cell in CELLS]
    assert labels == [
        "In [1]:",
        "In [2]:",
        "In [4]:",
        "In [13]:",
        "In [14]:",
        "In [3]:",
        "In [7]:",
        "In [8]:",
    ]
    by_label = {cell.label: cell for cell in CELLS}
    assert by_label["In [4]:"].code.rstrip().endswith("return out")
    assert by_label["In [4]:"].expected == ""
    assert by_label["In [7]:"].code.rstrip().endswith('output_size={self.output_size})"')
    assert by_label["In [13]:"].expected.startswith("Tensor(data=[[1. 2. 3.]\n [4. 5. 6.]]")
    assert by_label["In [8]:"].expected == "RNN(12, 4, num_layers=12)"
    for cell in CELLS:
        assert _parses(cell.code), cell.label


@pytest.mark.parametrize("index", range(len(CELLS)), ids=[c.label for c in CELLS])
def test_cell_shows_the_notebook_output(index, runner):
    cell = CELLS[index]
    if "import torch" in cell.code:
        pytest.importorskip("torch", reason="this cell needs PyTorch")
    shown = runner.show(index)
    assert shown.rstrip() == cell.expected.rstrip(), (
        f"{cell.label} (line {cell.line}) showed:\n{shown}\nbut the notebook shows:\n"
        f"{cell.expected}"
    )
