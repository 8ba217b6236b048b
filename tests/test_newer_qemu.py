"""The newer QEMU from bookworm-backports: fetched into the cache, runs on the host's libraries, keeps to itself."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.build


def test_the_newer_qemu_is_fetched_once_and_runs_here():
    """Downloaded through msiforge's own apt state, unpacked, and run through its wrapper: QEMU 10, not 7.2."""
    from msiforge.vmtests import newer_qemu, qemu

    path = newer_qemu.binary("x86_64")
    assert path == newer_qemu.binary("x86_64")  # cached: the same entry
    assert (path.parent.parent / ".complete").is_file()
    assert newer_qemu.version(path).startswith("10.")
    assert newer_qemu.version(qemu.qemu_binary("x86_64")).startswith("7.2")
    # Its own firmware and modules, not the host's 7.2 ones (a 7.2 module in a 10.0 QEMU aborts it).
    out = subprocess.run([str(path), "-M", "q35", "-accel", "tcg", "-display", "none", "-nodefaults",
                          "-device", "edu", "-monitor", "stdio", "-S"], input="info qtree\nquit\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "dev: edu" in out.stdout and "Only modules from the same build" not in out.stderr


def test_only_a_verified_arch_gets_it():
    """x86_64 is verified; the other arches keep the host's QEMU until someone checks theirs."""
    from msiforge.vmtests import newer_qemu

    assert newer_qemu.available("x86_64")
    assert not newer_qemu.available("arm64") and not newer_qemu.available("ppc64le")


def test_without_the_newer_qemu_a_stalling_kernel_still_runs_on_real_time_clocks(monkeypatch, tmp_path):
    """A mirror without bookworm-backports: the plan says why and keeps the host's QEMU (faked: the download)."""
    from msiforge import plan
    from msiforge.board import load_board
    from msiforge.errors import EnvironmentProblem
    from msiforge.vmtests import newer_qemu

    def missing(arch):
        raise EnvironmentProblem("bookworm-backports has no qemu-system-x86: the newer QEMU cannot be fetched")

    monkeypatch.setattr(newer_qemu, "binary", missing)
    qemu, icount, why = plan._newer_qemu_for_icount(
        load_board(None), None, tmp_path, "-icount probe: init not reached within 15 s, using real-time clocks")
    assert (qemu.value, icount) == ("", False)
    assert why == ("-icount probe: init not reached within 15 s (no newer QEMU: bookworm-backports has no "
                   "qemu-system-x86: the newer QEMU cannot be fetched), using real-time clocks")
