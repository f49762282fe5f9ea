"""The wheel ships every folder that holds modules, and `import rbench` stays light."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPING = {"core": "rbench", "plugins": "rbench/plugins"}


def _module_folders() -> set[str]:
    found = set()
    for folder, package in MAPPING.items():
        for init in (ROOT / folder).rglob("*.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if "__pycache__" in rel.parts:
                continue
            found.add(str(Path(package) / rel) if str(rel) != "." else package)
    return found


def test_wheel_packages_match_module_folders(tmp_path):
    # Build from a clean copy: a stale build/ folder would hide a package missing from the list.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", "results"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
        check=True,
    )
    (wheel,) = tmp_path.glob("rbench-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    in_wheel = {str(Path(n).parent) for n in names if n.endswith(".py")}
    assert in_wheel == _module_folders()
    for folder in _module_folders():
        assert f"{folder}/__init__.py" in names, f"{folder} lacks __init__.py"
    # the data files the code reads beside its modules (package-data in pyproject.toml)
    assert {"rbench/worker/recipes.csv", "rbench/report/site.js", "rbench/report/site.css"} <= names


def test_import_rbench_and_discovery_do_not_import_torch():
    code = (
        "import sys, rbench\n"
        "from rbench.registry import load_registry\n"
        "load_registry()\n"
        "heavy = [m for m in ('torch', 'timm', 'polars') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
