"""The ppc64le board pseries: the hypervisor owns every MSI message (RTAS), QEMU pseries with VOF.

One end-to-end boot (`msiforge run pseries --kernel source:6.12`) is part of
`make test`; the 7.3 kernel is in `make test-all` (one more cross build).
"""

from __future__ import annotations

import json
import re

import pytest

from msiforge.board import load_board, validate
from msiforge.errors import BoardError

from helpers import REPO, msiforge, needs_kernel, write_board

PSERIES_KERNELS = [pytest.param(s, marks=needs_kernel(s, "ppc64le", slow=s == "source:7.3"))
                   for s in ("source:6.12", "source:7.3")]


def _board(**over) -> dict:
    import yaml

    data = yaml.safe_load((REPO / "boards" / "pseries.yaml").read_text())
    data.update(over)
    return data


def test_pseries_is_a_shipped_ppc64le_board():
    board = load_board("pseries")
    assert (board.arch, board.machine, board.accel) == ("ppc64le", "pseries", "tcg")
    assert [d.storage for d in board.devices] == ["pci-msi", "pci-msi"]


REFUSAL = ("cannot work on arch ppc64le: on pseries the hypervisor owns every MSI message (RTAS ibm,change-msi "
           "writes it into the device); no parent domain takes device-specific storage")


@pytest.mark.parametrize("storage", ["ims", "platform-msi"])
def test_device_specific_storage_is_refused_on_pseries(storage):
    data = _board()
    data["devices"] = [data["devices"][0], {"name": "ims0", "storage": storage, "slots": 4}]
    with pytest.raises(BoardError) as exc:
        validate(data, "p.yaml")
    assert str(exc.value) == f"p.yaml: devices[1].storage: {storage} {REFUSAL}"


@pytest.mark.parametrize("over,message", [
    ({"accel": "kvm"}, "accel: an ppc64le guest cannot run under KVM on this x86_64 host (use tcg or auto)"),
    ({"machine": "q35"}, "machine: 'q35' is not one of pseries"),
    ({"iommu": "intel-ir"}, "iommu: intel-ir needs machine: q35"),
])
def test_bad_pseries_boards_fail_in_one_line(over, message):
    with pytest.raises(BoardError) as exc:
        validate(_board(**over), "b.yaml")
    assert str(exc.value) == f"b.yaml: {message}"


