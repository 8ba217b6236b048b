"""The guest script and the board's scenario list are one list, and the script fails closed."""

from __future__ import annotations

import re

from msiforge.board import SCENARIOS
from msiforge.generator import features, render
from msiforge.board import validate

from helpers import REPO, default_board


def test_every_scenario_has_a_guest_function_and_every_function_a_scenario():
    text = (REPO / "templates" / "guest" / "run.sh.j2").read_text()
    functions = set(re.findall(r"^scenario_(\w+)\(\) \{", text, re.M))
    assert functions == {s.replace("-", "_") for s in SCENARIOS}


def test_an_unknown_step_fails_in_the_rendered_script(tmp_path):
    """The step loop checks the function exists; a name with no function is a failure, never 'ok'."""
    board = validate(default_board(), "b.yaml")
    target = render.KernelTarget("6.12.0-test", features.Features(msi_parent=True, pci_ims=False,
                                                                   platform_msi_group=False))
    script = (render.generate(board, [target], tmp_path / "gen")["6.12.0-test"] / "run.sh").read_text()
    loop = script[script.index("for step in $STEPS"):]
    assert 'command -v "$fn"' in loop and "unknown scenario" in loop
