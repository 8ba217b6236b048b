"""Architecture records (msiforge/arches): one file each, discovered; every stage takes its arch facts from them."""

from __future__ import annotations

from pathlib import Path

from msiforge import arches
from msiforge.board import ARCH_MACHINES, load_board
from msiforge.vmtests import qemu


def test_records_are_discovered_one_file_each():
    files = sorted(p.stem for p in Path(arches.__file__).parent.glob("*.py") if p.stem != "__init__")
    assert sorted(arches.names()) == files == ["arm64", "ppc64le", "x86_64"]
    assert arches.names()[0] == "x86_64"  # listed first in help texts and errors
    assert ARCH_MACHINES == {"x86_64": ("q35", "pc"), "arm64": ("virt",), "ppc64le": ("pseries",)}
    for a in arches.all_arches().values():
        assert a.fragment.is_file(), a.fragment
        assert a.qemu.startswith("qemu-system-") and a.console
        assert a.make_vars == (() if not a.cross_compile else (f"ARCH={a.kernel_arch}",
                                                               f"CROSS_COMPILE={a.cross_compile}"))


# The command lines msiforge's boots used before the arch records (from a CI run's cmdline files).
X86 = ("qemu-system-x86_64 -bios /usr/share/qemu/qboot.rom -M q35 -accel tcg -smp 2 -m 1024M -nodefaults "
       "-no-user-config -display none -serial stdio -no-reboot -icount shift=auto,sleep=off "
       "-device intel-iommu,intremap=on -device edu,dma_mask=0xffffffff,addr=0x10 "
       "-device edu,dma_mask=0xffffffff,addr=0x11 -kernel K -initrd I -append A")
ARM64 = ("qemu-system-aarch64 -M virt,gic-version=3,its=on -accel tcg -cpu max,pauth-impdef=on -smp 2 -m 1024M "
         "-nodefaults -no-user-config -display none -serial stdio -no-reboot -icount shift=auto,sleep=off "
         "-device edu,dma_mask=0xffffffff,addr=0x10 -device edu,dma_mask=0xffffffff,addr=0x11 -dtb D "
         "-kernel K -initrd I -append A")

PSERIES = ("qemu-system-ppc64 -prom-env msiforge=1 -M pseries,x-vof=on,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,"
           "cap-ccf-assist=off -accel tcg -cpu POWER9 -smp 2 -m 1024M -nodefaults -no-user-config -display none "
           "-serial stdio -no-reboot -icount shift=auto,sleep=off -device edu,dma_mask=0xffffffffffffffff,addr=0x10 "
           "-device edu,dma_mask=0xffffffffffffffff,addr=0x11 -kernel K -initrd I -append A")


def _argv(board: str, accel: str = "tcg") -> list[str]:
    argv = qemu.command(load_board(board), qemu.Accel(accel, "test"), Path("K"), Path("I"), "A", icount=True)
    argv[0] = Path(argv[0]).name
    if "-dtb" in argv:
        argv[argv.index("-dtb") + 1] = "D"
    return argv


def test_qemu_command_lines_are_unchanged():
    tcg = _argv("q35-ims")
    if not Path("/usr/share/qemu/qboot.rom").is_file():
        tcg[1:1] = ["-bios", "/usr/share/qemu/qboot.rom"]
    assert " ".join(tcg) == X86
    assert " ".join(_argv("virt-its")) == ARM64
    assert " ".join(_argv("pseries")) == PSERIES


def test_kvm_x86_gets_the_split_irqchip_and_the_host_cpu():
    argv = _argv("q35-ims", "kvm")
    assert argv[argv.index("-M") + 1] == "q35,kernel-irqchip=split"
    assert argv[argv.index("-cpu") + 1] == "host" and "-icount" not in argv and "-bios" not in argv


def test_an_arch_refuses_an_accelerator_it_cannot_use():
    import pytest

    from msiforge.errors import EnvironmentProblem

    with pytest.raises(EnvironmentProblem, match="an arm64 guest runs under TCG here, not KVM"):
        _argv("virt-its", "kvm")


def test_both_backends_take_the_devices_from_one_place():
    from msiforge.vmtests import vng

    board = load_board("q35-ims")
    argv, _ = vng.command(board, qemu.Accel("tcg", "t"), Path("K"), Path("/t"), icount=False)
    opts = argv[argv.index("--qemu-opts") + 1].split()
    assert opts[2:] == ["-device", "intel-iommu,intremap=on", *arches.device_args(board)]
    assert " ".join(arches.device_args(board)) in " ".join(_argv("q35-ims"))
