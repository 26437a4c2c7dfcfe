"""The documentation: README.md stays short and holds the commands CI runs; the docs/ pages build into a
static site with mkdocs without a warning (broken links and anchors included)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _fenced_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def _section(text: str, heading: str) -> str:
    """The text of a ``## heading`` section, up to the next heading of level 2 or higher (outside code blocks)."""
    lines = text.splitlines(keepends=True)
    start = [line.rstrip("\n") for line in lines].index(heading)
    out, fence = [lines[start]], False
    for line in lines[start + 1 :]:
        fence ^= line.startswith("```")
        if not fence and re.match(r"#{1,2} ", line):
            break
        out.append(line)
    return "".join(out)


def test_mkdocs_build_strict_has_no_warnings(tmp_path):
    pytest.importorskip("mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert not [line for line in out.splitlines() if "WARNING" in line], out
    assert (tmp_path / "site" / "index.html").is_file()


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        assert re.search(rf":\s*{re.escape(page.name)}\s*$", nav, flags=re.M), page.name


def test_readme_is_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) < 300


def test_quick_start_holds_the_demo_and_the_ci_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    (test_command,) = [line.strip() for line in ci.splitlines() if "python -m pytest" in line and not line.lstrip().startswith("#")]
    (torch_pin,) = set(re.findall(r"torch==\S+", test_command))
    quick_start = _section(README.read_text(encoding="utf-8"), "## Quick start")
    blocks = _fenced_blocks(quick_start, "bash")
    assert blocks, "README's Quick start has no ```bash block"
    assert blocks[0].splitlines() == [f"pip install {torch_pin} -e . && lingtrace demo --out runs/demo", test_command]


def _slug(heading: str) -> str:
    from markdown.extensions.toc import slugify  # mkdocs' default heading ids

    return slugify(heading, "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+?)\s*$", text, flags=re.M)}


def test_readme_links_resolve():
    pytest.importorskip("markdown")
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = README.parent / path if path else README
        assert target.exists(), link
        if anchor:
            assert anchor in _anchors(target), link


# ---------------------------------------------------------------- what the docs state, against the code
