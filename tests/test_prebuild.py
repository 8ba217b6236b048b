"""The suite's background kernel builds (tests/prebuild.py) and the order they give the tests (conftest.py).

The whole of it runs for real in every `make test`: its summary prints one
`background build:` line per kernel.  Here: the priority the builder takes,
its log line for a kernel that cannot be built, and the order of the tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import conftest

HERE = Path(__file__).resolve().parent


def test_the_builder_runs_at_idle_priority_in_an_autogroup_at_nice_19():
    code = ("import os, prebuild; prebuild.lowest_priority(); "
            "print(os.sched_getscheduler(0) == os.SCHED_IDLE, open('/proc/self/autogroup').read().split()[-1])")
    out = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True, check=True,
                         start_new_session=True).stdout.split()
    assert out == ["True", "19"]


def test_a_kernel_that_cannot_be_built_is_one_failed_line_and_the_next_is_still_tried(tmp_path):
    log = tmp_path / "prebuild.log"
    proc = subprocess.run([sys.executable, str(HERE / "prebuild.py"), str(log), "source:5.10", "source:6.12+nope"],
                          capture_output=True, text=True, timeout=120, start_new_session=True)
    assert proc.returncode == 0, proc.stderr
    lines = [line.split("\t") for line in log.read_text().splitlines()]
    assert [(line[0], line[1].split(" ")[0]) for line in lines] == [("source:5.10", "failed:"),
                                                                   ("source:6.12+nope", "failed:")]
    assert "no Debian source package for that series" in lines[0][1]
    assert "patch series 'nope': unknown" in lines[1][1]


class _Item:
    def __init__(self, name: str, *kernels: str):
        self.name, self.kernels = name, kernels

    def iter_markers(self, name: str):
        assert name == "source_kernels"
        return [SimpleNamespace(args=self.kernels)] if self.kernels else []


def test_tests_that_need_kernels_run_last_and_their_kernels_build_in_that_order():
    items = [_Item("a"), _Item("b", "source:6.12@arm64"), _Item("c"), _Item("d", "source:6.12+debug"),
             _Item("e", "source:6.12@arm64", "source:6.12")]
    config = SimpleNamespace(stash=pytest.Stash())
    conftest.pytest_collection_modifyitems(config, items)
    assert [it.name for it in items] == ["a", "c", "b", "d", "e"]
    assert config.stash[conftest._PREBUILD] == ["source:6.12@arm64", "source:6.12+debug@x86_64",
                                                "source:6.12@x86_64"]


def test_kernels_that_reuse_an_earlier_ones_objects_build_last():
    """Same series, arch and debug setting as an earlier kernel: only a patch series apart (ccache)."""
    order = conftest._build_order(["source:6.12@arm64", "source:6.12+pci-ims@x86_64", "source:6.12@ppc64le",
                                   "source:6.12@x86_64", "source:6.12+vfio-platform-msi@arm64",
                                   "source:6.12+debug@x86_64", "source:6.1+platform-msi-group@x86_64"])
    assert order == ["source:6.12@arm64", "source:6.12+pci-ims@x86_64", "source:6.12@ppc64le",
                     "source:6.12+debug@x86_64", "source:6.1+platform-msi-group@x86_64",
                     "source:6.12@x86_64", "source:6.12+vfio-platform-msi@arm64"]

