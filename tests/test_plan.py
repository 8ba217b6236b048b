"""The plan: pure data decided before generating or booting; `msiforge plan` prints it for both built-in boards."""

from __future__ import annotations

import json

import pytest

from msiforge import plan
from msiforge.board import load_board
from msiforge.generator.features import Features

from helpers import msiforge

NONE = Features(msi_parent=True, pci_ims=False, platform_msi_group=False)
IMS = Features(msi_parent=True, pci_ims=True, platform_msi_group=False)


def test_device_strategies_are_decided_from_the_headers_alone():
    board = load_board("q35-ims")
    stock = plan.kernel_plan(board, "debian:6.12.117+deb12", "6.12.117+deb12-amd64", NONE, None)
    assert [(d.name, d.strategy, d.api) for d in stock.devices] == [("ims0", "module-local", "module-local"),
                                                                    ("pmsi0", "module-local", "module-local")]
    assert stock.device("ims0").why == "the kernel's headers declare no pci-ims API"
    patched = plan.kernel_plan(board, "source:6.12+pci-ims", "6.12.117-msiforge-x", IMS, "pci-ims")
    assert (patched.device("ims0").strategy, patched.device("ims0").api) == ("patched", "pci-ims")
    assert patched.scenarios == board.scenarios and patched.boot is None
    p = plan.Plan(board.name, board.path, board.arch, board.machine, (stock, patched))
    assert json.loads(json.dumps(p.to_json()))["kernels"][1]["devices"][0]["api"] == "pci-ims"
    text = "\n".join(plan.describe(p))
    assert "device ims0 (ims): patched, api pci-ims: the pci-ims patch series adds the pci-ims API" in text


@pytest.mark.vm
def test_msiforge_plan_q35_ims():
    proc = msiforge("plan", "--kernel", "debian:6.12.117+deb12")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "board q35-ims from q35-ims (built-in board): x86_64 q35, console ttyS0" in out
    assert "device ims0 (ims): module-local, api module-local" in out
    assert "accelerator TCG: " in out or "accelerator KVM: " in out
    assert "clock icount: -icount probe: init reached in" in out
    assert "command line: console=ttyS0 loglevel=5 panic=-1 initcall_blacklist=" in out
    data = json.loads(msiforge("plan", "q35-ims", "--kernel", "debian:6.12.117+deb12", "--json").stdout)
    boot = data["kernels"][0]["boot"]
    assert boot["backend"] == "qemu" and boot["image"]["why"] in ("PVH", "bzImage") or \
        boot["image"]["why"].startswith("bzImage: ")


@pytest.mark.vm
@pytest.mark.build
@pytest.mark.source_kernels("source:6.12@arm64")  # the board's kernel, built to plan its boot
def test_msiforge_plan_virt_its():
    proc = msiforge("plan", "virt-its", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["arch"], data["machine"]) == ("arm64", "virt")
    k = data["kernels"][0]
    assert k["spec"] == "source:6.12" and k["boot"]["accel"]["value"] == "tcg"
    assert k["boot"]["cmdline"].startswith("console=ttyAMA0 ")
    assert {d["api"] for d in k["devices"]} == {"module-local"}
    assert k["boot"]["image"]["value"].endswith("arch/arm64/boot/Image")
    assert msiforge("plan", "virt-its", "--backend", "vng").returncode == 2  # one line: qemu only
