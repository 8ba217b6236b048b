"""The board's drivers in-tree: the last patch of a series, built by Kbuild, booted like the out-of-tree ones.

make test covers pci-ims on 6.12 (its pristine source and series kernel are
built by other tests anyway); make test-all the same on 7.3.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from msiforge import source_kernels
from msiforge.board import load_board
from msiforge.errors import SpecError
from msiforge.generator import intree, patches

from helpers import msiforge, needs_kernel

#: Kernel series whose source builds are too slow for make test.
SLOW = {"7.3"}
KERNELS = [pytest.param(k, id=k, marks=[pytest.mark.slow] if k in SLOW else []) for k in ("6.12", "7.3")]
#: The +in-tree kernels build incrementally in the slot of source:X.Y+pci-ims (conftest.py builds it first).
BUILT = [pytest.param(k, id=k, marks=[*p.marks, *needs_kernel(f"source:{k}+pci-ims")])
         for k, p in zip(("6.12", "7.3"), KERNELS)]
DRIVER_FILES = {f"drivers/misc/msiforge/{f}" for f in
                ("Kconfig", "Makefile", "msiforge_ims0.c", "msiforge_ims0.h", "msiforge_pmsi0.c", "msiforge_pmsi0.h")}


def test_in_tree_needs_a_board():
    with pytest.raises(SpecError, match=r"\+in-tree builds a board's drivers in the tree"):
        source_kernels.target("source:6.12+pci-ims+in-tree")


def test_config_options_name_every_device():
    board = load_board(None)
    assert intree.config_options(board) == {"CONFIG_MSIFORGE_IMS0": "m", "CONFIG_MSIFORGE_PMSI0": "m"}
    assert [intree.module_path(d) for d in board.devices] == ["drivers/misc/msiforge/msiforge_ims0.ko",
                                                               "drivers/misc/msiforge/msiforge_pmsi0.ko"]


@pytest.fixture(scope="module", params=KERNELS)
def series(request, tmp_path_factory):
    """The pci-ims series with the default board's drivers as its last patch, as `msiforge patches` writes it."""
    kernel = request.param
    out = tmp_path_factory.mktemp(f"pci-ims-{kernel}-in-tree")
    proc = msiforge("patches", "--kernel", f"source:{kernel}", "--series", "pci-ims", "-o", str(out / "series"),
                    "--identity", "Test Person <test@example.org>", "q35-ims")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return kernel, source_kernels.pristine(kernel), sorted((out / "series").glob("*.patch")), out, proc.stderr


