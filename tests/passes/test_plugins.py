"""Plugins: passes and backends discovered from installed distributions by entry point.

"Installing" here is what pip leaves behind, made by hand on a temporary path: a
`<name>-<version>.dist-info` folder with `METADATA` and `entry_points.txt`, on sys.path, next to
the package's source. importlib.metadata finds distributions on sys.path, so no network, no pip
and no change to site-packages is needed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mytorch
from mytorch.codegen import BACKENDS
from mytorch.ir.interpreter import run
from mytorch.passes.base import PASSES
from mytorch.plugins import load_entry_points

from .helpers import check_pass

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "plugin"
EXAMPLE_MODULE = "mytorch_example_pass"


def fake_install(site: Path, name: str, entry_points: dict[str, dict[str, str]]) -> None:
    """Write the metadata pip would install for distribution `name` into the folder `site`."""
    dist = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{ep} = {target}" for ep, target in eps.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")


def example_metadata() -> tuple[str, dict]:
    """The example distribution's name and entry points, as its pyproject.toml declares them."""
    with open(EXAMPLE / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return project["name"], project["entry-points"]


@pytest.fixture
def clean_registries():
    """Plugins registered during a test are removed afterwards (and their modules unloaded)."""
    passes, backends, modules = set(PASSES), set(BACKENDS), set(sys.modules)
    yield
    for name in set(PASSES) - passes:
        del PASSES[name]
    for name in set(BACKENDS) - backends:
        del BACKENDS[name]
    for name in set(sys.modules) - modules:
        if name.startswith(("mytorch_example_pass", "broken_plugin", "plugin_backend")):
            del sys.modules[name]


@pytest.fixture
def example_installed(tmp_path, monkeypatch, clean_registries):
    """examples/plugin "installed" on a temporary path, and entry points reloaded."""
    name, entry_points = example_metadata()
    site = tmp_path / "site"
    fake_install(site, name, entry_points)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(site))
    assert "fold_double_neg" not in PASSES
    load_entry_points(force=True)
    return site


def test_the_example_declares_its_pass_in_the_passes_group():
    name, entry_points = example_metadata()
    assert name == "mytorch-example-pass"
    assert entry_points == {
        "mytorch.passes": {"fold_double_neg": f"{EXAMPLE_MODULE}:fold_double_neg"}
    }


def test_the_example_plugin_is_discovered_and_runs_when_named(example_installed):
    import mytorch_example_pass

    assert PASSES["fold_double_neg"] is mytorch_example_pass.fold_double_neg

    def f(x):
        negated = -x
        return -negated * 2.0

    x = mytorch.randn(2, 3)
    fn = mytorch.compile(f, backend="numpy", passes=["fold_double_neg"])
    np.testing.assert_allclose(fn(x).numpy(), f(x).numpy())
    assert "neg" not in fn.graph.op_counts()
    plain = mytorch.compile(f, backend="numpy", passes=["dce"])
    plain(x)
    assert plain.graph.op_counts()["neg"] == 2


def test_the_example_pass_folds_double_negations(example_installed):
    check_pass(
        "fold_double_neg",
        """
        graph(%x: f32[3]) {
          %neg0 = neg(%x) : f32[3]
          %neg1 = neg(%neg0) : f32[3]
          %neg2 = neg(%neg1) : f32[3]
          %tanh0 = tanh(%neg2) : f32[3]
          %neg3 = neg(%tanh0) : f32[3]
          %neg4 = neg(%neg3) : f32[3]
          %add0 = add(%neg4, %neg3) : f32[3]
          return (%add0)
        }
        """,
        # neg3 has another user: it stays, only neg4 goes.
        """
        graph(%x: f32[3]) {
          %neg2 = neg(%x) : f32[3]
          %tanh0 = tanh(%neg2) : f32[3]
          %neg3 = neg(%tanh0) : f32[3]
          %add0 = add(%tanh0, %neg3) : f32[3]
          return (%add0)
        }
        """,
    )


def test_the_example_pass_leaves_single_negations_alone(example_installed):
    check_pass(
        "fold_double_neg",
        """
        graph(%x: f32[3]) {
          %neg0 = neg(%x) : f32[3]
          %tanh0 = tanh(%neg0) : f32[3]
          %neg1 = neg(%tanh0) : f32[3]
          return (%neg1)
        }
        """,
    )


def test_a_backend_plugin_is_discovered_by_its_group(tmp_path, monkeypatch, clean_registries):
    site = tmp_path / "site"
    fake_install(site, "plugin-backend", {"mytorch.backends": {"counting": "plugin_backend:make"}})
    (site / "plugin_backend.py").write_text(
        "from mytorch.ir.interpreter import run\n"
        "CALLS = []\n"
        "def make(graph):\n"
        "    def runner(inputs):\n"
        "        CALLS.append(len(inputs))\n"
        "        return run(graph, inputs)\n"
        "    return runner\n"
    )
    monkeypatch.syspath_prepend(str(site))
    load_entry_points(force=True)
    fn = mytorch.compile(lambda x: x * 3.0, backend="counting")
    x = mytorch.randn(4)
    np.testing.assert_allclose(fn(x).numpy(), x.numpy() * 3.0)
    assert sys.modules["plugin_backend"].CALLS == [1]


BROKEN_MODULE = "raise RuntimeError('this plugin is broken on purpose')\n"


def install_broken(site: Path) -> None:
    fake_install(site, "broken-plugin", {"mytorch.passes": {"broken": "broken_plugin:the_pass"}})
    (site / "broken_plugin.py").write_text(BROKEN_MODULE)


def test_a_broken_plugin_warns_naming_its_distribution(tmp_path, monkeypatch, clean_registries):
    site = tmp_path / "site"
    install_broken(site)
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(RuntimeWarning, match="broken-plugin") as record:
        load_entry_points(force=True)
    message = str(record[0].message)
    assert "'broken'" in message and "broken on purpose" in message
    assert "broken" not in PASSES
    # Everything else still works.
    fn = mytorch.compile(lambda x: mytorch.tanh(x) * 1.0, backend="numpy")
    x = mytorch.randn(3)
    np.testing.assert_allclose(fn(x).numpy(), np.tanh(x.numpy()), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown pass 'broken'"):
        mytorch.compile(lambda x: x, backend="numpy", passes=["broken"])(x)


def test_import_and_compile_survive_a_broken_plugin_in_a_fresh_interpreter(tmp_path):
    site = tmp_path / "site"
    install_broken(site)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))
    script = (
        "import mytorch\n"
        "f = mytorch.compile(lambda x: x * 2.0, backend='numpy')\n"
        "print(f(mytorch.ones(2)).numpy().tolist())\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[2.0, 2.0]"
    assert "RuntimeWarning" in done.stderr and "broken-plugin" in done.stderr


def test_example_pass_on_a_graph_keeps_values(example_installed):
    # The plugin's pass through the interpreter directly, on a traced graph.
    x = mytorch.randn(5)

    def triple_neg(x):
        once = -x
        twice = -once
        return -twice

    graph = mytorch.trace(triple_neg, x)
    before = run(graph, [x.numpy()])
    result = PASSES["fold_double_neg"](graph)
    assert result.changed and graph.op_counts() == {"neg": 1}
    np.testing.assert_array_equal(run(graph, [x.numpy()])[0], before[0])
