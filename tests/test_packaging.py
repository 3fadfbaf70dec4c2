"""Every package on disk is installed, under the right name, with its data files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (requires-python >= 3.10) has no tomllib
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
# folders outside exitsearch/ that install under another name
RENAMED = {"cli": "exitsearch_cli", "search_spaces": "exitsearch.search_spaces"}


def _packages_on_disk() -> set[str]:
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "exitsearch").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    return found | set(RENAMED.values())


def test_every_package_on_disk_is_listed():
    listed = set(SETUPTOOLS["packages"])
    missing = sorted(_packages_on_disk() - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_listed_packages_exist_and_cli_is_renamed():
    package_dir = SETUPTOOLS["package-dir"]
    for folder, name in RENAMED.items():
        assert package_dir[name] == folder
    assert "cli" not in SETUPTOOLS["packages"]
    for name in SETUPTOOLS["packages"]:
        folder = package_dir.get(name, name.replace(".", "/"))
        assert (ROOT / folder).is_dir(), f"{name} is listed but {folder}/ does not exist"


def test_console_script_points_into_exitsearch_cli():
    assert PYPROJECT["project"]["scripts"]["exitsearch"] == "exitsearch_cli.main:app"


@pytest.mark.slow
def test_wheel_contents(tmp_path):
    # Build from a copy so that setuptools' build/ and egg-info never touch the checkout.
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in ("exitsearch", "cli", "search_spaces"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, src / name)
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "-q", "-w", str(out)]
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("exitsearch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    assert "exitsearch_cli/main.py" in names
    assert not any(n.startswith("cli/") for n in names)
    assert not any(n.startswith(("tests/", "search_spaces/")) for n in names)
    # every listed package that has modules ships them (whether every package on disk is
    # listed is test_every_package_on_disk_is_listed's job)
    built = tomllib.loads((src / "pyproject.toml").read_text(encoding="utf-8"))
    package_dir = built["tool"]["setuptools"]["package-dir"]
    for package in built["tool"]["setuptools"]["packages"]:
        folder = src / package_dir.get(package, package.replace(".", "/"))
        for module in folder.glob("*.py"):
            assert f"{package.replace('.', '/')}/{module.name}" in names

    # the checkout changes while other work goes on: compare with the copy that was built
    yamls = sorted((src / "search_spaces").glob("*.yaml"))
    for y in yamls:
        assert f"exitsearch/search_spaces/{y.name}" in names
    assets = src / "exitsearch" / "assets"
    for f in sorted(assets.rglob("*.safetensors")) + sorted(assets.rglob("*.json")):
        assert f"exitsearch/assets/{f.relative_to(assets).as_posix()}" in names
