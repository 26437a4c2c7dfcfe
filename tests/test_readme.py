"""The Python examples of README.md and of every docs/*.md page run as written, on a tiny finished run at the
path they name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lingtrace.cli import main
from test_cli import toy_table, write_toy_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


BLOCKS = python_blocks(README)
#: (file relative to the repository root, index of the block in the file, code), in file order
EXAMPLES = [(page.relative_to(ROOT).as_posix(), i, code) for page in PAGES for i, code in enumerate(python_blocks(page))]


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
def namespaces():
    """One namespace per file for its blocks: a block may continue the one before it in the same file."""
    return {}


@pytest.mark.parametrize(("page", "index", "code"), EXAMPLES, ids=[f"{page}-{i + 1}" for page, i, _ in EXAMPLES])
def test_readme_python_example_runs(page, index, code, workdir, namespaces, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    capsys.readouterr()
    namespace = namespaces.setdefault(page, {"__name__": "readme_examples"})
    exec(compile(code, f"{page} python block {index + 1}", "exec"), namespace)  # noqa: S102
    assert capsys.readouterr().out  # the examples print what they computed
