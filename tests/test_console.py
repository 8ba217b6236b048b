"""The console recorder on a real pty (a shell stands in for the guest): events, timing, the log."""

from __future__ import annotations

from msiforge import verdict
from msiforge.vmtests import console

SCENARIOS = ["deliver"]


def _run(tmp_path, script: str, timeout: float = 20) -> verdict.Events:
    return console.run(["sh", "-c", script], tmp_path / "console.log", timeout, timeout, SCENARIOS)


def _decide(tmp_path, events: verdict.Events) -> verdict.Decision:
    return verdict.decide(verdict.read_log(tmp_path / "console.log"), events)


def test_a_fault_line_arriving_in_pieces_is_logged_and_decided_whole(tmp_path):
    ev = _run(tmp_path, "echo 'msiforge-guest: start'; printf 'WARNING: CPU: 0 PID: 1 at drivers/x.c'; "
                        "sleep 0.5; printf ':12 probe+0x1/0x2\\n'; echo 'msiforge-guest: done'")
    assert (ev.ending, ev.started) == ("done", True)
    d = _decide(tmp_path, ev)
    assert (d.verdict, d.detail) == ("warn", "WARNING: CPU: 0 PID: 1 at drivers/x.c:12 probe+0x1/0x2")


def test_a_step_name_is_whole_when_it_arrives_in_pieces(tmp_path):
    ev = _run(tmp_path, "echo 'msiforge-guest: start'; echo 'KTAP version 1'; echo '1..1'; printf 'ok 1 deli';"
                        " sleep 0.5; printf 'ver\\n'; echo 'msiforge-guest: done'")
    assert ev.ending == "done"
    assert list(ev.step_seconds) == ["deliver"]
    assert _decide(tmp_path, ev).verdict == "pass"


def test_the_step_pattern_waits_for_the_line_end():
    assert console.STEP.endswith(console.EOL)


def test_a_guest_that_exits_early_is_vm_crashed(tmp_path):
    ev = _run(tmp_path, "echo 'msiforge-guest: start'; exit 3")
    assert (ev.ending, ev.exit_status) == ("exited", 3)
    d = _decide(tmp_path, ev)
    assert (d.verdict, d.detail) == ("vm-crashed", "QEMU exited (status 3)")
    assert console._LIVE == set()


def test_silence_is_a_boot_timeout_and_a_stuck_script_a_scenario_timeout(tmp_path):
    ev = _run(tmp_path, "sleep 30", timeout=1)
    assert (ev.ending, ev.started) == ("timeout", False)
    assert _decide(tmp_path, ev).verdict == "boot-timeout"
    ev = _run(tmp_path, "echo 'msiforge-guest: start'; sleep 30", timeout=1)
    assert (ev.ending, ev.started) == ("timeout", True)
    assert ev.seconds < 5
    assert _decide(tmp_path, ev).verdict == "scenario-timeout"


# The console of a real guest that oopsed in insmod and then spun (Debian 6.12, --guest-fault oops).
_OOPS_THEN_STALL = ("echo '[    3.37] BUG: unable to handle page fault for address: fffffffffffffff9'; "
                    "echo '[    3.37] Oops: Oops: 0000 [#2] PREEMPT SMP NOPTI'; "
                    "echo '[   24.41] rcu: INFO: rcu_preempt self-detected stall on CPU'; sleep 60")


def test_a_stall_after_an_oops_ends_the_run_at_once(tmp_path):
    """A wedged guest: the run ends at the stall report, not at the scenario timeout; the oops is the verdict."""
    import time

    start = time.monotonic()
    ev = _run(tmp_path, "echo 'msiforge-guest: start'; " + _OOPS_THEN_STALL, timeout=30)
    assert time.monotonic() - start < 10
    assert (ev.ending, ev.started) == ("stalled", True)
    assert ev.stall == "[   24.41] rcu: INFO: rcu_preempt self-detected stall on CPU"[11:]
    d = _decide(tmp_path, ev)
    assert d.verdict == "oops"
    assert d.detail.startswith("Oops: Oops: 0000 [#2] PREEMPT SMP NOPTI; then scenario-timeout: the kernel "
                               "reported a stall after its report (rcu: INFO: rcu_preempt self-detected stall")
    assert d.scenarios[0].status == "oops"


def test_a_stall_alone_does_not_end_the_run(tmp_path):
    """A guest on a loaded host may report a soft lockup and recover: the run goes on to its end."""
    ev = _run(tmp_path, "echo 'msiforge-guest: start'; "
                        "echo '[   30.1] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [sh:1]'; "
                        "sleep 0.5; echo 'msiforge-guest: done'")
    assert ev.ending == "done"
    assert _decide(tmp_path, ev).verdict == "bug"  # the report itself still counts
