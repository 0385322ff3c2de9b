"""A plain (non-editable) install runs the commands: configs/ ships inside the wheel as robot_spec/configs, and
the package list in pyproject.toml names every package on disk."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_package():
    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    # Top-level packages of the project (not .venv's, which CI creates inside the clone), and every package below.
    tops = [d for d in REPO.iterdir() if (d / "__init__.py").is_file() and d.name not in ("tests", "benchmarks")]
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for top in tops for p in top.glob("**/__init__.py")}
    assert set(setuptools_cfg["packages"]) == on_disk | {"robot_spec.configs"}
    assert setuptools_cfg["package-dir"] == {"robot_spec.configs": "configs"}


def test_a_wheel_carries_the_configs_and_finds_them(tmp_path):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 68:
        pytest.skip(f"setuptools {setuptools.__version__} < 68 (pyproject.toml's build requirement)")
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "data_logs", "benchmarks",
                                                                "tests", "build", "*.egg-info", "__pycache__"))  # fmt: skip
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(source)], check=True, capture_output=True)  # fmt: skip
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    shipped = {p.relative_to(site / "robot_spec" / "configs") for p in (site / "robot_spec" / "configs").rglob("*.yaml")}
    assert shipped == {p.relative_to(REPO / "configs") for p in (REPO / "configs").rglob("*.yaml")}
    probe = ("import robot_spec.config as c; from robot_spec import load_robot; from deploy.runtime import "
             "load_runtime_config; load_robot('go1'); load_runtime_config('runtime_fast'); print(c.CONFIG_DIR)")
    found = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                           check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert Path(found) == site / "robot_spec" / "configs"
