"""Build the suite's source kernels in the background, on the CPU the tests leave idle.

Run by conftest.py at the start of a session whose selected tests carry
``@pytest.mark.source_kernels(...)``: ``python tests/prebuild.py LOG SPEC@ARCH ...``
builds each kernel in turn with ``msiforge kernels build`` (the same cached
build slots and locks the tests use: a test that needs a kernel this process
is building waits on the slot's lock, then reuses the result; one it has not
reached yet the test builds itself, and this process later finds it built).

It runs at the lowest priority Linux has: SCHED_IDLE (inherited by make and
the compilers), in a session of its own whose autogroup is set to nice 19.
With autogroups (Debian's default) nice alone only ranks processes inside one
session; each QEMU msiforge starts is a session of its own, so without the
autogroup's nice the build would take half of a busy CPU from a guest.
Each line of LOG is one kernel: its spec, how it ended, and the seconds it took.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1


def lowest_priority() -> None:
    """SCHED_IDLE for this process and its children; this session's autogroup at nice 19."""
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    autogroup = Path("/proc/self/autogroup")
    if autogroup.exists():
        autogroup.write_text("19")


def _stop(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.killpg(0, signal.SIGTERM)  # make and the compilers are in this process group
    sys.exit(128 + signum)


def main(log: Path, kernels: list[str]) -> int:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # pytest gone: stop
    signal.signal(signal.SIGTERM, _stop)
    lowest_priority()
    with log.open("a", buffering=1) as out:
        for item in kernels:
            spec, _, arch = item.partition("@")
            start = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "msiforge.cli", "kernels", "build", spec,
                                   "--arch", arch or "x86_64"], capture_output=True, text=True, check=False)
            last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            how = "ok" if proc.returncode == 0 else f"failed: {last}"
            out.write(f"{item}\t{how}\t{time.monotonic() - start:.0f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
