"""Run results: the verdict model and its JSON, JUnit XML and terminal forms."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .cache import atomic_write

PASS = "pass"
FAIL = "fail"


@dataclass
class ScenarioResult:
    """One scenario on one kernel: pass, fail, or the boot verdict that prevented it."""

    name: str
    status: str
    devices: dict[str, str] = field(default_factory=dict)
    diagnostics: list[str] = field(default_factory=list)
    seconds: float | None = None  # wall-clock, as the host saw the guest's result lines

    @property
    def passed(self) -> bool:
        return self.status == PASS


@dataclass
class KernelResult:
    """Everything one kernel's boot produced."""

    spec: str
    release: str
    verdict: str  # pass | fail | a boot verdict (panic, boot-timeout, build-failed, ...)
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
    """JUnit XML: one testsuite per kernel, one testcase per scenario."""
    suites = ET.Element("testsuites", name=f"msiforge {result.board}")
    for k in result.kernels:
        failures = sum(1 for s in k.scenarios if not s.passed)
        suite = ET.SubElement(suites, "testsuite", name=f"{result.board} {k.spec} ({k.release})",
                              tests=str(len(k.scenarios)), failures=str(failures), errors="0",
                              time=f"{k.seconds:.2f}")
        for s in k.scenarios:
            case = ET.SubElement(suite, "testcase", classname=f"{result.board}.{k.release}", name=s.name,
                                 time=f"{s.seconds or 0:.3f}")
            if not s.passed:
                msg = s.status if s.status != FAIL else "; ".join(s.diagnostics[:3]) or "failed"
                fail = ET.SubElement(case, "failure", message=msg, type=s.status)
                fail.text = "\n".join(s.diagnostics + ([k.detail] if k.detail else []))
            out = ET.SubElement(case, "system-out")
            out.text = f"console log: {k.console_log}"
    ET.indent(suites)
    atomic_write(path, ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n")