def test_an_ims_device_on_pseries_is_exit_2_one_line_and_nothing_written(tmp_path):
    data = _board()
    data["devices"].append({"name": "ims0", "storage": "ims", "slots": 8})
    path = write_board(tmp_path, data)
    out = tmp_path / "run"
    proc = msiforge("run", str(path), "--out", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [f"msiforge: error: {path}: devices[2].storage: ims {REFUSAL}"]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not out.exists()
    gen = msiforge("generate", str(path), "--out", str(tmp_path / "gen"))
    assert gen.returncode == 2 and not (tmp_path / "gen").exists()


def test_qemu_command_line_is_pseries_with_vof_power9_and_a_64_bit_edu_dma_mask():
    from msiforge.vmtests import qemu

    board = load_board("pseries")
    argv = qemu.command(board, qemu.Accel("tcg", "test"), REPO / "vmlinux", REPO / "initrd", "x", True)
    assert argv[0].endswith("qemu-system-ppc64")
    machine = argv[argv.index("-M") + 1]
    assert machine.startswith("pseries,x-vof=on,")
    assert argv[argv.index("-cpu") + 1] == "POWER9"
    # The sPAPR MSI window is at 4 TiB: edu's default 28-bit (or a 32-bit) DMA mask would clamp it.
    assert argv.count("edu,dma_mask=0xffffffffffffffff,addr=0x10") == 1
    assert "-icount" in argv


@pytest.fixture(scope="module", params=PSERIES_KERNELS)
def pseries_kernel(request):
    from msiforge import source_kernels

    return source_kernels.build(request.param, "ppc64le")


@pytest.mark.build
def test_pseries_kernels_are_cross_built_with_the_fragment(pseries_kernel):
    from msiforge import source_kernels

    k = pseries_kernel
    assert k.arch == "ppc64le" and k.vmlinuz.name == "vmlinux"
    head = k.vmlinuz.read_bytes()[:20]
    # ELF, 64-bit, little-endian, machine EM_PPC64 (21).
    assert head[:6] == b"\x7fELF\x02\x01" and int.from_bytes(head[18:20], "little") == 21
    assert source_kernels.missing_options(source_kernels.config_fragment("ppc64le"),
                                          (k.build_dir / ".config").read_text()) == []


@pytest.mark.vm
@pytest.mark.build
def test_pseries_board_end_to_end(tmp_path, pseries_kernel):
    """Every scenario of the board passes with exact counts; the hypervisor wrote every message.

    The KTAP says for each device who wrote its message and what it is: the
    sPAPR MSI window and the interrupt source number (LISN) of the
    controller, the one the kernel's msi_desc also records.
    """
    from msiforge.generator import checkpatch

    run_dir = tmp_path / "run"
    proc = msiforge("run", "pseries", "--kernel", pseries_kernel.spec, "--out", str(run_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads((run_dir / "results.json").read_text())
    (k,) = res["kernels"]
    assert k["verdict"] == "pass"
    board = load_board("pseries")
    assert [s["name"] for s in k["scenarios"]] == list(board.scenarios) == [
        "deliver", "mask", "affinity", "hotplug", "groups", "unload"]
    assert all(s["status"] == "pass" and s["devices"] == {"pci0": "ok", "pci1": "ok"} for s in k["scenarios"])
    ktap = (run_dir / k["release"] / "ktap.txt").read_text()
    lisns = {}
    for dev in ("pci0", "pci1"):
        assert f"# {dev}: 1 slot(s) x 3 fires delivered" in ktap
        m = re.search(rf"# {dev}: message written by the hypervisor \(RTAS ibm,change-msi\): "
                      r"address 0x0000040000000000 data (0x[0-9a-f]+) = LISN (\d+) at (XIVE-IRQ|XICS)", ktap)
        assert m, ktap
        assert int(m[1], 16) == int(m[2]) >= 0x1300  # QEMU's MSI interrupt sources start at 0x1300
        lisns[dev] = int(m[2])
        assert re.search(rf"# {dev}: hierarchy pSeries-PCI-MSI(?:-[0-9a-f:.]+)?:\d+ pSeries-MSI:{m[2]} {m[3]}:{m[2]}", ktap), ktap
        assert f"# {dev}: 3 fires while masked (parent mask, 0 held by the device), 1 delivered on unmask" in ktap
        assert re.search(rf"# {dev}: CPU1 offline: 1 of 1 slot\(s\) moved from CPU1 to CPU0 .*the message is the "
                         rf"hypervisor's and stays \((XIVE-IRQ|XICS) moved LISN {m[2]}\); 1 x 3 fires: 3 counted", ktap)
        assert re.search(rf"# {dev}: (XIVE-IRQ|XICS) moved LISN {m[2]} to CPU1 \(the hypervisor\); "
                         r"the message in the device stays 0x00000000/" + m[1], ktap), ktap
    assert len(set(lisns.values())) == 2  # one interrupt source each
    cmdline = (run_dir / k["release"] / "cmdline").read_text()
    assert "qemu-system-ppc64" in cmdline and "x-vof=on" in cmdline and "console=hvc0" in cmdline
    # The generated C, as built for this kernel (W=1 clean, or the run would have failed): checkpatch --strict.
    gen = sorted((run_dir / "gen" / k["release"]).glob("msiforge_*.[ch]"))
    gen = [c for c in gen if not c.name.endswith(".mod.c")]
    assert len(gen) == 6
    for report in checkpatch.check_files(gen, series="7.3" if k["release"].startswith("7.") else "6.12"):
        assert (report.errors, report.warnings, report.checks) == (0, 0, 0), report.output


@pytest.mark.vm
@pytest.mark.build
@pytest.mark.parametrize("spec,layout,seen", [
    pytest.param("source:6.12", "global", r"global pSeries-PCI-MSI domain, BDF-encoded hwirq 262144",
                 marks=needs_kernel("source:6.12", "ppc64le")),
    pytest.param("source:7.3", "per-device", r"per-device pSeries-PCI-MSI-0000:00:10.0 domain, index hwirq 0",
                 marks=needs_kernel("source:7.3", "ppc64le", slow=True)),
])
def test_pseries_pci_msi_domains_went_per_device_between_6_12_and_7_3(tmp_path, spec, layout, seen):
    """6.12's pseries has one PCI/MSI domain per host bridge; 7.3's gives each device its own."""
    path = write_board(tmp_path, _board(pci_msi_layout=layout, scenarios=["domain-layout"]))
    proc = msiforge("run", str(path), "--kernel", spec, "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (k,) = json.loads((tmp_path / "run" / "results.json").read_text())["kernels"]
    ktap = (tmp_path / "run" / k["release"] / "ktap.txt").read_text()
    assert re.search(r"# pci0: PCI/MSI irq \d+: " + seen, ktap), ktap
