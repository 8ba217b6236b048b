"""The guest scenarios are files, discovered by their headers; the script runs the board's, and fails closed."""

from __future__ import annotations

import dataclasses
import re

import pytest

from msiforge import board as boardmod
from msiforge.board import validate
from msiforge.generator import features, render, scenarios
from msiforge.generator.scenarios import ScenarioError

from helpers import REPO, default_board

GUEST = REPO / "templates" / "guest"
FUNCTION_RE = re.compile(r"^(scenario_\w+)\(\) \{", re.M)
TARGET = render.KernelTarget("6.12.0-test", features.Features(msi_parent=True, pci_ims=False,
                                                               platform_msi_group=False))


def _script(tmp_path, board) -> str:
    return (render.generate(board, [TARGET], tmp_path / "gen")["6.12.0-test"] / "run.sh").read_text()


def test_board_constants_come_from_the_discovered_files():
    files = sorted(p.name[:-len(".sh.j2")] for p in (GUEST / "scenarios").glob("*.sh.j2"))
    assert sorted(scenarios.names()) == files
    assert boardmod.SCENARIOS == scenarios.names()
    assert boardmod.TWO_CPU_SCENARIOS == scenarios.two_cpu()
    assert boardmod.DEFAULT_SCENARIOS == scenarios.defaults()
    # What the headers declare for the scenarios that were a hand-kept list before the files.
    before = ["domain-layout", "deliver", "mask", "affinity", "groups", "stress", "churn", "rt", "unload"]
    assert [s for s in scenarios.names() if s in before] == before
    assert {"affinity", "stress"} <= set(scenarios.two_cpu())
    assert scenarios.defaults() == ("deliver", "mask", "affinity", "groups", "unload")
    assert scenarios.by_name()["rt"].flavour == "rt"
    assert all(scenarios.summaries().values())


def test_every_scenario_has_its_function_in_its_own_file_and_the_base_script_none():
    for s in scenarios.discover():
        text = (GUEST / "scenarios" / f"{s.name}.sh.j2").read_text()
        assert FUNCTION_RE.findall(text) == [s.function], s.path
    assert FUNCTION_RE.findall((GUEST / "run.sh.j2").read_text()) == []


def test_a_board_with_every_scenario_renders_every_function_in_order(tmp_path):
    board = dataclasses.replace(validate(default_board(), "b.yaml"), scenarios=scenarios.names())
    script = _script(tmp_path, board)
    assert FUNCTION_RE.findall(script) == [s.function for s in scenarios.discover()]
    assert f'STEPS="load {" ".join(scenarios.names())}"' in script
    assert "{#" not in script and "# scenario: " not in script  # the headers stay out of the script


def test_a_board_carries_only_the_scenarios_it_runs(tmp_path):
    board = validate(dict(default_board(), scenarios=["mask", "deliver"]), "b.yaml")
    script = _script(tmp_path, board)
    assert FUNCTION_RE.findall(script) == ["scenario_deliver", "scenario_mask"]  # in run order
    assert "wait_hits() {" in script  # mask's own helper comes with it
    assert "slab_snapshot() {" not in script  # churn's does not
    assert "move_to() {" in script and "msi_dest_ok() {" in script  # shared helpers are in the base script


def test_an_unknown_step_fails_in_the_rendered_script(tmp_path):
    """The step loop checks the function exists; a name with no function is a failure, never 'ok'."""
    board = dataclasses.replace(validate(default_board(), "b.yaml"), scenarios=("deliver", "no-such-step"))
    script = _script(tmp_path, board)
    assert "scenario_no_such_step() {" not in script and "no-such-step) FN=scenario_no_such_step ;;" in script
    loop = script[script.index("for step in $STEPS"):]
    assert 'command -v "$FN"' in loop and "unknown scenario" in loop


GOOD = """{#
# scenario: teleport
# order: 55
# cpus: 2
# default: no
# summary: a vector jumps
#}
scenario_teleport() { # a vector jumps
	dev=$1
}
"""


def test_a_good_header_parses():
    s = scenarios.parse(GOOD, "x/teleport.sh.j2")
    assert (s.name, s.order, s.cpus, s.default, s.summary, s.flavour) == ("teleport", 55, 2, False,
                                                                          "a vector jumps", None)
    assert (s.function, s.template) == ("scenario_teleport", "guest/scenarios/teleport.sh.j2")
    assert scenarios.parse(GOOD.replace("# cpus: 2\n", "# cpus: 2\n# flavour: rt\n"), "teleport.sh.j2").flavour == "rt"


