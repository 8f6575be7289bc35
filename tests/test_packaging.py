"""The built wheel installs into a clean virtualenv and registers both twistd plugins."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_wheel_ships_the_plugins_without_a_plugins_package_init(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    wheel = next(dist.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/supervisor_plugins.py" in names
    assert "twisted/plugins/__init__.py" not in names and "twisted/__init__.py" not in names
    assert "supervisor/tree/runtime.py" in names and "supervisor/ipc/server.py" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    help_text = subprocess.run([str(venv / "bin" / "twistd"), "--help"], cwd=tmp_path,
                               check=True, capture_output=True, text=True, timeout=120).stdout
    assert "supervisor-target" in help_text and "supervisor-relay" in help_text
    site = next((venv / "lib").glob("python3*/site-packages"))
    # Twisted's own plugins/__init__.py is still the one in place
    assert "pluginPackagePaths" in (site / "twisted" / "plugins" / "__init__.py").read_text()
    assert (site / "twisted" / "plugins" / "supervisor_plugins.py").exists()
