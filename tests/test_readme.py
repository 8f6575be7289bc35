"""Every ```python block of the README runs as written, each in a fresh interpreter, with our
own deprecation warnings as errors; the application example also runs under ``twistd -ny``
the way the README tells a reader to run it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README, re.M | re.S)
TWISTD = str(Path(sys.executable).with_name("twistd"))
TIMEOUT = 60


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="readme-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block {i + 1}" for i in range(len(BLOCKS))])
def test_each_python_block_runs_as_written(block, workdir):
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning:supervisor", "-c", block],
        cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_the_application_example_runs_under_twistd(workdir):
    [tac] = [b for b in BLOCKS if "application = Application(" in b]
    assert "twistd -ny myapp.tac" in README
    # a probe after the README's code: the worker logs while the application starts, before
    # twistd's reactor runs and takes SIGINT; the probe prints once it does
    probe = ("\nfrom twisted.internet import reactor\n"
             "reactor.callWhenRunning(print, 'reactor running', flush=True)\n")
    (workdir / "myapp.tac").write_text(tac + probe)
    with open(workdir / "out.log", "wb") as out:
        proc = subprocess.Popen([TWISTD, "-ny", "myapp.tac", "--pidfile="], cwd=workdir, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    log = lambda: (workdir / "out.log").read_text(errors="replace")  # noqa: E731
    try:
        wait_until(lambda: "[supervisor.child.root.worker#info] working" in log() or proc.poll() is not None,
                   TIMEOUT, "the worker's first log line")
        wait_until(lambda: "reactor running" in log() or proc.poll() is not None,
                   TIMEOUT, "the reactor running")
        assert proc.poll() is None, log()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log() and "Server Shut Down" in log(), log()
