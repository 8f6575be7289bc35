"""``supervisor.testing`` under ``twisted.trial``, in a process of its own as a user's suite is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_harness_cases_pass_under_trial(tmp_path):
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning:supervisor", "-m", "twisted.trial",
         "--temp-directory", str(tmp_path / "_trial_temp"), "tests.trial_harness_cases"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "PASSED (successes=4)" in out, out
