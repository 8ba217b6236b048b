"""vfio-platform MSI (seed 003): the vfio-platform-msi series, the device-specific handler, the user program.

`make test` boots the board virt-its once on source:6.12+vfio-platform-msi
and once on the stock source:6.12 (which the arm64 tests build anyway), with
the scenario vfio-platform: the platform device pmsi0 bound to vfio-platform
and driven from user space (templates/guest/vfio/msiforge-vfio.c).  `make
test-all` also runs it on source:7.3+vfio-platform-msi.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from msiforge.board import load_board, validate
from msiforge.errors import BoardError

from helpers import REPO, msiforge, needs_kernel

SPEC = "source:6.12+vfio-platform-msi"


def _board(**over) -> dict:
    import yaml

    data = yaml.safe_load((REPO / "boards" / "virt-its.yaml").read_text())
    data.update(over)
    return data


def test_the_board_gives_pmsi0_wired_interrupts():
    pmsi0 = load_board("virt-its").devices[1]
    assert (pmsi0.name, pmsi0.storage, pmsi0.wired_irqs, pmsi0.slots) == ("pmsi0", "platform-msi", 2, 8)


@pytest.mark.parametrize("over,message", [
    ({"devices": [{"name": "ims0", "storage": "ims", "wired_irqs": 1}]},
     "devices[0].wired_irqs: only a platform-msi device is a platform device, with wired interrupts in the "
     "device tree (this one is ims)"),
    ({"devices": [{"name": "p", "storage": "platform-msi", "wired_irqs": 9}]},
     "devices[0].wired_irqs: must be in 0..8, got 9"),
    ({"devices": [{"name": "ims0", "storage": "ims"}], "scenarios": ["vfio-platform"]},
     "scenarios[0]: 'vfio-platform' is for platform-msi devices; the board has none"),
])
def test_bad_vfio_fields_fail_in_one_line(over, message):
    with pytest.raises(BoardError) as exc:
        validate(_board(**over), "b.yaml")
    assert str(exc.value) == f"b.yaml: {message}"


def test_x86_boards_have_no_device_tree_for_wired_interrupts():
    data = _board(arch="x86_64", machine="q35", iommu="none", accel="tcg",
                  devices=[{"name": "p", "storage": "platform-msi", "wired_irqs": 1}])
    with pytest.raises(BoardError, match=r"devices\[0\].wired_irqs: arch x86_64 boards have no device tree"):
        validate(data, "b.yaml")


def test_the_scenario_on_an_x86_board_is_a_one_line_error(tmp_path):
    proc = msiforge("run", "q35-ims", "--scenario", "vfio-platform", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("msiforge: error: --scenario vfio-platform: board q35-ims: 'vfio-platform' "
                                   "runs on arm64 boards, not x86_64")
    assert not (tmp_path / "run").exists()


def test_the_device_tree_lists_the_wired_interrupts():
    from msiforge.vmtests import dtb

    board = load_board("virt-its")
    text = dtb.nodes(board, "0x8004")
    assert "interrupts = <0 136 4>, <0 137 4>;" in text  # device 1: SPIs 128 + 8, level high
    assert dtb.wired_spis(board.devices[1]) == [136, 137]
    assert "msiforge-ims0" not in text


def test_series_options_apply_from_the_patch_that_adds_them():
    """Bisecting the series builds each patch: VFIO_PLATFORM_MSI only from the patch whose Kconfig has it."""
    from msiforge.generator import patches

    si = patches.info("vfio-platform-msi")
    assert si.arches == ("arm64",)
    first, last = dict(si.config_upto(1)), dict(si.config_upto(len(si.patches)))
    assert first["CONFIG_VFIO_PLATFORM"] == "y" and "CONFIG_VFIO_PLATFORM_MSI" not in first
    assert last["CONFIG_VFIO_PLATFORM_MSI"] == "y" and last["CONFIG_VFIO_NOIOMMU"] == "y"


def test_an_x86_board_is_refused_the_arm64_series(tmp_path):
    proc = msiforge("run", "q35-ims", "--kernel", SPEC, "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("msiforge: error: patch series 'vfio-platform-msi' is for arm64 boards, "
                                   "not x86_64")


def _run(tmp_path, spec):
    run_dir = tmp_path / "run"
    proc = msiforge("run", "virt-its", "--kernel", spec, "--scenario", "vfio-platform", "--out", str(run_dir))
    res = json.loads((run_dir / "results.json").read_text())
    (k,) = res["kernels"]
    return proc, k, (run_dir / k["release"] / "ktap.txt").read_text(), run_dir


@pytest.mark.vm
@pytest.mark.build
@pytest.mark.parametrize("spec", [pytest.param(s, marks=needs_kernel(s, "arm64", slow=s != SPEC))
                                  for s in (SPEC, "source:7.3+vfio-platform-msi")])
def test_vfio_platform_end_to_end(tmp_path, spec):
    """pmsi0 through vfio-platform: 2 wired indexes then the MSI index (count 8, its capability), eventfds on
    vectors 1..4 with exact counts, loopback, mask/unmask, release; then the driver again (step load)."""
    proc, k, ktap, run_dir = _run(tmp_path, spec)
    assert proc.returncode == 0, proc.stdout + proc.stderr + ktap
    assert k["verdict"] == "pass"
    (step,) = k["scenarios"]
    assert step["name"] == "vfio-platform" and step["status"] == "pass"
    assert re.search(r"ok 1 ims0 # SKIP vfio-platform is for platform-msi devices, ims0 is ims", ktap), ktap
    listing = [ln.strip() for ln in ktap.splitlines() if "GET_IRQ_INFO index" in ln]
    assert listing == [
        "# pmsi0: GET_IRQ_INFO index 0: count 1 flags EVENTFD|MASKABLE|AUTOMASKED: wired",
        "# pmsi0: GET_IRQ_INFO index 1: count 1 flags EVENTFD|MASKABLE|AUTOMASKED: wired",
        "# pmsi0: GET_IRQ_INFO index 2: count 8 flags EVENTFD|MASKABLE|NORESIZE|CAPS, argsz 40, cap_offset 24: "
        "CAP_TYPE type 1 (MSI) subtype 1 (MSI_PLATFORM)",
    ], ktap
    assert "# pmsi0: GET_INFO: flags 0x5 (PLATFORM|RESET), 0 regions, 3 irq indexes" in ktap
    assert "# pmsi0: each vector fired 3 time(s) by the device: every eventfd counted 3" in ktap
    assert "# pmsi0: vector 1 masked: 3 fire(s) delivered nothing; unmasked: 1 delivered" in ktap
    assert "# pmsi0: released: no vector left in /proc/interrupts, no message left in the device" in ktap
    # 4 activations and 4 deactivations (zero messages) of vectors 1..4; resets at open and close, by the
    # device's only reset, its MSI handler's (vfio-platform's reset_required stays on).
    assert re.search(r"# pmsi0: the handler stored 8 message\(s\) .*, 2 reset\(s\), the device sent 16", ktap), ktap


@pytest.mark.vm
@pytest.mark.build
@pytest.mark.source_kernels("source:6.12@arm64")
def test_without_the_series_the_scenario_fails_naming_what_is_missing(tmp_path):
    """The stock 6.12 kernel: a failure that says the kernel lacks vfio-platform MSI, not a crash, not a pass."""
    proc, k, ktap, _ = _run(tmp_path, "source:6.12")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert k["verdict"] == "fail"
    assert ("# pmsi0: this kernel has no vfio-platform MSI support: its headers declare no "
            "vfio_platform_register_msi() (include/linux/vfio_platform.h); the patch series vfio-platform-msi "
            "adds it (source:6.12+vfio-platform-msi)") in ktap
    assert "not ok 2 pmsi0" in ktap and "ok 1 ims0 # SKIP" in ktap


@pytest.mark.build
@pytest.mark.source_kernels(f"{SPEC}@arm64")
def test_the_guest_program_builds_warning_free_against_the_patched_uapi(tmp_path):
    """msiforge-vfio: static, arm64, -Wall -Wextra -Werror with the kernel's nolibc and its new uapi."""
    from msiforge import source_kernels
    from msiforge.generator import render
    from msiforge.kmod import userprog

    k = source_kernels.build(SPEC, "arm64")
    src = REPO / "templates" / render.VFIO_PROGRAM
    out = userprog.build(src, k, tmp_path / "msiforge-vfio")
    info = subprocess.run(["file", str(out)], capture_output=True, text=True).stdout
    assert "ARM aarch64" in info and "statically linked" in info, info
    assert out.stat().st_size < 128 * 1024  # no C library: nolibc is headers


