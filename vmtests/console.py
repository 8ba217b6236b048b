"""Drive a guest over its serial console with pexpect, and record what happened.

The console is transport only: it keeps the whole console in a log file and
records the run's events (the guest's script started, the guest said it was
done, QEMU exited, a timeout in the boot or the scenario phase, when each
KTAP step arrived) as :class:`msiforge.verdict.Events`.  It never hangs: the
boot and scenario timeouts bound every wait.  What the log and events mean
(panic, oops, WARN, ..., pass) is decided elsewhere, by
:func:`msiforge.verdict.decide`, which also works on a saved log.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import threading
import time
from pathlib import Path

import pexpect

from ..verdict import DONE, START, Events
from . import cpushare
from .initramfs import READY

__all__ = ["START", "DONE", "EOL", "STEP", "run", "spawn", "kill_all", "die_with_parent"]

#: The end of a console line.  A pattern that captures text ends with it, so pexpect
#: never matches a line of which only a part has arrived (``ok 1 deli``).
EOL = r"(?=\r*\n)"
#: A top-level KTAP result line ("ok 2 deliver"), timed by the host as it arrives.
STEP = r"\n(?:not )?ok \d+ ([a-z][a-z-]*)" + EOL

#: A kernel report after which a guest rarely recovers (the first line of an oops, a BUG, a panic) ...
REPORT = r"(?:Oops: |\bBUG: |Kernel panic - not syncing)"
#: ... and the kernel saying a CPU or a task is stuck.  After a report, a stall ends the run
#: at once: the verdict is decided, and the guest will not get done (an oops in insmod that
#: left a lock or a list behind spins there until the scenario timeout).  A stall alone does
#: not end it (a loaded host can make a real-time-clock guest report one and recover).
STALL = (r"(?:watchdog: BUG: soft lockup|rcu: INFO: rcu_\w+ (?:self-)?detected stalls?"
         r"|INFO: task \S+ blocked for more than)[^\r\n]*" + EOL)

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


def run(argv: list[str], log: Path, boot_timeout: float, scenario_timeout: float,
        scenarios: list[str], env: dict[str, str] | None = None, cpus: int = 1,
        handover=None, log_prefix: str = "") -> Events:
    """Boot with ``argv``, log the console to ``log`` and record the events until the guest is done.

    The boot phase lasts until the guest's script starts (``boot_timeout``),
    the scenario phase until it is done (``scenario_timeout``), both in
    seconds charged by the CPU share the host gave the guest's ``cpus``
    vCPUs (vmtests/cpushare.py): a loaded host stretches them, a hung guest
    still times out.  A guest that panics powers off (panic=-1, -no-reboot):
    QEMU exits and that ends the run; one that reports a stall after an oops
    or a BUG is wedged, and that ends it too (ending ``stalled``).

    ``handover`` (vmtests/snapshot.py) starts a warm guest inside the boot
    phase: a Resume at once (it continues a restored VM and hands it its
    payload), a SaveFirst when the booting guest says it is ready (it saves
    the VM, then hands over); ``log_prefix`` (a snapshot's boot log) starts
    the log, so that a resumed guest's log reads as a cold boot's.
    """
    start = time.monotonic()
    ev = Events(ending="timeout", scenarios=list(scenarios), boot_timeout=boot_timeout,
                scenario_timeout=scenario_timeout)
    with open(log, "w", encoding="utf-8", errors="replace") as logfh:
        logfh.write(log_prefix)
        child = spawn(argv, encoding="utf-8", codec_errors="replace",
                      timeout=None, echo=False, dimensions=(50, 250), env=env)
        child.logfile_read = logfh  # what the guest said; not what is sent to it (a warm guest's payload)
        clock = cpushare.GuestClock(child.pid, cpus)
        patterns = [re.escape(START), re.escape(DONE), pexpect.EOF, pexpect.TIMEOUT, STEP, STALL, REPORT]
        try:
            fault_idx = -1
            phase_start, limit = 0.0, boot_timeout
            if handover is not None:
                ev.start = handover.start
                # The guest waits, paused, for its payload's modules to build: not guest time.
                handover.clock = clock
                if handover.at_ready:
                    patterns.append(re.escape(READY))
                else:
                    handover(child)
                    phase_start += handover.waited
                if handover.fault_pattern:
                    fault_idx = len(patterns)
                    patterns.append(handover.fault_pattern)
            reported = False
            last = start
            while (remaining := limit - (clock.now() - phase_start)) > 0:
                idx = child.expect(patterns, timeout=min(cpushare.INTERVAL, max(0.05, remaining)))
                now = time.monotonic()
                if idx == 3:  # no line yet: charge the time, wait on
                    continue
                if idx == fault_idx:  # the snapshot's fault, not the guest's verdict: raises
                    handover.fault(child.after)
                if idx == 6:
                    reported = True
                    continue
                if idx == 7:  # a booting warm guest is ready: saved, then handed its payload
                    logfh.flush()
                    handover(child, log.read_text(encoding="utf-8", errors="replace"))
                    phase_start += handover.waited
                    continue
                if idx == 5:
                    if reported:
                        ev.ending, ev.stall = "stalled", child.match.group(0).strip()
                        break
                    continue
                if idx == 4:  # a top-level KTAP result: time the step
                    ev.step_seconds[child.match.group(1)] = round(now - last, 3)
                    last = now
                elif idx == 0:  # the guest's init is running the script
                    ev.started = True
                    ev.boot_seconds = now - start
                    last = now
                    phase_start, limit = clock.now(), scenario_timeout
                elif idx == 1:
                    ev.ending = "done"
                    _wait_exit(child, 15)
                    break
                elif idx == 2:  # EOF: QEMU exited before the guest said it was done
                    ev.ending = "exited"
                    child.close()
                    ev.exit_status = child.exitstatus if child.exitstatus is not None else child.signalstatus
                    break
            # else: a timeout; the phase tells which
        finally:
            ev.cpu_share = round(clock.mean_share(), 3)
            if handover is not None:
                ev.warm_seconds = dict(handover.seconds)
            if child.isalive():
                child.terminate(force=True)
            # QEMU is gone (reaped above, or killed): closing need not sleep for it (pexpect waits 0.1 s).
            child.ptyproc.delayafterclose = 0
            child.close()
            forget(child)
    ev.seconds = time.monotonic() - start
    return ev


def _wait_exit(child: pexpect.spawn, timeout: float) -> None:
    """Wait for QEMU to close the console and exit (the guest powered off)."""
    end = time.monotonic() + timeout
    try:
        child.expect(pexpect.EOF, timeout=timeout)
    except pexpect.TIMEOUT:
        return
    while child.isalive() and time.monotonic() < end:
        time.sleep(0.005)
