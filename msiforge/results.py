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

__all__ = ["PASS", "FAIL", "ScenarioResult", "KernelResult", "RunResult", "write_json", "write_junit"]


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

    @property
    def passed(self) -> bool:
        return self.verdict == PASS and all(s.passed for s in self.scenarios)

    def verdict_of(self, scenario: str) -> Verdict:
        """One scenario's verdict: the kernel's when the boot itself failed (a panic, a hang), else its own."""
        if self.verdict not in (PASS, FAIL):
            return Verdict(self.verdict)
        return Verdict(next(s.status for s in self.scenarios if s.name == scenario))


@dataclass
class RunResult:
    board: str
    run_dir: Path
    accel: str
    kernels: list[KernelResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.kernels) and all(k.passed for k in self.kernels)

    def to_json(self) -> dict:
        return {
            "board": self.board,
            "accel": self.accel,
            "passed": self.passed,
            "kernels": [
                {
                    "spec": k.spec, "release": k.release, "verdict": k.verdict, "detail": k.detail,
                    "passed": k.passed, "timing": k.timing, "boot_seconds": k.boot_seconds, "seconds": round(k.seconds, 2),
                    "console_log": k.console_log, "ktap_log": k.ktap_log,
                    "scenarios": [{"name": s.name, "status": s.status, "seconds": s.seconds,
                                   "devices": s.devices, "diagnostics": s.diagnostics} for s in k.scenarios],
                }
                for k in self.kernels
            ],
        }


def write_json(result: RunResult, path: Path) -> None:
    atomic_write(path, json.dumps(result.to_json(), indent=2) + "\n")


def write_junit(result: RunResult, path: Path) -> None:
    """JUnit XML: one testsuite per kernel, one testcase per scenario.

    A scenario whose code is wrong is a ``failure``; one that could not be
    tested (the build failed, the guest never booted, QEMU died) is an ``error``.
    """
    suites = ET.Element("testsuites", name=f"msiforge {result.board}")
    for k in result.kernels:
        kinds = [Verdict(s.status).junit for s in k.scenarios]
        suite = ET.SubElement(suites, "testsuite", name=f"{result.board} {k.spec} ({k.release})",
                              tests=str(len(k.scenarios)), failures=str(kinds.count("failure")),
                              errors=str(kinds.count("error")), time=f"{k.seconds:.2f}")
        for s, kind in zip(k.scenarios, kinds):
            case = ET.SubElement(suite, "testcase", classname=f"{result.board}.{k.release}", name=s.name,
                                 time=f"{s.seconds or 0:.3f}")
            if kind:
                msg = s.status if s.status != FAIL else "; ".join(s.diagnostics[:3]) or "failed"
                fail = ET.SubElement(case, kind, message=msg, type=s.status)
                fail.text = "\n".join(s.diagnostics + ([k.detail] if k.detail else []))
            out = ET.SubElement(case, "system-out")
            out.text = f"console log: {k.console_log}"
    ET.indent(suites)
    atomic_write(path, ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n")
