"""The arm64 board virt-its: cross-built kernels, QEMU virt with a GICv3 ITS, the board's device tree.

One end-to-end boot (`msiforge run virt-its --kernel source:6.12`) is part of
`make test`; 6.1+platform-msi-group is cross-built and checked for the
generated drivers (W=1, checkpatch) by `make test-all` (marked slow: one more
cross build), and booted by neither, to keep the suite's time.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from msiforge.board import load_board, validate
from msiforge.errors import BoardError

from helpers import REPO, msiforge, needs_kernel, write_board

#: The arm64 kernels: stock 6.12 (the board's) and 6.1 with the platform-MSI group series (slow).
ARM64_KERNELS = [pytest.param(s, marks=needs_kernel(s, "arm64", slow=s != "source:6.12"))
                 for s in ("source:6.12", "source:6.1+platform-msi-group", "source:7.3")]


def _board(**over) -> dict:
    import yaml

    data = yaml.safe_load((REPO / "boards" / "virt-its.yaml").read_text())
    data.update(over)
    return data


def test_virt_its_is_a_shipped_arm64_board():
    board = load_board("virt-its")
    assert (board.arch, board.machine, board.accel, board.iommu) == ("arm64", "virt", "tcg", "none")
    assert [d.storage for d in board.devices] == ["ims", "platform-msi"]


@pytest.mark.parametrize("over,message", [
    ({"accel": "kvm"}, "accel: an arm64 guest cannot run under KVM on this x86_64 host (use tcg or auto)"),
    ({"machine": "q35"}, "machine: 'q35' is not one of virt"),
    ({"iommu": "intel-ir"}, "iommu: intel-ir needs machine: q35"),
    ({"arch": "riscv64"}, "arch: 'riscv64' is not one of x86_64, arm64, ppc64le"),
])
def test_bad_arm64_boards_fail_in_one_line(over, message):
    with pytest.raises(BoardError) as exc:
        validate(_board(**over), "b.yaml")
    assert str(exc.value) == f"b.yaml: {message}"


def test_auto_accel_means_tcg_for_arm64():
    assert validate(_board(accel="auto"), "b.yaml").accel == "tcg"


def test_debian_kernels_are_refused_for_arm64_boards(tmp_path):
    proc = msiforge("run", str(REPO / "boards" / "virt-its.yaml"), "--kernel", "debian:6.12",
                    "--out", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()
    assert err == ["msiforge: error: kernel debian:6.12: Debian prebuilt kernels are used on x86_64 boards "
                   "only; an arm64 board takes source: or tree: kernels (cross-built)"]
    assert not (tmp_path / "run").exists()


def test_device_tree_gives_platform_devices_the_edu_dma_device_id():
    """QEMU's own virt DTB plus one node per platform-msi device, msi-parent = <&its 0>."""
    from msiforge.vmtests import dtb, qemu

    board = load_board("virt-its")
    argv = qemu.command(board, qemu.Accel("tcg", "test"), REPO / "Image", REPO / "initrd", "x", False)
    path = argv[argv.index("-dtb") + 1]
    dts = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", path], capture_output=True, text=True,
                         check=True).stdout
    its = re.search(r"its@8080000 \{\s*phandle = <(0x[0-9a-f]+)>;", dts)
    assert its, "no ITS in QEMU's device tree"
    node = re.search(r"msiforge-pmsi0 \{(.*?)\};", dts, re.S)
    assert node, dts[-2000:]
    assert f"msi-parent = <{its[1]} 0x00>;" in node[1]
    assert 'compatible = "msiforge,pmsi0";' in node[1]
    assert "msiforge-ims0" not in dts  # IMS storage is on the PCI device: no platform device
    assert dtb.EDU_DMA_DEVICE_ID == 0


@pytest.mark.build
def test_arm64_build_slots_leave_x86_slots_alone():
    """The arch is part of the slot and of the key; x86_64 slots and keys are as before arches."""
    import hashlib

    from msiforge import source_kernels as sk

    x86, arm = sk.target("source:6.12"), sk.target("source:6.12", "arm64")
    assert (x86.arch, arm.arch, x86.slot, arm.slot) == ("x86_64", "arm64", arm.slot, x86.slot)
    want = hashlib.sha256(x86.commit.encode() + sk.BASE_CONFIG.encode() + b"\0"
                          + (REPO / "kconfigs" / "x86_64-q35.config").read_bytes()).hexdigest()
    assert sk._key(x86, x86.repo) == want
    assert sk._key(arm, arm.repo) != want
    assert sk.build_arch("x86_64").slot_tag == "" and sk.build_arch("arm64").slot_tag == "-arm64"


