"""A matrix's stages overlap: kernels come out in order, each as soon as it is obtained.

``obtain`` (fetch or build) is replaced by a timed stand-in here; the real
fetches and boots are covered by the four-kernel matrix in test_ci_vm.py.
"""

from __future__ import annotations

import threading
import time

import pytest

from msiforge import runner
from msiforge.board import load_board


class _Fake:
    def __init__(self, spec):
        self.spec = spec


def _fake_obtain(log, fail=None, delay=0.05):
    def obtain(spec, available, arch, board):
        time.sleep(delay)
        if spec == fail:
            raise RuntimeError(f"{spec}: no such kernel")
        log.append((spec, time.monotonic(), threading.current_thread().name))
        return _Fake(spec)
    return obtain


def test_kernels_come_in_order_while_the_next_ones_are_fetched(monkeypatch):
    log = []
    monkeypatch.setattr(runner, "obtain", _fake_obtain(log))
    specs = [f"debian:k{i}" for i in range(5)]
    got, waits = [], []
    it = runner._obtained(specs, [], load_board("q35-ims"))
    while True:
        asked = time.monotonic()
        try:
            k = next(it)
        except StopIteration:
            break
        waits.append(time.monotonic() - asked)
        got.append((k.spec, time.monotonic()))
        time.sleep(0.2)  # the consumer "boots" it; the fetches (0.05 s each) go on meanwhile
    assert [s for s, _ in got] == specs
    assert got[0][1] < log[-1][1]  # the first kernel was handed over before the last was fetched
    assert {name for _, _, name in log} == {"msiforge-fetch"}
    # Every kernel after the first was ready when asked for: fetched while the one before was in use.
    assert max(waits[1:]) < 0.04, waits


def test_a_failed_fetch_is_raised_where_its_kernel_would_come(monkeypatch):
    log = []
    monkeypatch.setattr(runner, "obtain", _fake_obtain(log, fail="debian:k2"))
    got = []
    with pytest.raises(RuntimeError, match="debian:k2: no such kernel"):
        for k in runner._obtained(["debian:k0", "debian:k1", "debian:k2", "debian:k3"], [], load_board("q35-ims")):
            got.append(k.spec)
    assert got == ["debian:k0", "debian:k1"]
    assert [s for s, _, _ in log] == ["debian:k0", "debian:k1"]  # nothing after the failure is fetched


def test_one_kernel_is_obtained_in_the_callers_thread(monkeypatch):
    log = []
    monkeypatch.setattr(runner, "obtain", _fake_obtain(log))
    assert [k.spec for k in runner._obtained(["debian:k0"], [], load_board("q35-ims"))] == ["debian:k0"]
    assert log[0][2] == threading.current_thread().name
