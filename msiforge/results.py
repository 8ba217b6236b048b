"""Run results and their JSON and JUnit XML forms (the verdicts themselves: msiforge/verdict.py)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .cache import atomic_write
from .verdict import ScenarioResult, Verdict

PASS = Verdict.PASS
FAIL = Verdict.FAIL

__all__ = ["PASS", "FAIL", "ScenarioResult", "KernelResult", "RunResult", "write_json", "write_junit",
           "write_ktap", "new_run_id"]


@dataclass
class KernelResult:
    """Everything one kernel's boot produced."""

    spec: str
    release: str
    verdict: Verdict
    detail: str = ""
    timing: str = ""
    boot_seconds: float | None = None
    seconds: float = 0.0
    console_log: str = ""
    ktap_log: str = ""
    scenarios: list[ScenarioResult] = field(default_factory=list)
    board: str = ""  # the board it ran (a merged run holds several)
    build_log: str = ""  # the modules' build log, when they did not build
    directory: str = ""  # its directory in the run directory
    run_id: str = ""  # the run that tested it, when it differs from the directory's (a merged shard)
    start: str = ""  # cold (booted), saved (booted, saving its warm snapshot) or resumed (from one)

    @property
    def passed(self) -> bool:
        return self.verdict == PASS and all(s.passed for s in self.scenarios)

    def verdict_of(self, scenario: str) -> Verdict:
        """One scenario's verdict: the kernel's when the boot itself failed (a panic, a hang), else its own."""
        if self.verdict not in (PASS, FAIL):
            return Verdict(self.verdict)
        return Verdict(next(s.status for s in self.scenarios if s.name == scenario))


def new_run_id() -> str:
    """A run's identity in its reports (KCIDB ids): its start time and 6 random hex digits."""
    import datetime
    import secrets

    return f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass
class RunResult:
    board: str
    run_dir: Path
    accel: str
    kernels: list[KernelResult] = field(default_factory=list)
    run_id: str = ""
    started: str = ""  # ISO 8601, UTC
    shard: str = ""  # "K/N" when the run was one slice of a matrix
    matrix: list[str] = field(default_factory=list)  # a shard's whole matrix: every kernel spec, in order
    merged_from: list[str] = field(default_factory=list)  # msiforge merge: the run directories it joined
    fault: str = ""  # --guest-fault: the misbehaviour injected to test msiforge itself

    @property
    def passed(self) -> bool:
        return bool(self.kernels) and all(k.passed for k in self.kernels)

    @property
    def scenario_names(self) -> list[str]:
        """Every scenario of the run, in order (a merged run's boards may run different ones)."""
        return list(dict.fromkeys(s.name for k in self.kernels for s in k.scenarios))

    @property
    def boards(self) -> list[str]:
        return list(dict.fromkeys(k.board or self.board for k in self.kernels)) or [self.board]

    def to_json(self) -> dict:
        return {
            "board": self.board,
            "accel": self.accel,
            "passed": self.passed,
            "run_id": self.run_id,
            "started": self.started,
            "shard": self.shard,
            "matrix": self.matrix,
            **({"merged_from": self.merged_from} if self.merged_from else {}),
            **({"fault": self.fault} if self.fault else {}),
            "kernels": [
                {
                    **({"dir": _relative(k.directory, self.run_dir)} if k.directory else {}),
                    "board": k.board or self.board,
                    **({"run_id": k.run_id} if k.run_id and k.run_id != self.run_id else {}),
                    "spec": k.spec, "release": k.release, "verdict": k.verdict, "detail": k.detail,
                    "passed": k.passed, "timing": k.timing, **({"start": k.start} if k.start else {}),
                    "boot_seconds": k.boot_seconds, "seconds": round(k.seconds, 2),
                    "console_log": k.console_log, "ktap_log": k.ktap_log, "build_log": k.build_log,
                    "scenarios": [{"name": s.name, "status": s.status, "seconds": s.seconds,
                                   "devices": s.devices, "diagnostics": s.diagnostics,
                                   "interrupts": s.interrupts} for s in k.scenarios],
                }
                for k in self.kernels
            ],
        }


def _relative(path: str, base: Path) -> str:
    import os

    return os.path.relpath(Path(path).resolve(), Path(base).resolve())


