"""Peer virtualenvs under ``bench/.peers/<name>-<hash>``, built on first use and then reused.

supervisord's import name is ``supervisor``, like ours, so no peer is ever installed into the
project's venv. A venv is complete once its ``.complete`` marker exists; a half-built one (an
interrupted run) is removed and built again. A lock file serialises concurrent builders.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / ".peers"

#: Pinned so that results are comparable run to run and the cache key is stable.
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "supervisord": ("supervisor==4.3.0",),
    "circus": ("circus==0.19.0",),
    "procmon": ("twisted==26.10.0",),
}


def base_python() -> str:
    """The real interpreter under the project's venv (never a venv's python, never a shim).

    ``python3.11`` on PATH may be a pyenv shim (a shell script costing ~60 ms per start), so
    the interpreter is the one this process's venv was made from.
    """
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _key(name: str) -> str:
    text = "\n".join([name, base_python(), sys.version.split()[0], *REQUIREMENTS[name]])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def venv_dir(name: str) -> pathlib.Path:
    return ROOT / f"{name}-{_key(name)}"


def ensure(name: str) -> str:
    """Path of the python inside ``name``'s venv, building the venv when needed."""
    folder = venv_dir(name)
    python = folder / "bin" / "python"
    marker = folder / ".complete"
    if marker.exists():
        return str(python)
    ROOT.mkdir(parents=True, exist_ok=True)
    with open(ROOT / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return str(python)
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([base_python(), "-m", "venv", str(folder)], check=True,
                       stdout=subprocess.DEVNULL)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             *REQUIREMENTS[name]],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        if result.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"pip install {' '.join(REQUIREMENTS[name])} failed:\n{result.stdout[-2000:]}")
        marker.write_text(" ".join(REQUIREMENTS[name]) + "\n")
        for old in ROOT.glob(f"{name}-*"):  # venvs for requirements no longer pinned
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    return str(python)
