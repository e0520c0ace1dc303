"""tests/_system.py: a system program the tests need is found, or installed from Debian, or the test fails with
one line that says what to install (no stack trace)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import _system
import pytest
from _system import ensure_program


def test_a_program_on_the_machine_is_found_without_apt():
    assert ensure_program("sh", "dash", ("/bin/sh",)) == "/bin/sh"


def test_without_apt_a_missing_program_fails_in_one_line(monkeypatch):
    monkeypatch.setattr(_system.shutil, "which", lambda name: None)  # no apt-get, no sudo, no such program
    with pytest.raises(pytest.fail.Exception) as err:
        ensure_program("no-such-browser", "no-such-package", ("/nonexistent/no-such-browser",))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == ("no-such-browser is needed by this test and could not be installed (apt-get is not available "
                   "(or not as root / passwordless sudo)): install Debian's 'no-such-package' package "
                   "(apt-get install no-such-package)")
    assert not err.value.pytrace  # reported as that line alone, not a traceback


def test_a_failed_apt_install_fails_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(_system, "_apt_prefix", lambda: [])
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 100, "", "Reading package lists...\nE: Unable to locate package "
                                                         "no-such-package")

    monkeypatch.setattr(_system.subprocess, "run", fake_run)
    monkeypatch.setattr(_system, "_LOCK", tmp_path / "apt.lock")
    with pytest.raises(pytest.fail.Exception) as err:
        ensure_program("no-such-browser", "no-such-package", ("/nonexistent/no-such-browser",))
    assert [c[:2] for c in calls] == [["apt-get", "install"], ["apt-get", "update"], ["apt-get", "install"]]
    assert "E: Unable to locate package no-such-package" in str(err.value) and "\n" not in str(err.value)


def test_the_failure_shows_as_one_line_in_a_pytest_run(tmp_path):
    """A browser test on a machine where the browser cannot be had: pytest's report holds the one line."""
    (tmp_path / "test_needs_browser.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(_system.Path(_system.__file__).parent)!r})
        import _system

        def test_browser(monkeypatch):
            monkeypatch.setattr(_system.shutil, "which", lambda name: None)
            _system.ensure_program("no-such-browser", "no-such-package", ("/nonexistent/no-such-browser",))
    """))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 1, out.stdout
    assert "Traceback" not in out.stdout and "_system.py:" not in out.stdout, out.stdout
    report = out.stdout.split(" test_browser _")[1].split("short test summary")[0]
    lines = [ln for ln in report.splitlines() if ln.strip("_= ")]
    assert lines == ["no-such-browser is needed by this test and could not be installed (apt-get is not available "
                     "(or not as root / passwordless sudo)): install Debian's 'no-such-package' package "
                     "(apt-get install no-such-package)"], out.stdout