def write_json(result: RunResult, path: Path) -> None:
    atomic_write(path, json.dumps(result.to_json(), indent=2) + "\n")


def write_junit(result: RunResult, path: Path) -> None:
    """JUnit XML: one testsuite per kernel, one testcase per scenario.

    A scenario whose code is wrong is a ``failure``; one that could not be
    tested (the build failed, the guest never booted, QEMU died) is an ``error``.
    GitLab shows ``name@classname`` and drops duplicate pairs, so the
    classname says board and kernel: ``msiforge.<board>.<release>``.  The
    failure message is the verdict and its first diagnostics; the element's
    text, every diagnostic and the kernel's detail.
    """
    total = sum(len(k.scenarios) for k in result.kernels)
    kinds_all = [Verdict(s.status).junit for k in result.kernels for s in k.scenarios]
    suites = ET.Element("testsuites", name=f"msiforge {' '.join(result.boards)}", tests=str(total),
                        failures=str(kinds_all.count("failure")), errors=str(kinds_all.count("error")),
                        time=f"{sum(k.seconds for k in result.kernels):.2f}")
    for k in result.kernels:
        board = k.board or result.board
        kinds = [Verdict(s.status).junit for s in k.scenarios]
        log = f"console log: {k.console_log}" if k.console_log else f"build log: {k.build_log}"
        suite = ET.SubElement(suites, "testsuite", name=f"{board} {k.spec} ({k.release})",
                              tests=str(len(k.scenarios)), failures=str(kinds.count("failure")),
                              errors=str(kinds.count("error")), skipped="0", time=f"{k.seconds:.2f}")
        for s, kind in zip(k.scenarios, kinds):
            case = ET.SubElement(suite, "testcase", classname=junit_classname(board, k.release), name=s.name,
                                 time=f"{s.seconds or 0:.3f}")
            if kind:
                # The failing devices' diagnostics first: they say what went wrong.
                bad = {d for d, st in s.devices.items() if st != "ok"}
                diags = sorted(s.diagnostics, key=lambda d: d.split(":", 1)[0] not in bad)
                diags += [f"{k.verdict}: {k.detail}"] if k.detail else []
                msg = f"{s.status}: " + ("; ".join(diags[:2]) or Verdict(s.status).meaning)
                fail = ET.SubElement(case, kind, message=msg, type=s.status)
                fail.text = "\n".join([*diags, log])
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join([log, *(f"{d}: {n} interrupts" for d, n in s.interrupts.items())])
    ET.indent(suites)
    atomic_write(path, ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n")


def junit_classname(board: str, release: str) -> str:
    """``msiforge.<board>.<release>``: what GitLab shows after the test's name."""
    return f"msiforge.{board}.{release}"


def ktap_document(result: RunResult) -> list[str]:
    """The run as one KTAP document: a test per (board, kernel), a subtest per scenario.

    Each result follows its diagnostics; a scenario that timed out is
    ``not ok ... # TIMEOUT``, one the harness could not run (the build
    failed, the guest never started, QEMU died) ``not ok ... # ERROR``, as
    Documentation/dev-tools/ktap.rst has them.
    """
    lines = ["KTAP version 1", f"1..{len(result.kernels)}"]
    for i, k in enumerate(result.kernels, 1):
        name = f"{k.board or result.board}.{k.release}"
        lines += ["    KTAP version 1", f"    # Subtest: {name}", f"    1..{len(k.scenarios)}"]
        for j, s in enumerate(k.scenarios, 1):
            v = Verdict(s.status)
            lines += [f"    # {s.name}: {d}" for d in s.diagnostics]
            lines += [f"    # {s.name}: {d}: {n} interrupts" for d, n in s.interrupts.items()]
            if v.passed:
                lines.append(f"    ok {j} {s.name}")
                continue
            why = k.detail if v is Verdict(k.verdict) and k.detail else v.meaning
            lines.append(f"    not ok {j} {s.name} # {v.directive} {why}" if v.directive
                         else f"    not ok {j} {s.name}")
        if k.detail and not k.passed:
            lines.append(f"# {name}: {k.verdict}: {k.detail}")
        lines.append(f"{'ok' if k.passed else 'not ok'} {i} {name}")
    return lines


def write_ktap(result: RunResult, path: Path) -> None:
    atomic_write(path, "\n".join(ktap_document(result)) + "\n")
