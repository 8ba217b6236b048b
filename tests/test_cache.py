"""The kernel cache under concurrency and interruption: one download, nothing half-trusted."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from helpers import MSIFORGE

pytestmark = pytest.mark.build
SPEC = "debian:6.1.0-47"  # a small kernel no other test uses: this file starts from an empty cache
RELEASE = "6.1.0-47-amd64"


def _fetch(cache, **kw) -> subprocess.Popen:
    # bookworm's suites only: an empty cache need not index sid to find a 6.1 kernel.
    env = dict(os.environ, MSIFORGE_CACHE=str(cache), MSIFORGE_SUITES="bookworm,bookworm-security")
    return subprocess.Popen([*MSIFORGE, "kernels", "fetch", SPEC], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_two_processes_fetch_the_same_kernel_once(tmp_path):
    procs = [_fetch(tmp_path), _fetch(tmp_path)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    downloads = [err.count("downloading") for _, err in outs]
    assert sorted(downloads) == [0, 1], outs
    entry = tmp_path / "kernels" / "debian" / RELEASE
    assert (entry / ".complete").exists()
    assert outs[0][0] == outs[1][0]  # both report the same cached kernel
    assert not list(entry.parent.glob(f".{RELEASE}.*"))


def test_killed_fetch_is_not_trusted(tmp_path):
    proc = _fetch(tmp_path)
    parent = tmp_path / "kernels" / "debian"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(parent.glob(f".{RELEASE}.*/debs/*.deb")):
        time.sleep(0.05)
    assert list(parent.glob(f".{RELEASE}.*")), "the fetch never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (parent / RELEASE / ".complete").exists()
    again = _fetch(tmp_path)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "downloading" in err  # re-fetched, not trusted
    assert (parent / RELEASE / ".complete").exists()
    assert not list(parent.glob(f".{RELEASE}.*"))  # the killed attempt's temporary dir is gone
    vmlinuz = parent / RELEASE / "root" / "boot" / f"vmlinuz-{RELEASE}"
    assert vmlinuz.stat().st_size > 1_000_000
