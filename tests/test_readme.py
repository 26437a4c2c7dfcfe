"""The README's Python examples run as written, on a tiny finished run at the path they name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lingtrace.cli import main
from test_cli import toy_table, write_toy_config

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model_dir):
    """A directory holding ``runs/demo``: a tiny run complete through influence (what the examples read)."""
    root = tmp_path_factory.mktemp("readme")
    data = root / "toy.csv"
    toy_table().to_csv(data, index=False)
    cfg = write_toy_config(root, data, tiny_model_dir)
    assert main(["run", str(cfg), "--out", str(root / "runs" / "demo"), "--stages", "prepare,train,select,influence", "-q"]) == 0
    return root


def test_readme_has_python_examples():
    assert BLOCKS, "README.md has no ```python block"


@pytest.fixture(scope="module")
def namespace():
    """One namespace for all blocks: a block may continue the one before it, as the README says."""
    return {"__name__": "readme_examples"}


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_example_runs(index, workdir, namespace, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    capsys.readouterr()
    exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), namespace)  # noqa: S102
    assert capsys.readouterr().out  # the examples print what they computed
