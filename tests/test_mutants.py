"""Mutation testing: the shipped mutants apply to the rendered drivers; run, the scenarios kill them."""

from __future__ import annotations

import json

import pytest

from helpers import msiforge
from msiforge import mutants
from msiforge.errors import InputError


def test_every_shipped_mutant_applies_exactly_once_to_its_rendered_driver(tmp_path, fetched_kernels):
    from msiforge.generator import render

    found = mutants.discover()
    assert len(found) >= 20
    assert len({m.name for m in found}) == len(found)
    trees = {}
    for m in found:
        board = mutants.load_board(m)
        # A source:6.12 debug kernel is Debian's 6.12.117 source: rendered here for Debian's
        # 6.12.117 headers (same release, same APIs), no kernel is built for this check.
        same = {"source:6.12+debug": "debian:6.12.117+deb12"}
        kernel = fetched_kernels.get(m.kernel) or fetched_kernels.get(same.get(m.kernel, ""))
        assert kernel is not None, f"{m.name}: kernel {m.kernel} is not one the suite fetches"
        key = (m.board_key, m.kernel)
        if key not in trees:
            trees[key] = render.generate(board, [render.target_for(kernel)], tmp_path / str(len(trees)))
        tree = trees[key][kernel.release]
        src = tree / (f"msiforge_{m.device}.c" if m.module == "driver" else f"msiforge_{m.device}_test.c")
        before = src.read_text()
        mutants.apply(m, tree)
        after = src.read_text()
        assert after != before, m.name
        src.write_text(before)


def test_mutants_of_one_board_with_other_scenarios_get_their_own_run():
    """The leak mutant runs churn on q35-ims; the others on q35-ims run the board's scenarios."""
    by_name = {m.name: m for m in mutants.discover()}
    leak, mask = by_name["leaks-one-object-per-group"], by_name["mask-does-nothing"]
    assert leak.board == mask.board == "q35-ims"
    assert leak.board_key != mask.board_key
    assert mutants.load_board(leak).scenarios == ("churn",)
    assert "churn" not in mutants.load_board(mask).scenarios


def test_bad_mutant_files_are_one_line_errors(tmp_path):
    good = {"mutant": "x", "summary": "s", "module": "driver", "device": "ims0", "find": "a", "replace": "b"}
    import yaml

    for change, words in [({"module": "both"}, "module: 'both' is not driver or test"),
                          ({"find": ""}, "find: required"), ({"colour": 1}, "colour: unknown field"),
                          ({"mutant": "y"}, "differs from the file's name")]:
        with pytest.raises(InputError, match=words):
            mutants.parse(yaml.safe_dump({**good, **change}), "templates/module/mutants/x.yaml")
    m = mutants.parse(yaml.safe_dump({**good, "find": "no such text"}), "x.yaml")
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "msiforge_ims0.c").write_text("int x;\n")
    with pytest.raises(InputError, match="find: matches 0 times in msiforge_ims0.c"):
        mutants.apply(m, tree)
    with pytest.raises(InputError, match="--only nope: no such mutant"):
        mutants.select(["nope"])


@pytest.mark.vm
@pytest.mark.build
def test_msiforge_mutants_kills_them_and_reports_one_that_does_not_build(tmp_path):
    import yaml

    broken = tmp_path / "broken-build.yaml"
    broken.write_text(yaml.safe_dump({"mutant": "broken-build", "summary": "not C", "module": "driver",
                                      "device": "ims0", "find": "\tunsigned int slot;\n\tint virq;\n",
                                      "replace": "\tthis is not C;\n"}))
    out = tmp_path / "m"
    proc = msiforge("mutants", "--only", "mask-does-nothing", "--only", "handler-counts-on-cpu0",
                    "--file", str(broken), "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = {o["name"]: o for o in json.loads((out / "mutants.json").read_text())}
    assert res["broken-build"]["status"] == "did-not-build" and "error:" in res["broken-build"]["detail"]
    assert res["mask-does-nothing"]["status"] == "killed" and "mask" in res["mask-does-nothing"]["killed_by"]
    assert res["handler-counts-on-cpu0"]["status"] == "killed"
    assert "affinity" in res["handler-counts-on-cpu0"]["killed_by"]
    assert "2 killed, 0 survived" in proc.stdout


@pytest.mark.vm
@pytest.mark.build
@pytest.mark.slow  # two churn boots of a debug kernel: about 9 minutes
def test_kmemleak_catches_one_leaked_object_per_group_on_a_debug_kernel(tmp_path):
    """The slab check cannot see 16 bytes per group; a kmemleak kernel's churn does, as its own verdict."""
    out = tmp_path / "m"
    proc = msiforge("mutants", "--only", "leaks-one-object-per-group", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (res,) = json.loads((out / "mutants.json").read_text())
    assert (res["status"], res["killed_by"], res["verdict"]) == ("killed", ["churn"], "kmemleak"), res
    assert res["detail"].startswith("unreferenced object 0x") and "[msiforge_ims0]" in res["detail"]
    # The leak is the mutated device's alone: the other device's check stays exact.
    ktap = (out / "leaks-one-object-per-group" / "k" / "ktap.txt").read_text()
    assert "kmemleak: no unreferenced object from msiforge_pmsi0\n" in ktap
    # The unmutated drivers passed churn on the same debug kernel with an exact zero.
    base = (out / "baseline" / "q35-ims" / "k" / "ktap.txt").read_text()
    assert "kmemleak: no unreferenced object from msiforge_ims0\n" in base
    assert "kmemleak: no unreferenced object from msiforge_pmsi0\n" in base
