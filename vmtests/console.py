"""Drive a guest over its serial console with pexpect and name what happened.

Every outcome is a verdict, never a hang: the guest finishing its script,
a kernel panic, an oops, a BUG, a WARN, a call trace, silence until the boot
timeout, a stuck script until the scenario timeout, or QEMU dying.  The full
console is kept in a log file.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pexpect

START = "msiforge-guest: start"
DONE = "msiforge-guest: done"

#: The end of a console line.  A pattern that captures text ends with it, so pexpect
#: never matches a line of which only a part has arrived (``smoke: result p``).
EOL = r"(?=\r*\n)"
#: Console patterns that make a run fail, most severe first.
FAULTS: list[tuple[str, str]] = [
    ("panic", r"Kernel panic - not syncing[^\r\n]*" + EOL),
    ("oops", r"(?:Oops: [^\r\n]*|\bOops\b[^\r\n]*)" + EOL),
    ("bug", r"\bBUG: [^\r\n]*" + EOL),
    ("warn", r"WARNING: [^\r\n]*" + EOL),
    ("call-trace", r"Call Trace:"),
]
SEVERITY = {name: i for i, (name, _) in enumerate(FAULTS)}
#: A top-level KTAP result line ("ok 2 deliver"), timed by the host as it arrives.
STEP = r"\n(?:not )?ok \d+ ([a-z][a-z-]*)" + EOL

#: Guests (QEMU, vng) running now: killed at once when msiforge is interrupted or terminated.
_LIVE: set[pexpect.spawn] = set()
_LIVE_LOCK = threading.Lock()
#: Set by kill_all(): msiforge is stopping, so no new guest may start (queued kernels of a matrix).
_STOPPING = threading.Event()
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the forked child before exec: SIGKILL this process when msiforge dies, even by SIGKILL.

    The kernel sends the signal when the *thread* that forked exits; guests are
    spawned and waited for by the same thread, so that is when msiforge is done
    with them anyway.
    """
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # msiforge died before prctl took effect
        os._exit(1)


def spawn(argv: list[str], **kw) -> pexpect.spawn:
    """pexpect.spawn of a guest that dies with msiforge and is killed by :func:`kill_all`."""
    with _LIVE_LOCK:
        if _STOPPING.is_set():
            raise KeyboardInterrupt("msiforge is stopping: no new guest")
        child = pexpect.spawn(argv[0], argv[1:], preexec_fn=die_with_parent, **kw)
        _LIVE.add(child)
    return child


def forget(child: pexpect.spawn) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(child)


def kill_all() -> int:
    """SIGKILL every running guest (their consoles then see EOF) and start no more; return how many."""
    with _LIVE_LOCK:
        _STOPPING.set()
        children = list(_LIVE)
    for child in children:
        # The pty made the guest a session and process-group leader: the group holds what it
        # started itself (virtme-ng's QEMU), which its parent-death signal cannot reach.
        for kill in (os.killpg, os.kill):
            try:
                kill(child.pid, signal.SIGKILL)
                break
            except (ProcessLookupError, PermissionError, TypeError):
                continue
    return len(children)


@dataclass
class Console:
    """What one boot produced."""

    verdict: str  # completed | panic | oops | bug | warn | call-trace | boot-timeout | scenario-timeout | vm-crashed
    detail: str
    log: Path
    boot_seconds: float | None
    seconds: float
    #: Wall-clock seconds of each top-level KTAP step (load, then each scenario).
    step_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def lines(self) -> list[str]:
        # The pty turns the guest's \r\n into \r\r\n: split on \n only.
        text = self.log.read_bytes().decode("utf-8", errors="replace")
        return [line.rstrip("\r") for line in text.split("\n")]


def run(argv: list[str], log: Path, boot_timeout: float, scenario_timeout: float,
        env: dict[str, str] | None = None) -> Console:
    """Boot with ``argv`` and watch the console until the guest is done or a verdict is reached."""
    start = time.monotonic()
    faults: list[tuple[str, str]] = []
    steps: dict[str, float] = {}
    boot_seconds = None
    verdict, detail = "", ""
    with open(log, "w", encoding="utf-8", errors="replace") as logfh:
        child = spawn(argv, encoding="utf-8", codec_errors="replace",
                      timeout=None, logfile=logfh, echo=False, dimensions=(50, 250), env=env)
        try:
            patterns = [re.escape(START), re.escape(DONE)] + [p for _, p in FAULTS] + [pexpect.EOF, pexpect.TIMEOUT]
            patterns.append(STEP)
            n_faults = len(FAULTS)
            deadline = start + boot_timeout
            last = start
            while True:
                idx = child.expect(patterns, timeout=max(0.05, deadline - time.monotonic()))
                if idx == len(patterns) - 1:  # a top-level KTAP result: time the step
                    now = time.monotonic()
                    steps[child.match.group(1)] = round(now - last, 3)
                    last = now
                    continue
                if idx == 0:  # the guest's init is running the script
                    boot_seconds = time.monotonic() - start
                    last = time.monotonic()
                    deadline = time.monotonic() + scenario_timeout
                elif idx == 1:
                    verdict = "completed"
                    _wait_exit(child, 15)
                    break
                elif idx < 2 + n_faults:
                    name = FAULTS[idx - 2][0]
                    faults.append((name, child.after.strip() if isinstance(child.after, str) else name))
                    if name == "panic":
                        _wait_exit(child, 10)
                        break
                elif idx == 2 + n_faults:  # EOF: QEMU exited before the guest said it was done
                    verdict = "vm-crashed"
                    child.close()
                    detail = f"QEMU exited (status {child.exitstatus if child.exitstatus is not None else child.signalstatus})"
                    break
                else:
                    if boot_seconds is None:
                        verdict, detail = "boot-timeout", f"no '{START}' within {boot_timeout:g} s"
                    else:
                        verdict, detail = "scenario-timeout", f"guest script not done within {scenario_timeout:g} s"
                    break
        finally:
            if child.isalive():
                child.terminate(force=True)
            # QEMU is gone (reaped above, or killed): closing need not sleep for it (pexpect waits 0.1 s).
            child.ptyproc.delayafterclose = 0
            child.close()
            forget(child)
    if faults:
        worst = min(faults, key=lambda f: SEVERITY[f[0]])
        # A fault outranks how the run ended, except that a hang stays visible in the detail.
        detail = worst[1] + (f"; then {verdict}: {detail}" if verdict not in ("completed", "vm-crashed") else "")
        verdict = worst[0]
    return Console(verdict=verdict, detail=detail, log=log, boot_seconds=boot_seconds,
                   seconds=time.monotonic() - start, step_seconds=steps)


def _wait_exit(child: pexpect.spawn, timeout: float) -> None:
    """Wait for QEMU to close the console and exit (the guest powered off)."""
    end = time.monotonic() + timeout
    try:
        child.expect(pexpect.EOF, timeout=timeout)
    except pexpect.TIMEOUT:
        return
    while child.isalive() and time.monotonic() < end:
        time.sleep(0.005)
