"""Kept module trees (kmod/trees.py): an edit rebuilds only what it changed, and never hides a warning."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

from msiforge.kmod import trees


def _src(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    for name, text in files.items():
        (src / name).write_text(text)
    return src


def test_sync_writes_only_what_changed(tmp_path):
    kept = tmp_path / "kept"
    src = _src(tmp_path, {"a.c": "int a;\n", "b.c": "int b;\n", "Kbuild": "obj-m += a.o b.o\n", "run.sh": "x"})
    assert trees.sync(src, kept, skip=("run.sh",)) == ["Kbuild", "a.c", "b.c"]
    assert not (kept / "run.sh").exists()
    (kept / "a.o").write_text("object")  # what a build left
    before = {n: (kept / n).stat().st_mtime_ns for n in ("a.c", "b.c", "Kbuild")}
    (src / "b.c").write_text("int b = 1;\n")
    assert trees.sync(src, kept, skip=("run.sh",)) == ["b.c"]
    assert (kept / "b.c").read_text() == "int b = 1;\n"
    assert (kept / "a.c").stat().st_mtime_ns == before["a.c"]  # untouched: Kbuild keeps its object
    assert (kept / "a.o").read_text() == "object"
    assert trees.sync(src, kept, skip=("run.sh",)) == []


def test_a_different_set_of_files_empties_the_tree(tmp_path):
    kept = tmp_path / "kept"
    trees.sync(_src(tmp_path, {"a.c": "1", "b.c": "2"}), kept)
    (kept / "b.ko").write_text("old module")
    assert trees.sync(_src(tmp_path, {"a.c": "1"}), kept) == ["a.c"]
    assert sorted(p.name for p in kept.iterdir() if not p.name.startswith(".")) == ["a.c"]


def test_a_build_that_did_not_succeed_empties_the_tree(tmp_path):
    kept = tmp_path / "kept"
    src = _src(tmp_path, {"a.c": "1"})
    trees.sync(src, kept)
    with trees.building(kept):
        (kept / "a.o").write_text("good")
    assert trees.sync(src, kept) == [] and (kept / "a.o").exists()
    with pytest.raises(RuntimeError), trees.building(kept):
        (kept / "a.o").write_text("half")
        raise RuntimeError("make killed")
    assert trees.sync(src, kept) == ["a.c"]
    assert not (kept / "a.o").exists()


def test_a_tree_another_process_builds_in_is_not_waited_for(tmp_path):
    kept = tmp_path / "modtrees" / "k"
    with trees.claimed(kept) as mine:
        assert mine
        # Another process (another open file description) sees it taken.
        with open(kept.with_name("k.lock"), "a+") as fh:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with trees.claimed(kept) as mine:
        assert mine


def test_prune_keeps_the_most_recently_used(tmp_path):
    for i in range(5):
        kept = tmp_path / "modtrees" / f"t{i}"
        trees.sync(_src(tmp_path, {"a.c": str(i)}), kept)
        with trees.claimed(kept):
            pass
        os.utime(kept.with_name(f"t{i}.lock"), ns=(i * 10**9, i * 10**9))
    removed = trees.prune(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["t0", "t1", "t2"]
    assert sorted(p.name for p in (tmp_path / "modtrees").iterdir()) == ["t3", "t3.lock", "t4", "t4.lock"]


@pytest.mark.build
def test_an_edit_rebuilds_one_file_and_a_warning_stays_a_failure(fetched_kernels, tmp_path, monkeypatch):
    """Real Kbuild (W=1) on Debian 6.12's headers, in a kept tree of the default board."""
    from msiforge import runner
    from msiforge.board import validate
    from msiforge.errors import BuildError
    from msiforge.generator import render

    from helpers import default_board

    monkeypatch.setenv("MSIFORGE_CACHE", str(tmp_path / "cache"))
    kernel = fetched_kernels["debian:6.12.117+deb12"]
    board = validate(default_board(), "board.yaml")
    tree = render.generate(board, [render.target_for(kernel)], tmp_path / "gen")[kernel.release]
    work = tmp_path / "work"
    shutil.copytree(tree, work)
    first = {m.name: m.stat().st_mtime_ns for m in runner.compile_modules(work, kernel, "t")}
    assert set(first) == {"msiforge_ims0.ko", "msiforge_ims0_test.ko", "msiforge_pmsi0.ko", "msiforge_pmsi0_test.ko"}
    kept = next(p for p in (tmp_path / "cache" / "modtrees").iterdir() if p.is_dir())
    objects = {o.name: o.stat().st_mtime_ns for o in kept.glob("*.o") if not o.name.endswith(".mod.o")}

    # A one-line edit of one driver: that file alone is compiled again.
    c = work / "msiforge_pmsi0.c"
    c.write_text(c.read_text().replace('MODULE_DESCRIPTION("', 'MODULE_DESCRIPTION("edited: '))
    again = {m.name: m for m in runner.compile_modules(work, kernel, "t")}
    rebuilt = sorted(o.name for o in kept.glob("*.o") if o.name in objects
                     and o.stat().st_mtime_ns != objects[o.name])
    assert rebuilt == ["msiforge_pmsi0.o"]
    assert b"edited: " in again["msiforge_pmsi0.ko"].read_bytes()
    assert again["msiforge_ims0.ko"].stat().st_mtime_ns == first["msiforge_ims0.ko"]

    # A W=1 warning fails the build, and fails it again with the same sources.
    c.write_text(c.read_text() + "\nstatic void msiforge_unused(void)\n{\n}\n")
    for _ in range(2):
        with pytest.raises(BuildError, match="msiforge_unused"):
            runner.compile_modules(work, kernel, "t")
    assert (work / "build.log").is_file() and "msiforge_unused" in (work / "build.log").read_text()
