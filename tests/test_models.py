"""The result models carry what is used and nothing more (fields nobody reads go stale silently)."""

from __future__ import annotations

import dataclasses

from msiforge import kernels, results, verdict
from msiforge.vmtests import ktap


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_no_unused_fields_or_methods():
    assert not hasattr(ktap.TestResult, "to_json")  # results.json is written by results.RunResult
    assert "faults" not in _fields(verdict.Events)  # the console records; verdict.decide finds the faults
    assert "accel" not in _fields(results.KernelResult)  # the run's accelerator is RunResult.accel
    assert {"series", "source"} & _fields(kernels.Kernel) == set()  # the spec says both