def test_the_handler_and_the_guest_program_pass_checkpatch(tmp_path):
    """Rendered for a kernel with the series' API: the handler module and the program, checkpatch --strict 0/0/0."""
    from msiforge.generator import checkpatch, features, render

    f = features.Features(msi_parent=True, pci_ims=False, platform_msi_group=False, irq_domain_instantiate=True,
                          kzalloc_obj=True, vfio_platform_msi=True)
    kt = render.KernelTarget("6.12.118-msiforge-test", f, "vfio-platform-msi")
    tree = render.generate(load_board("virt-its"), [kt], tmp_path / "gen")[kt.release]
    manifest = json.loads((tree / "manifest.json").read_text())
    assert [d.get("vfio_module") for d in manifest["devices"]] == [None, "msiforge_pmsi0_vfio"]
    assert manifest["files"]["msiforge_pmsi0_vfio.c"] == "module/vfio/handler.c.j2"
    assert "msiforge_pmsi0_vfio.o" in (tree / "Kbuild").read_text()
    for report in checkpatch.check_files([tree / "msiforge_pmsi0_vfio.c", tree / "msiforge-vfio.c"], series="6.12"):
        assert (report.errors, report.warnings, report.checks) == (0, 0, 0), report.output


def test_kernels_without_the_api_get_no_handler(tmp_path):
    from msiforge.generator import features, render

    f = features.Features(msi_parent=True, pci_ims=False, platform_msi_group=False)
    kt = render.KernelTarget("6.12.118-msiforge-test", f)
    tree = render.generate(load_board("virt-its"), [kt], tmp_path / "gen")[kt.release]
    assert not list(tree.glob("*vfio*"))
