"""The console watcher on a real pty (a shell stands in for the guest): patterns wait for the line end."""

from __future__ import annotations

from msiforge.vmtests import console


def _run(tmp_path, script: str, timeout: float = 20) -> console.Console:
    return console.run(["sh", "-c", script], tmp_path / "console.log", timeout, timeout)


def test_a_fault_line_is_captured_whole_even_when_it_arrives_in_pieces(tmp_path):
    boot = _run(tmp_path, "echo 'msiforge-guest: start'; printf 'WARNING: CPU: 0 PID: 1 at drivers/x.c'; "
                          "sleep 0.5; printf ':12 probe+0x1/0x2\\n'; echo 'msiforge-guest: done'")
    assert boot.verdict == "warn"
    assert boot.detail == "WARNING: CPU: 0 PID: 1 at drivers/x.c:12 probe+0x1/0x2"


def test_a_step_name_is_whole_when_it_arrives_in_pieces(tmp_path):
    boot = _run(tmp_path, "echo 'msiforge-guest: start'; echo 'KTAP version 1'; printf 'ok 1 deli'; sleep 0.5; "
                          "printf 'ver\\n'; echo 'msiforge-guest: done'")
    assert boot.verdict == "completed"
    assert list(boot.step_seconds) == ["deliver"]


def test_every_capturing_console_pattern_ends_at_the_line_end():
    for name, pattern in console.FAULTS:
        if "[^" in pattern:  # captures the rest of the line
            assert pattern.endswith(console.EOL), name
    assert console.STEP.endswith(console.EOL)


def test_a_guest_that_exits_early_is_vm_crashed(tmp_path):
    boot = _run(tmp_path, "echo 'msiforge-guest: start'; exit 3")
    assert (boot.verdict, boot.detail) == ("vm-crashed", "QEMU exited (status 3)")
    assert console._LIVE == set()
