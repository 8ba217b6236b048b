"""Each kernel's modules are built with the compiler it was built with: on the host, or in a build root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from msiforge import kernels, toolchains
from msiforge.errors import EnvironmentProblem
from msiforge.kmod import build as kbuild

FAULT_SRC = Path(kbuild.__file__).parent / "fault" / "msiforge_fault.c"


@pytest.mark.parametrize("text,command,package,version", [
    ("gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0", "gcc-12", "gcc-12", "12.2.0-14+deb12u1"),  # 6.1
    ("x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0", "x86_64-linux-gnu-gcc-12", "gcc-12",
     "12.2.0-14+deb12u1"),  # bookworm's 6.12
    ("x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0", "x86_64-linux-gnu-gcc-14", "gcc-14", "14.2.0-19"),
    ("x86_64-linux-gnu-gcc-16 (Debian 16.2.0-3) 16.2.0", "x86_64-linux-gnu-gcc-16", "gcc-16", "16.2.0-3"),
])
def test_compiler_from_cc_version_text(text, command, package, version):
    c = toolchains.parse_compiler(text)
    assert (c.command, c.package, c.version) == (command, package, version)


def test_a_compiler_msiforge_cannot_place_is_an_error():
    with pytest.raises(EnvironmentProblem, match="not a Debian gcc"):
        toolchains.parse_compiler("Debian clang version 19.1.7 (3)")


def _fake_build_dir(tmp_path: Path, cc_text: str) -> Path:
    d = tmp_path / "build"
    d.mkdir()
    (d / ".config").write_text(f'CONFIG_CC_VERSION_TEXT="{cc_text}"\nCONFIG_PAHOLE_VERSION=130\n')
    return d


def test_never_a_different_compiler_silently(tmp_path):
    """A kernel built with a gcc no indexed suite has is an error naming it, not a build with another gcc."""
    d = _fake_build_dir(tmp_path, "x86_64-linux-gnu-gcc-99 (Debian 99.1.0-1) 99.1.0")
    with pytest.raises(EnvironmentProblem, match=r"no Debian suite msiforge indexes has gcc-99 99\.1\.0"):
        toolchains.for_headers(d)


def test_same_upstream_release_is_said(tmp_path):
    """No suite has gcc-14 14.2.0-1 exactly: trixie's 14.2.0-19 is used and the reason says so."""
    d = _fake_build_dir(tmp_path, "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-1) 14.2.0")
    tc = toolchains.for_headers(d)
    assert tc.suite == "trixie" and tc.packages[0] == "gcc-14=14.2.0-19"
    assert "the same upstream release as the kernel's 14.2.0-1" in tc.why


pytestmark = pytest.mark.build


def test_each_kernel_gets_its_own_compiler():
    """Bookworm's kernels build on the host (gcc-12, glibc 2.36); 7.3.4 in trixie with gcc-14 14.2.0-19."""
    for spec in ("debian:6.1.0-56", "debian:6.12.117+deb12"):
        tc = kernels.fetch(spec).toolchain
        assert tc.on_host, tc.why
        assert tc.compiler.package == "gcc-12"
    tc = kernels.fetch("debian:7.3.4+deb13").toolchain
    assert not tc.on_host
    assert (tc.suite, tc.packages[0], tc.glibc, tc.pahole) == ("trixie", "gcc-14=14.2.0-19", (2, 38), 130)
    assert "glibc 2.38 (the host has 2.36)" in tc.why


def _fault_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "mod"
    tree.mkdir()
    shutil.copy2(FAULT_SRC, tree)
    (tree / "Kbuild").write_text("obj-m += msiforge_fault.o\n")
    (tree / "manifest.json").write_text('{"files": {}}\n')
    return tree


def _check_build(tree: Path, k, tc) -> float:
    for f in tree.glob("*.ko"):
        f.unlink()
    result = kbuild.build(tree, k.build_dir, toolchain=tc)
    data = result.modules[0].read_bytes()
    assert b"GCC: (Debian 14.2.0-19) 14.2.0\0" in data  # the .comment the compiler writes
    assert b"vermagic=7.3.4+deb13-amd64 " in data
    return result.seconds


def test_build_root_is_made_once_then_reused(tmp_path):
    """7.3.4's build root in the shared cache: made by the first build that needs it (on a fresh machine,
    this one or the 7.3 boot), then reused; the module says it was compiled by the kernel's own gcc."""
    k = kernels.fetch("debian:7.3.4+deb13")
    tc = k.toolchain
    tree = _fault_tree(tmp_path)
    _check_build(tree, k, tc)
    meta_mtime = (tc.root_entry / "meta.json").stat().st_mtime_ns
    assert tc.installed()["gcc-14"] == "14.2.0-19"
    assert tc.installed()["pahole"].startswith("1.30")
    _check_build(tree, k, tc)
    assert (tc.root_entry / "meta.json").stat().st_mtime_ns == meta_mtime  # the same root, not made again


@pytest.mark.slow
def test_build_root_in_an_empty_cache_discards_a_killed_one(tmp_path, monkeypatch):
    """In an empty cache: a half-made root (what a killed mmdebstrap leaves) is discarded, the root is
    made, a second build reuses it."""
    k = kernels.fetch("debian:7.3.4+deb13")  # in the shared cache
    monkeypatch.setenv("MSIFORGE_CACHE", str(tmp_path / "cache"))
    tc = toolchains.for_headers(k.build_dir, k.suite)
    entry = tc.root_entry
    assert str(entry).startswith(str(tmp_path))
    stale = entry.parent / f".{entry.name}.killed"
    (stale / "root").mkdir(parents=True)
    tree = _fault_tree(tmp_path)
    first = _check_build(tree, k, tc)
    assert not stale.exists()
    meta_mtime = (entry / "meta.json").stat().st_mtime_ns
    second = _check_build(tree, k, tc)
    assert (entry / "meta.json").stat().st_mtime_ns == meta_mtime
    assert second < first
    assert os.path.exists(tree / "msiforge_fault.ko")