def test_series_ends_with_the_drivers_and_applies_with_git_am(series):
    kernel, src, files, out, _ = series
    assert len(files) == 1 + len(patches.info("pci-ims").patches) + 1  # cover, the series, the drivers
    last = files[-1].read_text()
    assert "Subject: [PATCH 5/5] misc: msiforge: Add the drivers of the q35-ims devices" in last
    assert "drivers of the msiforge board q35-ims's devices" in files[0].read_text()  # the cover letter says so
    tree = out / "tree"
    subprocess.run(["git", "clone", "-q", "--shared", str(src.tree), str(tree)], check=True)
    subprocess.run(["git", "-C", str(tree), "checkout", "-q", "--detach", src.commit], check=True)
    am = subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t", "am", "-q",
                         *map(str, files[1:])], capture_output=True, text=True)
    assert am.returncode == 0, am.stderr
    changed = subprocess.run(["git", "-C", str(tree), "show", "--name-only", "--format=", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert set(changed) == DRIVER_FILES | {"MAINTAINERS", "drivers/misc/Kconfig", "drivers/misc/Makefile"}
    # The driver only: the test harness (edu DMA, debugfs) stays out of the tree.
    for f in DRIVER_FILES:
        text = (tree / f).read_text()
        assert "debugfs" not in text and "EDU_DMA" not in text, f
    c = (tree / "drivers/misc/msiforge/msiforge_ims0.c").read_text()
    assert "pci_create_ims_domain(" in c and "EXPORT_SYMBOL_GPL(ims0_alloc_group);" in c
    kconfig = (tree / "drivers/misc/msiforge/Kconfig").read_text()
    assert "config MSIFORGE_IMS0\n\ttristate" in kconfig and "depends on X86_64 && PCI_MSI" in kconfig
    assert 'source "drivers/misc/msiforge/Kconfig"\nendmenu' in (tree / "drivers/misc/Kconfig").read_text()


def test_series_with_drivers_is_checkpatch_clean(series):
    _, src, files, _, stderr = series
    for f in files[1:]:
        r = patches.checkpatch(src, f)
        assert (r.errors, r.warnings, r.checks) == (0, 0, 0), r.output
    assert stderr.count("0 errors, 0 warnings, 0 checks") == len(files) - 1  # and the command says so


@pytest.mark.build
@pytest.mark.slow  # the series' own patches build in test_patches; the drivers' commit in the run below
@pytest.mark.parametrize("kernel", ["6.12", "7.3"])
def test_every_patch_builds_and_the_last_builds_the_drivers(kernel):
    """Bisectable to the end: each patch builds; the last builds the drivers as in-tree modules."""
    board = load_board(None)
    targets = source_kernels.series_targets(f"source:{kernel}+pci-ims+in-tree", board=board)
    assert len(targets) == len(patches.info("pci-ims").patches) + 1
    for tgt in targets:
        k = source_kernels.build_target(tgt)
        assert k.vmlinuz.is_file(), tgt.spec
    assert [p.name for p in k.in_tree] == ["msiforge_ims0.ko", "msiforge_pmsi0.ko"]
    for ko in k.in_tree:
        info = subprocess.run(["modinfo", "-F", "intree", str(ko)], capture_output=True, text=True, check=True)
        assert info.stdout.strip() == "Y"  # Kbuild built it as part of the kernel
    assert "CONFIG_MSIFORGE_IMS0=m" in (k.build_dir / ".config").read_text()


@pytest.mark.build
@pytest.mark.vm
@pytest.mark.parametrize("kernel", BUILT)
def test_in_tree_drivers_pass_the_scenarios(kernel, tmp_path):
    """`msiforge run --kernel source:X.Y+pci-ims+in-tree`: the kernel's own driver modules, with the
    out-of-tree test modules, pass every default scenario; ims0 uses PCI/IMS."""
    run_dir = tmp_path / "run"
    proc = msiforge("run", "--kernel", f"source:{kernel}+pci-ims+in-tree", "--out", str(run_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (k,) = json.loads((run_dir / "results.json").read_text())["kernels"]
    assert [s["name"] for s in k["scenarios"]] == ["deliver", "mask", "affinity", "groups", "unload"]
    assert all(s["status"] == "pass" for s in k["scenarios"]), k
    gen = run_dir / "gen" / k["release"]
    manifest = json.loads((gen / "manifest.json").read_text())
    assert {d["name"]: d.get("in_tree") for d in manifest["devices"]} == {
        "ims0": "drivers/misc/msiforge/msiforge_ims0.c", "pmsi0": "drivers/misc/msiforge/msiforge_pmsi0.c"}
    assert not (gen / "msiforge_ims0.c").exists() and (gen / "msiforge_ims0.h").exists()
    assert "obj-m += msiforge_ims0_test.o msiforge_pmsi0_test.o" in (gen / "Kbuild").read_text()
    ktap = (run_dir / k["release"] / "ktap.txt").read_text()
    assert "# ims0: strategy patched (api pci-ims)" in ktap
    log = (run_dir / k["release"] / "console.log").read_text()
    # Only the test modules are out of tree (they taint the kernel), the drivers are the kernel's.
    assert re.search(r"msiforge_ims0_test: loading out-of-tree module taints kernel", log)
    assert not re.search(r"msiforge_ims0: loading out-of-tree module", log)
    for mod in ("msiforge_ims0", "msiforge_pmsi0"):  # the guest's copies
        ko = run_dir / k["release"] / "modules" / f"{mod}.ko"
        info = subprocess.run(["modinfo", "-F", "intree", str(ko)], capture_output=True, text=True, check=True)
        assert info.stdout.strip() == "Y", mod  # Kbuild built it as part of the kernel


def test_test_modules_must_be_built_against_the_kernels_driver_headers(tmp_path):
    """A generated tree whose header is not the in-tree one is a build error, not a boot of mismatched modules."""
    from types import SimpleNamespace

    from msiforge import runner
    from msiforge.errors import BuildError

    src, obj, tree = tmp_path / "src", tmp_path / "o", tmp_path / "gen"
    for d in (src / "drivers/misc/msiforge", obj / "drivers/misc/msiforge", tree):
        d.mkdir(parents=True)
    ko = obj / "drivers/misc/msiforge/msiforge_ims0.ko"
    ko.write_bytes(b"\x7fELF")
    (src / "drivers/misc/msiforge/msiforge_ims0.h").write_text("struct ims0_entry { u32 data; };\n")
    (tree / "msiforge_ims0.h").write_text("struct ims0_entry { u32 data; };\n")
    kernel = SimpleNamespace(in_tree=(ko,), header_dirs=[src, obj], build_dir=obj)
    assert runner.in_tree_modules(tree, kernel) == [ko]
    (tree / "msiforge_ims0.h").write_text("struct ims0_entry { u32 addr; u32 data; };\n")
    with pytest.raises(BuildError, match="msiforge_ims0.h: the kernel's in-tree copy .* differs"):
        runner.in_tree_modules(tree, kernel)
    ko.unlink()
    with pytest.raises(BuildError, match="the in-tree driver msiforge_ims0.ko was not built"):
        runner.in_tree_modules(tree, kernel)
