"""System programs the tests obtain themselves: Debian packages installed with apt-get where missing.

`ensure_program("chromium", "chromium")` returns the program's path, installing the Debian package when the
program is not on the machine and apt-get is (as root, or through sudo). Where it cannot be had the calling test
fails with one line that says what to install, never a stack trace. An exclusive file lock keeps two test
processes from running apt-get at the same time."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

_LOCK = Path(tempfile.gettempdir()) / "regime_assets_apt.lock"


def _find(program: str, candidates: tuple[str, ...]) -> str | None:
    for c in candidates:
        if Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return shutil.which(program)


def _apt_prefix() -> list[str] | None:
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def install_debian_packages(packages: list[str]) -> str | None:
    """Install Debian packages; returns None on success, else a one-line reason."""
    prefix = _apt_prefix()
    if prefix is None:
        return "apt-get is not available (or not as root / passwordless sudo)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        inst = subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", *packages], capture_output=True,
                              text=True, env=env)
        if inst.returncode != 0:
            subprocess.run([*prefix, "apt-get", "update", "-qq"], capture_output=True, text=True, env=env)
            inst = subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", *packages], capture_output=True,
                                  text=True, env=env)
    if inst.returncode != 0:
        tail = (inst.stderr or inst.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"apt-get install {' '.join(packages)} failed: {tail[0]}"
    return None


def ensure_program(program: str, package: str, candidates: tuple[str, ...] = (), extra_packages: tuple[str, ...] = ()
                   ) -> str:
    """Path of `program`, installing Debian's `package` where it is missing; fails the test in one line if it
    cannot be had."""
    found = _find(program, candidates)
    if found:
        return found
    why = install_debian_packages([package, *extra_packages])
    found = _find(program, candidates)
    if found:
        return found
    pytest.fail(f"{program} is needed by this test and could not be installed ({why or 'not found after install'}): "
                f"install Debian's '{package}' package (apt-get install {package})", pytrace=False)
