"""Bisecting: Debian kernels with cached verdicts, and `git bisect run` on a real kernel tree."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from helpers import MSIFORGE, default_board, msiforge, write_board

pytestmark = [pytest.mark.vm, pytest.mark.build]


def test_bisect_across_suites_names_the_first_7x_kernel_that_sees_another_parent_and_repeats_from_cache(tmp_path):
    """6.12 (bookworm, trixie) to 7.3 (trixie-backports): every verdict is the same, what domain-layout sees
    is not: the driver's parent domain is INTEL-IR-0-13 on 6.12 and INTEL-IR-0-12 on 7.x (an entry left
    the bus token enum).  --watch finds the first kernel that sees it, in <= ceil(log2 n)+1 boots; the
    same bisect again boots nothing, and by verdict it finds no kernel that differs."""
    # A board of its own (verdicts are cached per board): the first bisect really boots.
    data = default_board()
    data["description"] = f"bisect test {tmp_path}"
    board = write_board(tmp_path, data)
    ladder = "debian:6.12.107+deb12,debian:6.12.117+deb12,debian:6.12.118,debian:7.3.4"
    args = ["bisect", str(board), "--scenario", "domain-layout", "--good", "debian:6.12.107+deb12",
            "--bad", "debian:7.3.4", "--kernels", ladder]
    watch = ["--watch", r"slots: \S+ -> (\S+)"]
    first = msiforge(*args, *watch, "--out", str(tmp_path / "b1"))
    assert first.returncode == 0, first.stdout + first.stderr
    res = json.loads((tmp_path / "b1" / "bisect.json").read_text())
    assert res["candidates"] == ["6.12.107+deb12-amd64", "6.12.117+deb12-amd64", "6.12.118+deb13-amd64",
                                 "7.3.4+deb13-amd64"]  # version order across suites
    assert res["reference"] == "INTEL-IR-0-13"
    assert res["first_different"] == "7.3.4+deb13-amd64"
    assert [(s["release"], s["observed"]) for s in res["steps"]][-1] == ("7.3.4+deb13-amd64", "INTEL-IR-0-12")
    assert {s["verdict"] for s in res["steps"]} == {"pass"}
    assert 0 < res["boots"] <= res["max_boots"] == 3
    assert all(s["log"] for s in res["steps"])
    assert "first kernel that differs from debian:6.12.107+deb12 (INTEL-IR-0-13): 7.3.4+deb13-amd64 " \
           "(INTEL-IR-0-12)" in first.stdout
    # Its reports for CI: KCIDB (the answer a DONE test with the boots as its number) and the page.
    from kcidb_io.schema import LATEST

    kc = json.loads((tmp_path / "b1" / "kcidb.json").read_text())
    LATEST.validate(kc)
    answer = next(t for t in kc["tests"] if t["path"] == "msiforge.bisect")
    assert answer["status"] == "DONE" and answer["number"] == {"value": res["boots"], "unit": "boots"}
    assert answer["build_id"].endswith(":7.3.4+deb13-amd64")
    page = (tmp_path / "b1" / "report.html").read_text()
    assert page.count('<circle class="step"') == len(res["steps"]) and 'data-differs="true"' in page
    again = msiforge(*args, *watch, "--out", str(tmp_path / "b2"))
    assert again.returncode == 0
    res2 = json.loads((tmp_path / "b2" / "bisect.json").read_text())
    assert res2["boots"] == 0 and res2["first_different"] == res["first_different"]
    assert "boots: 0" in again.stdout
    by_verdict = msiforge(*args, "--out", str(tmp_path / "b3"))  # the cached verdicts: all pass
    assert by_verdict.returncode == 1, by_verdict.stdout + by_verdict.stderr
    assert json.loads((tmp_path / "b3" / "bisect.json").read_text())["boots"] == 0
    assert "no kernel from debian:6.12.107+deb12 to debian:7.3.4 differs from the good verdict" in by_verdict.stdout


def _git(tree, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", "-C", str(tree), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def _commit(tree, path, old, new, message):
    f = tree / path
    text = f.read_text()
    assert old in text
    f.write_text(text.replace(old, new, 1))
    _git(tree, "commit", "-qam", message)
    return _git(tree, "rev-parse", "HEAD")


@pytest.mark.slow  # a whole kernel build of its own tree: 9.5 of make test's cold minutes (make test-all)
def test_git_bisect_run_lands_on_the_breaking_commit(tmp_path):
    """source:6.12 with the pci-ims series, then: unbuildable (125), fixed, an inverted mask (bad), harmless.

    git bisect run with msiforge bisect-run names the commit that inverted the mask.
    """
    from msiforge import source_kernels

    from msiforge.cache import cache_root

    series_tip = source_kernels.target("source:6.12+pci-ims").commit
    # One tree kept in the cache between runs: its build slot (keyed by the tree's path) is then
    # rebuilt incrementally, where a new path each run would mean a full build without ccache hits.
    tree = cache_root() / "test-trees" / "bisect-run-linux"
    if not (tree / ".git").exists():
        subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout",
                        str(source_kernels.pristine("6.12").tree), str(tree)], check=True)
    subprocess.run(["git", "-C", str(tree), "bisect", "reset"], capture_output=True)  # a run stopped midway
    _git(tree, "checkout", "-q", "-f", "-B", "work", series_tip)
    board = write_board(tmp_path, {"name": "inverted", "fires": 2, "boot_timeout": 30,
                                   "devices": [{"name": "s0", "storage": "ims", "slots": 2, "mask": "source"}]})
    good = _git(tree, "rev-parse", "HEAD")
    chip = "kernel/irq/chip.c"
    unbuildable = _commit(tree, chip, "int irq_chip_retrigger_hierarchy(",
                          "this is not C;\nint irq_chip_retrigger_hierarchy(", "genirq: Break the build")
    _commit(tree, chip, "this is not C;\n", "", "genirq: Fix the build")
    # disable_irq() of an IRQ_DISABLE_UNLAZY interrupt no longer masks at the source, and the others do.
    breaking = _commit(tree, chip, "__irq_disable(desc, irq_settings_disable_unlazy(desc));",
                       "__irq_disable(desc, !irq_settings_disable_unlazy(desc));", "genirq: Invert the mask")
    tip = _commit(tree, chip, " * whether a hw retrigger function exists.",
                  " * whether a hw retrigger function exists!", "genirq: Reword a comment")
    run = [*MSIFORGE, "bisect-run", "--board", str(board), "--scenario", "mask", "--tree", str(tree)]

    _git(tree, "checkout", "-q", unbuildable)
    proc = subprocess.run(run, capture_output=True, text=True)
    assert proc.returncode == 125, proc.stderr
    assert "the kernel does not build" in proc.stderr

    _git(tree, "checkout", "-q", good)
    # A QEMU that dies says nothing of the commit (a hang neither, tests/test_verdicts.py: not booted here,
    # it would wait out the boot timeout).
    for fault, code, words in [(None, 0, "good (0)"), ("panic", 1, "bad (1): mask: panic"),
                               ("vm-crash", 125, "skip (125): vm-crashed")]:
        proc = subprocess.run(run + (["--guest-fault", fault] if fault else []), capture_output=True, text=True)
        assert proc.returncode == code, proc.stderr
        assert words in proc.stderr

    _git(tree, "checkout", "-q", breaking)
    proc = subprocess.run(run, capture_output=True, text=True)
    assert proc.returncode == 1 and "bad (1): mask: fail" in proc.stderr, proc.stderr

    _git(tree, "checkout", "-q", "work")
    _git(tree, "bisect", "start", tip, good)
    out = subprocess.run(["git", "-C", str(tree), "bisect", "run", *run], capture_output=True, text=True)
    _git(tree, "bisect", "reset")
    assert f"{breaking} is the first bad commit" in out.stdout, out.stdout + out.stderr