@pytest.mark.parametrize("change,field,reason", [
    (lambda t: t.replace("{#\n", "", 1), "<header>", "must start with a header"),
    (lambda t: "\n" + t, "<header>", "must start with a header"),
    (lambda t: t.replace("#}\n", "", 1), "<header>", "no line '#}' ends the header"),
    (lambda t: t.replace("# order: 55", "#order: 55"), "<header line 3>", "is not '# key: value'"),
    (lambda t: t.replace("# order: 55", "# order:55"), "<header line 3>", "is not '# key: value'"),
    (lambda t: t.replace("# order: 55", "# order: "), "<header line 3>", "is not '# key: value'"),
    (lambda t: t.replace("# order: 55", "order: 55"), "<header line 3>", "is not '# key: value'"),
    (lambda t: t.replace("# order: 55", "# Order: 55"), "<header line 3>", "is not '# key: value'"),
    (lambda t: t.replace("# order: 55", "# order: 55\n"), "<header line 4>", "is not '# key: value'"),
    (lambda t: t.replace("# order: 55", "# colour: blue"), "colour", "unknown field"),
    (lambda t: t.replace("# order: 55", "# order: 55\n# order: 56"), "order", "given twice (header line 4)"),
    (lambda t: t.replace("# order: 55\n", ""), "order", "missing"),
    (lambda t: t.replace("# summary: a vector jumps\n", ""), "summary", "missing"),
    (lambda t: t.replace("# scenario: teleport", "# scenario: beam"), "scenario",
     "'beam' is not the file's name ('teleport')"),
    (lambda t: t.replace("# scenario: teleport", "# scenario: Teleport"), "scenario", "is not a name"),
    (lambda t: t.replace("# order: 55", "# order: 055"), "order", "'055' is not an integer in 1..999"),
    (lambda t: t.replace("# order: 55", "# order: 0"), "order", "is not an integer in 1..999"),
    (lambda t: t.replace("# order: 55", "# order: 1000"), "order", "is not an integer in 1..999"),
    (lambda t: t.replace("# order: 55", "# order: 5.5"), "order", "is not an integer in 1..999"),
    (lambda t: t.replace("# cpus: 2", "# cpus: 3"), "cpus", "'3' is not 1 or 2"),
    (lambda t: t.replace("# default: no", "# default: true"), "default", "'true' is not yes or no"),
    (lambda t: t.replace("# cpus: 2", "# cpus: 2\n# flavour: debug"), "flavour", "'debug' is not one of rt"),
    (lambda t: t.replace("a vector jumps\n#}", "x" * 201 + "\n#}"), "summary", "at most 200 characters"),
    (lambda t: t.replace("scenario_teleport()", "scenario_beam()"), "<body>",
     "must define exactly one scenario function, scenario_teleport() { (found: scenario_beam)"),
    (lambda t: t + "scenario_other() {\n}\n", "<body>",
     "(found: scenario_teleport, scenario_other)"),
    (lambda t: t.replace("scenario_teleport() {", "teleport() {"), "<body>", "(found: none)"),
])
def test_a_malformed_header_names_the_file_and_the_field(change, field, reason):
    path = "templates/guest/scenarios/teleport.sh.j2"
    with pytest.raises(ScenarioError) as exc:
        scenarios.parse(change(GOOD), path)
    assert str(exc.value).startswith(f"{path}: {field}: "), str(exc.value)
    assert reason in str(exc.value)
    assert (exc.value.path, exc.value.field) == (path, field)


def test_discovery_orders_by_header_and_rejects_a_shared_order(tmp_path):
    (tmp_path / "teleport.sh.j2").write_text(GOOD)
    (tmp_path / "beam.sh.j2").write_text(GOOD.replace("teleport", "beam").replace("55", "7"))
    (tmp_path / "notes.txt").write_text("not a scenario")
    assert [s.name for s in scenarios.discover_in(tmp_path, "d")] == ["beam", "teleport"]
    (tmp_path / "zap.sh.j2").write_text(GOOD.replace("teleport", "zap"))
    with pytest.raises(ScenarioError, match=r"^d/zap.sh.j2: order: 55 is also the order of d/teleport.sh.j2$"):
        scenarios.discover_in(tmp_path, "d")
    (tmp_path / "zap.sh.j2").write_bytes(b"{#\n# summary: \xff\n#}\n")
    with pytest.raises(ScenarioError, match=r"^d/zap.sh.j2: <file>: not UTF-8 text"):
        scenarios.discover_in(tmp_path, "d")


def test_an_empty_scenario_directory_is_an_error(tmp_path):
    with pytest.raises(ScenarioError, match=r"^d: <directory>: no scenario files"):
        scenarios.discover_in(tmp_path, "d")
