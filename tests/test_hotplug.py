"""The hotplug scenario: one file (templates/guest/scenarios/hotplug.sh.j2), found by discovery alone.

The real runs take CPU1 offline under vectors made affine to it, count every
interrupt fired meanwhile on CPU0, bring CPU1 back and count on CPU1 again.
"""

from __future__ import annotations

import json
import re

import pytest

from msiforge import board as boardmod
from msiforge.errors import BoardError
from msiforge.generator import scenarios

from helpers import default_board, msiforge, write_board

ONLINE = ("; CPU1 online again: moved back, {n} counted by the handler on CPU1, {n} in /proc/interrupts on CPU1")


def _diag(dev: str, k: int, slots: int, fires: int, how: str) -> str:
    n = k * fires
    return (f"# {dev}: CPU1 offline: {k} of {slots} slot(s) moved from CPU1 to CPU0 (effective affinity 0), {how}; "
            f"{k} x {fires} fires: {n} counted by the handler on CPU0, {n} in /proc/interrupts on CPU0, none lost"
            + ONLINE.format(n=n))


def _run(tmp_path, board_path: str, *scenario_names: str):
    run_dir = tmp_path / "run"
    args = ["run", board_path, "--kernel", "debian:6.12.117+deb12", "--out", str(run_dir)]
    for s in scenario_names:
        args += ["--scenario", s]
    proc = msiforge(*args)
    assert "Traceback" not in proc.stderr, proc.stderr
    res = json.loads((run_dir / "results.json").read_text())
    k = res["kernels"][0]
    return proc, k, (run_dir / k["release"] / "ktap.txt").read_text()


def test_hotplug_is_discovered_from_its_file_alone():
    """Nothing but the file names hotplug: the board, --scenario and the help take it from discovery."""
    s = scenarios.by_name()["hotplug"]
    assert (s.cpus, s.default, s.flavour, s.path) == (2, False, None, "templates/guest/scenarios/hotplug.sh.j2")
    names = list(boardmod.SCENARIOS)
    assert names.index("affinity") < names.index("hotplug") < names.index("groups")
    assert "hotplug" in boardmod.TWO_CPU_SCENARIOS and "hotplug" not in boardmod.DEFAULT_SCENARIOS
    board = boardmod.validate(dict(default_board(), scenarios=["unload", "hotplug", "affinity"]), "b.yaml")
    assert board.scenarios == ("affinity", "hotplug", "unload")
    with pytest.raises(BoardError, match=r"^b.yaml: scenarios: 'hotplug' moves vectors between CPU0 and CPU1 "
                                         r"and needs cpus >= 2$"):
        boardmod.validate(dict(default_board(), cpus=1, scenarios=["deliver", "hotplug"]), "b.yaml")
    proc = msiforge("run", "--help")
    assert "hotplug" in proc.stdout


@pytest.mark.vm
def test_hotplug_on_the_default_board(tmp_path):
    """q35 with interrupt remapping: the IRTEs move to CPU0 and back, the stored messages stay, counts exact."""
    proc, k, ktap = _run(tmp_path, "q35-ims", "deliver", "affinity", "hotplug", "unload")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [(s["name"], s["status"]) for s in k["scenarios"]] == [
        ("deliver", "pass"), ("affinity", "pass"), ("hotplug", "pass"), ("unload", "pass")]
    hotplug = {s["name"]: s for s in k["scenarios"]}["hotplug"]
    assert hotplug["devices"] == {"ims0": "ok", "pmsi0": "ok"}
    how = "stored messages kept (remapped: the IRTEs moved)"
    assert _diag("ims0", 8, 32, 3, how) in ktap  # the first 8 of 32 slots
    assert _diag("pmsi0", 8, 8, 3, how) in ktap


@pytest.mark.vm
def test_hotplug_without_remapping_rewrites_the_stored_destination(tmp_path):
    """No IOMMU: the vector domain rewrites each stored address to select CPU0, then CPU1 again."""
    board = write_board(tmp_path, {
        "name": "hotplug-none", "iommu": "none", "machine": "q35", "fires": 2,
        "devices": [
            {"name": "q", "storage": "platform-msi", "slots": 3, "mask": "source", "update": "queued"},
            {"name": "n", "storage": "ims", "slots": 2, "mask": "none", "update": "direct"},
            {"name": "m", "storage": "pci-msi", "slots": 1, "mask": "none"},
        ],
        "scenarios": ["hotplug", "unload"]})
    proc, k, ktap = _run(tmp_path, str(board))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [(s["name"], s["status"]) for s in k["scenarios"]] == [("hotplug", "pass"), ("unload", "pass")]
    rewritten = "stored destinations rewritten to CPU0, then to CPU1"
    assert _diag("q", 3, 3, 2, rewritten) in ktap
    assert _diag("n", 2, 2, 2, rewritten) in ktap
    assert _diag("m", 1, 1, 2, "the message is the kernel's (PCI MSI capability)") in ktap
    for dev in ("q", "n"):
        m = re.search(rf"# {dev}: slot 0 stored address (0x[0-9a-f]+) on CPU1, (0x[0-9a-f]+) with CPU1 offline, "
                      r"(0x[0-9a-f]+) on CPU1 again", ktap)
        assert m, ktap
        on, off, again = (int(a, 16) >> 12 & 0xff for a in m.groups())  # the destination field
        assert on == again != off, m.group(0)


@pytest.mark.vm
def test_hotplug_fails_when_the_interrupts_are_not_counted_on_cpu0(tmp_path, monkeypatch):
    """A handler that counts on the other CPU than it runs on: hotplug fails, naming the CPU0 count."""
    from msiforge import runner
    from msiforge.board import load_board
    from msiforge.generator import render

    counted = "\tatomic_inc(&s->hits[raw_smp_processor_id()]);\n"
    real_add_tree = render.add_tree
    sabotaged = []

    def add_tree_sabotaged(*args, **kwargs):
        tree = real_add_tree(*args, **kwargs)
        ims0 = tree / "msiforge_ims0_test.c"  # the test handler is the test module's
        text = ims0.read_text()
        assert counted in text
        ims0.write_text(text.replace(counted, "\tatomic_inc(&s->hits[raw_smp_processor_id() ^ 1]);\n", 1))
        sabotaged.append(tree)
        return tree

    # The runner renders each kernel's tree as that kernel arrives (render.add_tree).
    monkeypatch.setattr(render, "add_tree", add_tree_sabotaged)
    run_dir = tmp_path / "run"
    result = runner.run(load_board(None), ["debian:6.12.117+deb12"], ["hotplug"], run_dir)
    assert len(sabotaged) == 1, "the runner did not render through render.add_tree"
    assert not result.passed
    k = json.loads((run_dir / "results.json").read_text())["kernels"][0]
    (hotplug,) = k["scenarios"]
    assert (hotplug["name"], hotplug["status"], hotplug["devices"]) == ("hotplug", "fail",
                                                                       {"ims0": "not ok", "pmsi0": "ok"})
    assert any("ims0: CPU1 offline, slot 0 (irq " in d and "): handler count on CPU0: got 0, expected 3" in d
               for d in hotplug["diagnostics"]), hotplug["diagnostics"]
    # CPU1 came back although the scenario failed half-way: pmsi0 ran after it and passed.
    ktap = (run_dir / k["release"] / "ktap.txt").read_text()
    assert "# pmsi0: CPU1 offline: 8 of 8 slot(s) moved" in ktap
