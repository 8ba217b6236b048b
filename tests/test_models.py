"""The result models carry what is used and nothing more (fields nobody reads go stale silently)."""

from __future__ import annotations

import dataclasses

from msiforge import kernels, results
from msiforge.vmtests import console, ktap


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_no_unused_fields_or_methods():
    assert not hasattr(ktap.TestResult, "to_json")  # results.json is written by results.RunResult
    assert "faults" not in _fields(console.Console)  # the worst fault is the verdict and its detail
    assert "accel" not in _fields(results.KernelResult)  # the run's accelerator is RunResult.accel
    assert {"series", "source"} & _fields(kernels.Kernel) == set()  # the spec says both
