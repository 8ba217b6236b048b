"""Remembered compiler probes (kmod/probes.mk): a build that answers Kbuild's try-run from the
cache compiles with exactly the flags a plain Kbuild build chooses, on the host and in a build root."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from msiforge.errors import BuildError
from msiforge.kmod import build as kbuild

FAULT_SRC = Path(kbuild.__file__).parent / "fault" / "msiforge_fault.c"


def _tree(tmp_path: Path, name: str, extra: str = "") -> Path:
    tree = tmp_path / name
    tree.mkdir()
    (tree / "msiforge_fault.c").write_text(FAULT_SRC.read_text() + extra)
    (tree / "Kbuild").write_text("obj-m += msiforge_fault.o\n")
    (tree / "manifest.json").write_text('{"files": {}}\n')
    return tree


def _commands(tree: Path) -> dict[str, str]:
    """The command line Kbuild recorded for each object, with the tree's own path taken out."""
    out = {}
    for cmd in sorted(tree.glob(".*.o.cmd")):
        line = cmd.read_text().splitlines()[0]
        out[cmd.name] = re.sub(r"-Wp,-MMD,\S+", "", line).replace(str(tree.resolve()), "TREE")
    return out


def _check(tmp_path: Path, k, toolchain=None) -> None:
    probes = tmp_path / "cache" / "probes.txt"
    plain = _tree(tmp_path, "plain")
    kbuild.build(plain, k.build_dir, toolchain=toolchain)
    reference = _commands(plain)
    assert "-D__KERNEL__" in reference[".msiforge_fault.o.cmd"]

    # A build that fails adds nothing: its answers are not trusted.
    broken = _tree(tmp_path, "broken", "\nstatic void msiforge_unused(void)\n{\n}\n")
    with pytest.raises(BuildError, match="msiforge_unused"):
        kbuild.build(broken, k.build_dir, toolchain=toolchain, probes=probes)
    assert not probes.exists()
    assert not list(probes.parent.glob(".probes.txt.*"))

    # The first build probes and remembers; the answers are those Kbuild found.
    first = _tree(tmp_path, "first")
    kbuild.build(first, k.build_dir, toolchain=toolchain, probes=probes)
    known = probes.read_text().splitlines()
    assert len(known) >= 10 and {ln[:2] for ln in known} == {"y ", "n "}, known[:3]
    assert _commands(first) == reference

    # The next build answers every probe from the file (none added) and compiles the same.
    before = probes.stat().st_mtime_ns
    second = _tree(tmp_path, "second")
    kbuild.build(second, k.build_dir, toolchain=toolchain, probes=probes)
    assert _commands(second) == reference
    assert probes.stat().st_mtime_ns == before and probes.read_text().splitlines() == known

    # A wrong answer in the file is what the build uses: the file, not a new probe, decides.
    flipped = [("n " if ln.startswith("y ") else "y ") + ln[2:] if "-Werror" in ln else ln for ln in known]
    probes.write_text("\n".join(flipped) + "\n")
    third = _tree(tmp_path, "third")
    try:
        kbuild.build(third, k.build_dir, toolchain=toolchain, probes=probes)
    except BuildError:
        pass  # the same source built warning-free above: other flags made it fail
    else:
        assert _commands(third) != reference


@pytest.mark.build
def test_remembered_probes_give_kbuilds_own_flags_on_the_host(fetched_kernels, tmp_path):
    _check(tmp_path, fetched_kernels["debian:6.12.117+deb12"])


@pytest.mark.build
def test_remembered_probes_give_kbuilds_own_flags_in_a_build_root(tmp_path):
    from msiforge import kernels

    k = kernels.fetch("debian:7.3.4+deb13")
    assert not k.toolchain.on_host
    _check(tmp_path, k, k.toolchain)
