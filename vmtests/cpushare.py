"""Guest time that a loaded host does not eat: timeouts charged by the CPU share a guest got.

A board's ``boot_timeout`` and ``scenario_timeout`` are seconds of a guest
running on an otherwise idle host.  On a shared machine (a CI runner, a
build beside the run, another kernel of the same matrix) TCG runs the guest
slower, and a wall-clock timeout would call a slow guest a hung one.  So the
console charges a guest only for the CPU the host could give it: each wall
second counts ``share`` seconds, where ``share`` is the part of the CPUs the
guest wants (one per vCPU, at most the host's) that other processes left
free, measured from ``/proc/stat`` minus the guest's own process tree.  An
idle host charges every second; one busy core of two charges a two-vCPU
guest half of each.  A hung guest still times out, only later, by at most
``1 / MIN_SHARE``.

What a guest gets depends on the scheduler, and the share measures what it
got, not what it would get: with autogroups (Debian's default) QEMU runs in
a session of its own, so busy processes that share one session take about
one CPU among them, however many they are.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: The least a second counts: a fully loaded host stretches a timeout at most 4 times.
MIN_SHARE = 0.25
#: How often the console measures the share again while it waits (seconds of wall time).
INTERVAL = 0.5


@dataclass(frozen=True)
class Sample:
    """CPU time (seconds) used since boot: by everything, and by the guest's processes."""

    wall: float
    busy: float
    guest: float


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _descendants(root: int, proc: Path) -> set[int]:
    """``root`` and every process below it (virtme-ng's QEMU is a grandchild)."""
    parents: dict[int, list[int]] = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(parents.get(pid, []))
    return out


def read_sample(pid: int, proc: Path = Path("/proc")) -> Sample:
    """The host's busy CPU time and the guest tree's (``pid`` and below), from /proc."""
    tck = _clock_ticks()
    fields = (proc / "stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    busy = (user + nice + system + irq + softirq + steal) / tck
    guest = 0
    for p in _descendants(pid, proc):
        try:
            stat = (proc / str(p) / "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        guest += int(rest[11]) + int(rest[12])  # utime, stime
    return Sample(time.monotonic(), busy, guest / tck)


class GuestClock:
    """Seconds charged to a guest since it started: wall time weighted by its CPU share.

    ``wanted`` is how many CPUs the guest can use (its vCPUs, at most the
    host's).  ``sample`` reads the host (injected by the tests).
    """

    def __init__(self, pid: int, wanted: int, ncpu: int | None = None,
                 sample: Callable[[int], Sample] = read_sample):
        self.ncpu = ncpu or os.cpu_count() or 1
        self.wanted = max(1, min(wanted, self.ncpu))
        self._sample = sample
        self._pid = pid
        self._last = sample(pid)
        self.start = self._last.wall
        self.charged = 0.0
        self.share = 1.0

    def now(self) -> float:
        """The charged seconds so far (the share measured since the last call)."""
        s = self._sample(self._pid)
        dt = s.wall - self._last.wall
        if dt <= 0:
            return self.charged
        others = max(0.0, (s.busy - self._last.busy) - (s.guest - self._last.guest)) / dt
        self.share = min(1.0, max(MIN_SHARE, (self.ncpu - others) / self.wanted))
        self.charged += dt * self.share
        self._last = s
        return self.charged

    def wall(self) -> float:
        return self._last.wall - self.start

    def mean_share(self) -> float:
        wall = self.wall()
        return self.charged / wall if wall > 0 else 1.0
