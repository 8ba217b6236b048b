"""Generated C: builds with W=1 warning-free on every target kernel, checkpatch --strict clean.

The targets are the Debian 6.1 and 6.12 kernels (module-local strategy) and
the two patched source kernels, where IMS devices use PCI/IMS (6.12+pci-ims)
and platform-MSI devices use group allocation (6.1+platform-msi-group).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from msiforge.board import validate
from msiforge.generator import checkpatch, render
from msiforge.kmod import build as kbuild

from helpers import default_board


def _variant_boards() -> list[dict]:
    """Boards covering every storage / mask / update / iommu combination, plus awkward names."""
    boards = [default_board()]
    devices = []
    combos = itertools.product(["ims", "platform-msi"], ["source", "parent", "none"], ["direct", "queued"])
    for i, (storage, mask, update) in enumerate(combos):
        devices.append({"name": f"d{i}_{storage[:4].replace('-', '')}", "storage": storage, "slots": 1 + 7 * i,
                        "mask": mask, "update": update, "groups": [1]})
    devices.append({"name": "pcimsi", "storage": "pci-msi", "slots": 1, "mask": "none"})
    for iommu in ("intel-ir", "none"):
        boards.append({"name": f"variants-{iommu}", "iommu": iommu, "devices": devices[:8],
                       "description": "*/ evil comment /* with \"quotes\" and a very long text " * 4})
    boards.append({"name": "wide", "devices": [
        {"name": "a_very_long_nam1", "storage": "ims", "slots": 2048, "update": "queued", "mask": "source"},
        {"name": "x", "storage": "pci-msi", "mask": "parent"}] + devices[8:]})
    return boards


#: Kernels built with an msiforge patch series: the patched strategies are generated for them.
PATCHED = ["source:6.12+pci-ims", "source:6.1+platform-msi-group"]

pytestmark = [pytest.mark.build, pytest.mark.source_kernels(*PATCHED)]


@pytest.fixture(scope="module")
def kernels(fetched_kernels):
    from msiforge import source_kernels

    return [*fetched_kernels.values(), *(source_kernels.build(s) for s in PATCHED)]


@pytest.fixture(scope="module")
def trees(tmp_path_factory, kernels):
    targets = [render.target_for(k) for k in kernels]
    out = []
    for i, data in enumerate(_variant_boards()):
        board = validate(data, f"variant{i}.yaml")
        trees = render.generate(board, targets, tmp_path_factory.mktemp(f"gen{i}"))
        out.extend(trees.items())
    return out


def test_builds_warning_free_on_every_kernel(trees, kernels):
    by_release = {k.release: k for k in kernels}
    built = 0
    apis = set()
    for release, tree in trees:
        result = kbuild.build(tree, by_release[release].build_dir)  # raises on any warning
        manifest = json.loads((tree / "manifest.json").read_text())
        # Per device: its driver and its test module.
        assert sorted(m.name for m in result.modules) == sorted(f"{d['module']}{part}.ko" for d in manifest["devices"]
                                                                for part in ("", "_test"))
        built += len(result.modules)
        apis |= {(d["strategy"], d["api"]) for d in manifest["devices"]}
    assert built >= 4 * (2 + 8 + 8 + 3)
    assert apis == {("module-local", "module-local"), ("patched", "pci-ims"), ("patched", "platform-msi-group"),
                    ("native", "pci-msi")}


def _distinct(files):
    """One file per distinct content (checkpatch's verdict depends on nothing else): the headers, and
    much of the rest, come out the same for several kernels."""
    seen = {}
    for f in files:
        seen.setdefault(f.read_bytes(), f)
    return list(seen.values())


def test_checkpatch_strict_clean(trees):
    files = [c for _, tree in trees for c in sorted(tree.glob("msiforge_*.[ch]")) if not c.name.endswith(".mod.c")]
    for report in checkpatch.check_files(_distinct(files)):
        assert (report.errors, report.warnings) == (0, 0), report.output
        assert report.checks == 0, report.output
    assert len({c.name for c in files}) >= 30  # drivers, headers and test modules


def test_build_error_names_file_line_and_template(trees, fetched_kernels, tmp_path):
    import shutil

    release, tree = trees[0]
    broken = tmp_path / "broken"
    shutil.copytree(tree, broken)
    c = broken / "msiforge_ims0.c"
    lines = c.read_text().splitlines()
    lines.insert(40, "static int this_is_not_c = ;")
    c.write_text("\n".join(lines) + "\n")
    kdir = {k.release: k for k in fetched_kernels.values()}[release].build_dir
    with pytest.raises(Exception) as exc:
        kbuild.build(broken, kdir)
    msg = str(exc.value)
    assert f"{c}:41:" in msg
    assert "template module/driver/backends/module-local.c.j2" in msg


def test_a_tree_given_by_a_relative_path_builds(trees, fetched_kernels, tmp_path, monkeypatch):
    """`make mutants` writes to runs/mutants: Kbuild runs in the kernel's directory, M= must still find it."""
    import shutil

    release, tree = trees[0]
    shutil.copytree(tree, tmp_path / "rel")
    monkeypatch.chdir(tmp_path)
    kdir = {k.release: k for k in fetched_kernels.values()}[release].build_dir
    result = kbuild.build(Path("rel"), kdir)
    assert {m.name for m in result.modules} >= {"msiforge_ims0.ko", "msiforge_ims0_test.ko"}
    assert all(m.is_absolute() and m.exists() for m in result.modules)


#: The newest ABI of every series (and the 7.3 candidate, and 7.3 with PCI/IMS back).
NEWEST = ["debian:6.1", "debian:6.12", "debian:7.2", "debian:7.3", "debian:7.3-rc", "source:7.3+pci-ims"]


@pytest.mark.slow
def test_every_series_newest_abi_builds_warning_free_with_its_own_compiler_and_checkpatch(tmp_path):
    """Every board variant, W=1, against the newest ABI of 6.1, 6.12, 7.2, 7.3 and the rc, each built with the
    kernel's own compiler (build roots for gcc-14 / gcc-16), checkpatch --strict of the kernel's series."""
    from msiforge import runner

    built, apis = 0, set()
    for spec in NEWEST:
        k = runner.obtain(spec, None)
        target = render.target_for(k)
        files = []
        for i, data in enumerate(_variant_boards()):
            board = validate(data, f"variant{i}.yaml")
            tree = render.generate(board, [target], tmp_path / spec.replace(":", "_") / str(i))[k.release]
            result = kbuild.build(tree, k.build_dir, toolchain=k.toolchain)  # raises on any warning
            built += len(result.modules)
            apis |= {(spec, d["api"]) for d in json.loads((tree / "manifest.json").read_text())["devices"]}
            files += [c for c in sorted(tree.glob("msiforge_*.[ch]")) if not c.name.endswith(".mod.c")]
        series = ".".join(k.release.split(".")[:2]).split("-")[0]
        for report in checkpatch.check_files(_distinct(files), series="7.3" if series.startswith("7.") else "6.12"):
            assert (report.errors, report.warnings, report.checks) == (0, 0, 0), report.output
    assert built >= len(NEWEST) * (2 + 8 + 8 + 3)
    assert ("source:7.3+pci-ims", "pci-ims") in apis and ("debian:7.3", "module-local") in apis
