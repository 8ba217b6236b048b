"""Timeouts charged by the CPU share a guest got (vmtests/cpushare.py).

The arithmetic runs on given samples; the /proc reading and the console's
use of it run for real (a busy grandchild of the guest's process, and a busy
"guest" beside hogs; tests/test_vm.py boots real guests beside a hog).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from msiforge import verdict
from msiforge.vmtests import console, cpushare
from msiforge.vmtests.cpushare import GuestClock, Sample


def _clock(samples: list[Sample], wanted: int, ncpu: int = 2) -> GuestClock:
    it = iter(samples)
    return GuestClock(1, wanted, ncpu=ncpu, sample=lambda pid: next(it))


def test_an_idle_host_charges_every_second():
    c = _clock([Sample(0, 0, 0), Sample(10, 20, 20)], wanted=2)  # the guest used both CPUs
    assert c.now() == 10 and c.mean_share() == 1.0


def test_one_busy_core_of_two_charges_a_two_cpu_guest_half():
    c = _clock([Sample(0, 0, 0), Sample(10, 20, 10)], wanted=2)  # others used one CPU for 10 s
    assert c.now() == pytest.approx(5) and c.share == pytest.approx(0.5)
    # A one-CPU guest still had a whole CPU to itself.
    c = _clock([Sample(0, 0, 0), Sample(10, 20, 10)], wanted=1)
    assert c.now() == pytest.approx(10)


def test_a_saturated_host_stretches_a_timeout_at_most_four_times():
    c = _clock([Sample(0, 0, 0), Sample(10, 20, 0)], wanted=2)  # others took everything
    assert c.now() == pytest.approx(10 * cpushare.MIN_SHARE)


def test_shares_are_integrated_over_the_samples():
    c = _clock([Sample(0, 0, 0), Sample(4, 8, 8), Sample(8, 16, 12)], wanted=2)
    assert c.now() == pytest.approx(4)
    assert c.now() == pytest.approx(4 + 4 * 0.5)
    assert c.wall() == 8 and c.mean_share() == pytest.approx(0.75)
    # wanted is capped at the host's CPUs.
    assert _clock([Sample(0, 0, 0)], wanted=8).wanted == 2


def test_read_sample_counts_the_guest_tree_from_proc():
    # A busy grandchild (as virtme-ng's QEMU is) counts as the guest's.
    proc = subprocess.Popen(["sh", "-c", f"{sys.executable} -c 'while True: pass' & wait"], start_new_session=True)
    try:
        time.sleep(0.2)
        a = cpushare.read_sample(proc.pid)
        time.sleep(1.0)
        b = cpushare.read_sample(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert b.guest - a.guest > 0.5  # about one CPU for a second
    assert b.busy - a.busy >= b.guest - a.guest - 0.05


def test_a_stretched_timeout_says_so():
    ev = verdict.Events(ending="timeout", scenarios=["deliver"], boot_timeout=2, scenario_timeout=2,
                        seconds=3.1, cpu_share=0.61)
    assert verdict.decide([], ev).detail == "no 'msiforge-guest: start' within 2 s (at a 61% CPU share: the run took 3 s)"


def test_a_loaded_host_stretches_the_console_timeout(tmp_path):
    """A busy "guest" that wants one CPU, beside two hogs per CPU: the boot timeout takes longer.

    Each hog runs in a session of its own, as the jobs of a shared runner do.
    (With the scheduler's autogroups, hogs that share one session share one
    CPU's worth among them, whatever their number: the guest, in its own
    session as console.spawn starts it, would then get a whole CPU.)
    """
    ncpu = os.cpu_count() or 1
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
            for _ in range(2 * ncpu)]
    guest = f"exec {sys.executable} -c 'while True: pass'"  # busy, never starts the script
    try:
        ev = console.run(["sh", "-c", guest], tmp_path / "console.log", 2, 2, ["deliver"])
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert (ev.ending, ev.started) == ("timeout", False)
    # About 1/(2 * ncpu + 1) of the CPUs each: the guest's share of the one CPU it wants is well below 1.
    assert ev.cpu_share < 0.8 and ev.seconds > 2 / 0.8, (ev.cpu_share, ev.seconds)
    d = verdict.decide([], ev)
    assert d.verdict == "boot-timeout"
    assert d.detail.startswith("no 'msiforge-guest: start' within 2 s (at a ") and "CPU share: the run took" in d.detail
