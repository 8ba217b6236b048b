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