@pytest.fixture(scope="module", params=ARM64_KERNELS)
def arm64_kernel(request):
    from msiforge import source_kernels

    return source_kernels.build(request.param, "arm64")


@pytest.mark.build
def test_arm64_kernels_are_cross_built_with_the_fragment(arm64_kernel):
    from msiforge import source_kernels

    k = arm64_kernel
    assert k.arch == "arm64" and k.vmlinuz.name == "Image"
    head = k.vmlinuz.read_bytes()[:64]
    assert head[56:60] == b"ARM\x64", k.vmlinuz  # the arm64 Image header magic
    assert source_kernels.missing_options(source_kernels.config_fragment("arm64"),
                                          (k.build_dir / ".config").read_text()) == []


@pytest.mark.build
def test_generated_drivers_build_for_arm64_and_pass_checkpatch(arm64_kernel, tmp_path):
    """The same template as x86_64: W=1 warning-free and checkpatch --strict clean for arm64 kernels.

    The board virt-its, and x86_64's variant boards (every storage / mask /
    update combination, awkward names) moved to arm64.
    """
    from msiforge.generator import checkpatch, render
    from msiforge.kmod import build as kbuild

    from test_generated_c import _variant_boards

    boards = [load_board("virt-its")]
    boards += [validate(dict(data, arch="arm64", machine="virt", iommu="none"), f"variant{i}.yaml")
               for i, data in enumerate(_variant_boards())]
    k = arm64_kernel
    target = render.target_for(k)
    apis, built, sources = set(), 0, []
    for i, board in enumerate(boards):
        tree = render.generate(board, [target], tmp_path / f"gen{i}")[k.release]
        result = kbuild.build(tree, k.build_dir, arch="arm64")  # raises on any warning
        assert sorted(m.name for m in result.modules) == sorted(f"{d.module}{part}.ko" for d in board.devices
                                                                for part in ("", "_test"))
        built += len(result.modules)
        sources += [c for c in sorted(tree.glob("msiforge_*.[ch]")) if not c.name.endswith(".mod.c")]
        manifest = json.loads((tree / "manifest.json").read_text())
        apis |= {(board.name, d["name"], d["api"]) for d in manifest["devices"]}
    assert built >= 2 + 2 + 8 + 8 + 3
    for report in checkpatch.check_files(sources, series="7.3" if k.release.startswith("7.") else "6.12"):
        assert (report.errors, report.warnings, report.checks) == (0, 0, 0), report.output
    # The platform-MSI group API exists only where the series added it.
    pmsi = "platform-msi-group" if k.patch_series == "platform-msi-group" else "module-local"
    assert ("virt-its", "pmsi0", pmsi) in apis and ("virt-its", "ims0", "module-local") in apis
    assert {api for _, _, api in apis} == {"module-local", "pci-msi", pmsi}


@pytest.mark.vm
@pytest.mark.build
@pytest.mark.parametrize("spec", [pytest.param(s, marks=needs_kernel(s, "arm64", slow=s != "source:6.12"))
                                  for s in ("source:6.12", "source:7.3")])
