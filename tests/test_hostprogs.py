"""The registry of host programs: every program the code runs is in it, with its Debian package."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from msiforge import hostprogs

from helpers import REPO

#: Everything msiforge ships or runs: the package's folders, bench/ and the tests.
SOURCES = [p for d in ("msiforge", "generator", "kmod", "vmtests", "bench", "tests")
           for p in sorted((REPO / d).rglob("*.py"))]
#: Calls whose first argument is a command line.
_RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "spawn", "_run", "sh", "require",
            "optional", "which"}


def _literal_programs(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, program) of every command line in ``tree`` whose program is spelled in the code."""
    assigned: dict[str, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            assigned.setdefault(node.targets[0].id, node.value)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if fn not in _RUNNERS:
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Name) and arg.id in assigned:  # cmd = [...]; run(cmd)
            arg = assigned[arg.id]
        if isinstance(arg, (ast.List, ast.Tuple)) and arg.elts:
            arg = arg.elts[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            if fn in ("which", "require", "optional") or " " not in arg.value:
                found.append((node.lineno, arg.value))
        elif isinstance(arg, ast.JoinedStr) and isinstance(arg.values[-1], ast.Constant):
            found.append((node.lineno, "*" + arg.values[-1].value))  # f"{prefix}strip"
    return found


def _registered(prog: str) -> bool:
    if prog.startswith("*"):
        return any(name.endswith(prog[1:]) for name in hostprogs.PROGRAMS)
    return prog in hostprogs.PROGRAMS or os.path.basename(prog) in hostprogs.PROGRAMS


def unregistered(paths: list[Path]) -> list[str]:
    """'file:line: program' for every literal command line naming a program the registry lacks."""
    bad = []
    for path in paths:
        for line, prog in _literal_programs(ast.parse(path.read_text(), str(path))):
            if not _registered(prog):
                bad.append(f"{path.relative_to(REPO)}:{line}: {prog}")
    return bad


def test_every_command_line_in_the_code_names_a_registered_program():
    assert len(SOURCES) > 40
    assert unregistered(SOURCES) == []


def test_the_scan_sees_command_lines(tmp_path):
    """The scan finds programs in each form the code uses (so the test above can fail)."""
    src = tmp_path / "x.py"
    src.write_text("import subprocess, shutil\n"
                   "subprocess.run(['lsblk', '-J'])\n"
                   "cmd = ['blkid']\nsubprocess.run(cmd, check=True)\n"
                   "shutil.which('fdisk')\n"
                   "subprocess.run([f'{prefix}strip', '-d'])\n"
                   "subprocess.run(['git', 'status'])\n")
    found = [prog for _line, prog in _literal_programs(ast.parse(src.read_text()))]
    assert found == ["lsblk", "blkid", "fdisk", "*strip", "git"]
    assert [_registered(p) for p in found] == [False, False, False, True, True]


def test_every_program_names_a_package_and_a_reason():
    for prog in hostprogs.PROGRAMS.values():
        assert prog.package and prog.needed_for, prog
        assert prog.source in ("debian", "venv"), prog


def test_the_makefile_installs_from_the_registry():
    """No package list beside the registry: the Makefile asks hostprogs.py."""
    makefile = (REPO / "Makefile").read_text()
    assert "msiforge/hostprogs.py" in makefile and "$(HOSTPROGS) ensure" in makefile
    for pkg in ("qemu-system-x86", "ccache", "gcc-aarch64-linux-gnu", "busybox-static"):
        assert pkg not in makefile, f"{pkg} is listed in the Makefile beside the registry"
    out = subprocess.run([sys.executable, "-P", str(REPO / "msiforge" / "hostprogs.py"), "packages"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert {"ccache", "qemu-system-x86", "qemu-system-arm", "dwarves", "procps", "zstd"} <= set(out)
    assert len(out) == len(set(out))


def test_every_registered_debian_program_is_installed():
    """make deps ran before the tests: each registered program is on PATH."""
    absent = [p.name for p in hostprogs.PROGRAMS.values() if hostprogs.which(p.name) is None]
    assert absent == []


def test_unregistered_program_is_a_lookup_error():
    with pytest.raises(LookupError, match="'lsblk' is not in msiforge.hostprogs.PROGRAMS"):
        hostprogs.require("ls" + "blk")


def test_missing_required_program_names_its_package(monkeypatch):
    from msiforge.errors import EnvironmentProblem

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EnvironmentProblem, match=r"^dtc not found \(needed for .*\): install Debian's "
                                                 r"device-tree-compiler \(make deps, as root\)$"):
        hostprogs.require("dtc")


def test_kernel_build_without_ccache_says_so_and_still_builds_with_gcc(monkeypatch, capsys, tmp_path):
    """No ccache on PATH: CC= is the plain compiler and a notice says what is lost (no 'not found' from a shell)."""
    from msiforge import source_kernels

    (tmp_path / "gcc").symlink_to(hostprogs.require("gcc"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(hostprogs, "_noticed", set())
    assert source_kernels._compilers("x86_64") == ("CC=gcc", "HOSTCC=gcc")
    assert capsys.readouterr().err.startswith(
        "msiforge: note: ccache is not installed, so no caching kernel compilations")


def test_programs_run_by_the_suite_were_registered():
    """The audit log of this run (every program msiforge and the tests executed) names no unregistered one.

    conftest.py sets MSIFORGE_AUDIT_PROGRAMS; this test runs last in its file,
    so it sees what the suite ran up to here, and conftest checks the whole
    log again at the end of the session.
    """
    log = Path(os.environ["MSIFORGE_AUDIT_PROGRAMS"])
    subprocess.run(["git", "--version"], capture_output=True, check=True)  # a registered one: not logged
    assert not log.exists() or log.read_text() == ""


def test_checkpatch_download_is_checked_against_the_index(tmp_path, monkeypatch):
    """Like every other download, checkpatch's linux-source goes through debs.download: a bad SHA256 stops it."""
    from msiforge import debs
    from msiforge.errors import EnvironmentProblem
    from msiforge.generator import checkpatch

    from msiforge import source_kernels

    real = debs.candidate("busybox-static")  # small: the check, not the package, is under test
    monkeypatch.setattr(source_kernels, "source_candidate",
                        lambda pkg: debs.Candidate(pkg, real.version, "0" * 64, {}))
    with pytest.raises(EnvironmentProblem, match=r"busybox-static_.*\.deb: SHA256 [0-9a-f]{64} does not match "
                                                 r"the package index \(0{64}\)"):
        checkpatch._extract(tmp_path, "busybox-static")


def test_every_download_path_uses_the_verified_helper():
    """No apt-get download outside msiforge/debs.py."""
    offenders = [str(p.relative_to(REPO)) for p in SOURCES
                 if p.name != "debs.py" and p.parent.name != "tests" and '"download"' in p.read_text()]
    assert offenders == []
