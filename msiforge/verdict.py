"""Verdicts: one type, decided in one place, from what a boot left behind.

The console (vmtests/console.py) only records: the log, and the run's
:class:`Events` (did the guest's script start, how did the run end: the guest
said it was done, QEMU exited, a timeout; when each KTAP step arrived).  The
build stage records a failed build the same way.  :func:`decide` turns the
log, the events and the guest's KTAP into one :class:`Verdict` per kernel and
per scenario.  It does no I/O besides reading what it is given, so every
verdict can be re-derived offline from a saved run directory
(``msiforge parse``), and the verdict tests need no boot.

Each verdict carries its severity (which one wins when several apply), its
`git bisect run` exit code and how JUnit reports it.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .vmtests import ktap

#: `git bisect run` exit codes: good, bad, and "cannot test this commit".
GOOD, BAD, SKIP = 0, 1, 125

#: The guest script's first and last console lines.
START = "msiforge-guest: start"
DONE = "msiforge-guest: done"


class Verdict(enum.StrEnum):
    """What one kernel (or one scenario on it) came to.  The string is the JSON/KTAP name."""

    def __new__(cls, value: str, rank: int, bisect_code: int, junit: str | None, kcidb: str,
                directive: str, meaning: str):
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.rank = rank  # lower is more severe: it wins over the others
        obj.bisect_code = bisect_code
        obj.junit = junit  # JUnit element: failure (the code is wrong), error (it could not be tested), None
        obj.kcidb = kcidb  # a scenario's KCIDB status (kcidb.py: what a boot's own test gets)
        obj.directive = directive  # the KTAP directive of its result line ("" for plain ok / not ok)
        obj.meaning = meaning
        return obj

    # The code is wrong: JUnit failure, KCIDB FAIL, `git bisect run` bad.  The harness could
    # not test it: JUnit error, KCIDB MISS (the scenario never ran), KTAP ERROR, skip (125).
    PANIC = "panic", 0, BAD, "failure", "FAIL", "", "the kernel panicked"
    OOPS = "oops", 1, BAD, "failure", "FAIL", "", "the kernel oopsed"
    # The reports of a debug kernel (source:...+debug) each name their own bug class.
    KASAN = "kasan", 2, BAD, "failure", "FAIL", "", "KASAN found a bad memory access"
    ATOMIC_SLEEP = "atomic-sleep", 3, BAD, "failure", "FAIL", "", \
        "a function that may sleep was called in atomic context"
    BUG = "bug", 4, BAD, "failure", "FAIL", "", "the kernel reported a BUG"
    LOCKDEP = "lockdep", 5, BAD, "failure", "FAIL", "", "lockdep found a locking (or RCU) error"
    KMEMLEAK = "kmemleak", 6, BAD, "failure", "FAIL", "", "kmemleak found an object of msiforge's modules leaked"
    WARN = "warn", 7, BAD, "failure", "FAIL", "", "the kernel WARNed"
    CALL_TRACE = "call-trace", 8, BAD, "failure", "FAIL", "", "the kernel printed a call trace"
    VM_CRASHED = "vm-crashed", 9, SKIP, "error", "MISS", "ERROR", "QEMU exited before the guest was done"
    BOOT_TIMEOUT = "boot-timeout", 10, SKIP, "error", "MISS", "ERROR", "the guest's script never started"
    SCENARIO_TIMEOUT = "scenario-timeout", 11, BAD, "failure", "FAIL", "TIMEOUT", \
        "the guest's script did not finish in time"
    BUILD_FAILED = "build-failed", 12, SKIP, "error", "MISS", "ERROR", "the modules did not build (W=1)"
    LOAD_FAILED = "load-failed", 13, BAD, "failure", "FAIL", "", "a driver did not load or bind its device"
    FAIL = "fail", 14, BAD, "failure", "FAIL", "", "a scenario's check failed"
    MISSING = "missing", 15, BAD, "failure", "FAIL", "", "the guest finished without reporting the scenario"
    PASS = "pass", 16, GOOD, None, "PASS", "", "every check passed"

    @property
    def passed(self) -> bool:
        return self is Verdict.PASS

    @property
    def cannot_say(self) -> bool:
        """The harness could not test the code (a bisect skips it; it is not cached as a fact)."""
        return self.bisect_code == SKIP


#: Kernel reports that fail a run, searched in each whole line of the log.  A line may
#: match several (a KASAN report is also a BUG line): the most severe verdict wins.
FAULTS: list[tuple[Verdict, re.Pattern]] = [
    (Verdict.PANIC, re.compile(r"Kernel panic - not syncing[^\r\n]*")),
    (Verdict.OOPS, re.compile(r"(?:Oops: [^\r\n]*|\bOops\b[^\r\n]*)")),
    (Verdict.KASAN, re.compile(r"BUG: KASAN: [^\r\n]*")),
    (Verdict.ATOMIC_SLEEP, re.compile(r"BUG: sleeping function called from invalid context[^\r\n]*")),
    (Verdict.BUG, re.compile(r"\bBUG: [^\r\n]*")),
    # lockdep's and PROVE_RCU's reports (kernel/locking/lockdep.c, kernel/rcu/update.c).
    (Verdict.LOCKDEP, re.compile(
        r"WARNING: (?:possible circular locking dependency detected"
        r"|possible recursive locking detected|inconsistent lock state|suspicious RCU usage"
        r"|bad unlock balance detected|possible irq lock inversion dependency detected"
        r"|\S+-safe -> \S+-unsafe lock order detected|held lock freed"
        r"|lock held when returning to user space|lock held at task exit time"
        r"|Nested lock was not taken)[^\r\n]*")),
    # The churn scenario prints each unreferenced object of msiforge's modules that
    # kmemleak found (kmemleak itself lists them only in debugfs).
    (Verdict.KMEMLEAK, re.compile(r"unreferenced object 0x[0-9a-f]+ \(size \d+\)[^\r\n]*")),
    (Verdict.WARN, re.compile(r"WARNING: [^\r\n]*")),
    (Verdict.CALL_TRACE, re.compile(r"Call Trace:")),
]

#: Faults that only a debug kernel reports (the fault module's triggers for them).
DEBUG_FAULTS = {"lockdep": Verdict.LOCKDEP, "kasan": Verdict.KASAN, "atomic-sleep": Verdict.ATOMIC_SLEEP}


@dataclass
class Events:
    """What the transport saw, and when: written beside the console log as events.json.

    ``ending`` is ``done`` (the guest printed DONE), ``exited`` (QEMU exited
    first, ``exit_status``), ``timeout`` (in the boot phase if the script never
    ``started``, else in the scenario phase), ``stalled`` (the kernel reported
    a stall after an oops or a BUG: the run was ended there, ``stall``) or
    ``build-failed`` (nothing was booted; ``build_error`` says why).
    """

    ending: str
    scenarios: list[str]
    started: bool = False
    exit_status: int | str | None = None
    boot_timeout: float = 0.0
    scenario_timeout: float = 0.0
    boot_seconds: float | None = None
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)
    build_error: str = ""
    #: The mean CPU share the host gave the guest (timeouts are charged by it: vmtests/cpushare.py).
    cpu_share: float | None = None
    #: How the guest started (vmtests/snapshot.py): ``cold`` (booted), ``saved`` (booted, and saved as the
    #: warm snapshot at its ready point on the way) or ``resumed`` (from that snapshot).
    start: str = "cold"
    #: A warm start's steps, seconds from QEMU's start: state loaded (resumed), saved (saved), guest
    #: continued, payload acknowledged (vmtests/snapshot.py).
    warm_seconds: dict[str, float] = field(default_factory=dict)
    #: The stall report that ended a wedged guest's run (ending ``stalled``).
    stall: str = ""

    ENDINGS = ("done", "exited", "timeout", "stalled", "build-failed")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Events":
        names = set(cls.__dataclass_fields__)
        ev = cls(**{k: v for k, v in data.items() if k in names})
        if ev.ending not in cls.ENDINGS:
            raise ValueError(f"ending {ev.ending!r}: not one of {', '.join(cls.ENDINGS)}")
        return ev

    @classmethod
    def load(cls, path: Path) -> "Events":
        return cls.from_json(json.loads(path.read_text()))


@dataclass
class ScenarioResult:
    """One scenario on one kernel: pass, fail, or the verdict that prevented it."""

    name: str
    status: Verdict
    devices: dict[str, str] = field(default_factory=dict)
    diagnostics: list[str] = field(default_factory=list)
    seconds: float | None = None  # wall-clock, as the host saw the guest's result lines
    #: Per device, the interrupts its handler counted during the scenario (when the guest said).
    interrupts: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == Verdict.PASS


@dataclass
class Decision:
    """One kernel's verdict, why, and each scenario's."""

    verdict: Verdict
    detail: str
    scenarios: list[ScenarioResult]


def faults(lines: list[str]) -> list[tuple[Verdict, str]]:
    """Every kernel report in ``lines``: (verdict, the reporting text), in order."""
    found = []
    for line in lines:
        for verdict, pattern in FAULTS:
            if m := pattern.search(line):
                found.append((verdict, m.group(0).strip()))
    return found


def _ending(events: Events) -> tuple[Verdict | None, str]:
    """The verdict of how the run ended, if it ended early, and its detail."""
    if events.ending == "exited":
        return Verdict.VM_CRASHED, f"QEMU exited (status {events.exit_status})"
    # A loaded host stretched the timeouts: say by how much.
    loaded = (f" (at a {events.cpu_share:.0%} CPU share: the run took {events.seconds:.0f} s)"
              if events.cpu_share is not None and events.cpu_share < 0.9 else "")
    if events.ending == "stalled":
        # A wedged guest is a hang, ended at the kernel's report of it rather than at the timeout.
        kind = Verdict.SCENARIO_TIMEOUT if events.started else Verdict.BOOT_TIMEOUT
        return kind, f"the kernel reported a stall after its report ({events.stall}): the run was ended there"
    if events.ending == "timeout" and not events.started:
        return Verdict.BOOT_TIMEOUT, f"no '{START}' within {events.boot_timeout:g} s{loaded}"
    if events.ending == "timeout":
        return Verdict.SCENARIO_TIMEOUT, f"guest script not done within {events.scenario_timeout:g} s{loaded}"
    return None, ""


def decide(lines: list[str], events: Events) -> Decision:
    """The verdicts of one boot: from its console ``lines``, its ``events`` and the KTAP in the lines.

    Precedence: a build failure is all there is; else the worst kernel report
    (panic, oops, KASAN, sleeping in atomic context, BUG, lockdep, kmemleak,
    WARN, call trace) wins over how the run ended (QEMU
    exited, a timeout; kept in the detail), which wins over a driver that did
    not load, over a failed check, over a scenario never reported.
    """
    if events.ending == "build-failed":
        return Decision(Verdict.BUILD_FAILED, events.build_error,
                        [ScenarioResult(s, Verdict.BUILD_FAILED) for s in events.scenarios])
    ended, detail = _ending(events)
    reports = faults(lines)
    verdict = ended
    if reports:
        worst = min(reports, key=lambda r: r[0].rank)
        # A hang after the report stays visible in the detail.
        then = f"; then {ended}: {detail}" if ended in (Verdict.BOOT_TIMEOUT, Verdict.SCENARIO_TIMEOUT) else ""
        verdict, detail = worst[0], worst[1] + then
    root = ktap.parse(lines)
    scenarios = _scenarios(root, events, verdict)
    if verdict is None:
        if any(s.status is Verdict.LOAD_FAILED for s in scenarios):
            verdict, detail = Verdict.LOAD_FAILED, "; ".join(scenarios[0].diagnostics[:2])
        elif all(s.passed for s in scenarios):
            verdict = Verdict.PASS
        else:
            verdict = Verdict.FAIL
    return Decision(verdict, detail, scenarios)


#: The guest's count of a step's interrupts on one device (run.sh.j2: "DEV: interrupts: N").
_INTERRUPTS = re.compile(r"(\S+): interrupts: (\d+)")


def _scenarios(root: ktap.TestResult, events: Events, boot: Verdict | None) -> list[ScenarioResult]:
    """One verdict per scenario asked for, from the guest's KTAP tree."""
    by_name = {t.name: t for t in root.subtests}
    load = by_name.get("load")
    out = []
    for name in events.scenarios:
        test = by_name.get(name)
        subs = test.subtests if test else []
        diags, interrupts = [], {}
        for sub in subs:
            for d in sub.diagnostics:
                if m := _INTERRUPTS.fullmatch(d):
                    interrupts[m.group(1)] = int(m.group(2))
                else:
                    diags.append(d)
        devices = {sub.name: sub.status for sub in subs}
        if load is not None and load.status == "not ok":
            verdict = Verdict.LOAD_FAILED
            diags = [d for sub in load.subtests for d in sub.diagnostics]
        elif test is None or test.status == "missing":
            verdict = boot or Verdict.MISSING
        elif test.ok:
            verdict = Verdict.PASS
        else:
            verdict = Verdict.FAIL
        out.append(ScenarioResult(name, verdict, devices, diags, events.step_seconds.get(name), interrupts))
    return out


def read_log(path: Path) -> list[str]:
    """A console log's lines (the pty turns the guest's \\r\\n into \\r\\r\\n: split on \\n only)."""
    text = path.read_bytes().decode("utf-8", errors="replace") if path.exists() else ""
    return [line.rstrip("\r") for line in text.split("\n")]