def test_virt_its_board_end_to_end(tmp_path, spec):
    """Every scenario of the arm64 board passes with exact counts; the slots' parent is the ITS.

    On 7.3 the ITS composes each message through the interrupt's msi_desc: the
    module-local domain gives its interrupts one (probe msi_msg_set_addr).
    """
    run_dir = tmp_path / "run"
    proc = msiforge("run", "virt-its", "--kernel", spec, "--out", str(run_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads((run_dir / "results.json").read_text())
    (k,) = res["kernels"]
    assert k["verdict"] == "pass"
    board = load_board("virt-its")
    assert [s["name"] for s in k["scenarios"]] == list(board.scenarios)
    assert all(s["status"] == "pass" and s["devices"] == {"ims0": "ok", "pmsi0": "ok"} for s in k["scenarios"])
    ktap = (run_dir / k["release"] / "ktap.txt").read_text()
    assert "# ims0: 32 slot(s) x 3 fires delivered" in ktap
    assert re.search(r"# ims0: strategy module-local \(api module-local\), domain IMS-ims0, "
                     r"parent \S*its@8080000", ktap), ktap
    assert "# ims0: 3 fires while masked (source mask, 3 held by the device), 1 delivered on unmask" in ktap
    assert "(ITS: the LPI moved, the message stays)" in ktap
    cmdline = (run_dir / k["release"] / "cmdline").read_text()
    assert "qemu-system-aarch64" in cmdline and "its=on" in cmdline and "-dtb" in cmdline


@pytest.mark.vm
@pytest.mark.build
@pytest.mark.source_kernels("source:6.12@arm64")
def test_edu_dma_reaches_the_its_as_device_id_0(tmp_path):
    """The DeviceID claim, checked: the same driver with any other DeviceID gets no interrupt at all.

    (DeviceID 0 passes in the end-to-end test.)  0x1234 is a DeviceID no
    other device uses: the ITS maps the slots' events for it, but the edu's
    DMA arrives as DeviceID 0, whose events are unmapped, so nothing is
    delivered.  In the same boot a pci-msi device, whose message is for the
    edu's requester ID and which the edu therefore sends as its own MSI
    (not by DMA), is delivered.
    """
    from msiforge import source_kernels
    from msiforge.generator import render
    from msiforge.runner import boot_kernel
    from msiforge.vmtests import qemu

    board = validate(_board(name="its-devid", fires=1, boot_timeout=60, scenario_timeout=60,
                            scenarios=["deliver"],
                            devices=[{"name": "ims0", "storage": "ims", "slots": 2, "mask": "source"},
                                     {"name": "m", "storage": "pci-msi", "mask": "none"}]), "b.yaml")
    kernel = source_kernels.build("source:6.12", "arm64")
    tree = render.generate(board, [render.target_for(kernel)], tmp_path / "gen")[kernel.release]
    c = tree / "msiforge_ims0.c"
    text = c.read_text()
    assert "#define IMS0_ITS_DEVICE_ID\t0\n" in text
    c.write_text(text.replace("#define IMS0_ITS_DEVICE_ID\t0\n", "#define IMS0_ITS_DEVICE_ID\t0x1234\n"))
    kdir = tmp_path / "k"
    kdir.mkdir()
    result = boot_kernel(board, kernel, tree, kdir, qemu.Accel("tcg", "test"))
    (deliver,) = result.scenarios
    assert deliver.status == "fail" and deliver.devices == {"ims0": "not ok", "m": "ok"}, deliver
    assert any("timed out" in d for d in deliver.diagnostics), deliver.diagnostics


@pytest.mark.vm
@pytest.mark.build
@pytest.mark.source_kernels("source:6.12@arm64")  # the board's kernel
@pytest.mark.parametrize("fault,verdict,words", [
    ("warn", "warn", "WARNING:"),
    pytest.param("vm-crash", "vm-crashed", "QEMU exited", marks=pytest.mark.slow),  # x86 boots it in make test
])
def test_arm64_guest_faults_are_verdicts(tmp_path, fault, verdict, words):
    """A WARN in an arm64 guest is seen (the fragment keeps CONFIG_BUG, which tinyconfig drops), and
    an edu DMA out of range (through /dev/mem) crashes QEMU: each is its own verdict."""
    path = write_board(tmp_path, _board(name="small-arm64", fires=1, boot_timeout=30, scenario_timeout=30,
                                        scenarios=["deliver", "unload"],
                                        devices=[{"name": "ims0", "storage": "ims", "slots": 2}]))
    proc = msiforge("run", str(path), "--guest-fault", fault, "--out", str(tmp_path / "run"), timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (k,) = json.loads((tmp_path / "run" / "results.json").read_text())["kernels"]
    assert k["verdict"] == verdict, k
    log = (tmp_path / "run" / k["release"] / "console.log").read_text(errors="replace")
    assert words in k["detail"] or words in log
