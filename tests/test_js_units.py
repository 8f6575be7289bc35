"""Runs the dashboard's JavaScript unit tests (tests/js/*.test.mjs) under ``node --test``.

Node is a test prerequisite like chromium: when it is missing this test fails and says so.
"""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dashboard_js_units_pass():
    node = shutil.which("node")
    assert node is not None, "node is not installed (Debian package 'nodejs'); the dashboard unit tests need it"
    proc = subprocess.run(
        [node, "--test", "tests/js/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"node --test failed:\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"
