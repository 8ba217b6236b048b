"""The command line is one shape: every command takes its board and its kernels the same way."""

from __future__ import annotations

import pytest

from msiforge import cli
from msiforge.errors import InputError

BOARD_COMMANDS = {"run": [], "bisect": ["--scenario", "mask"], "bisect-run": ["--scenario", "mask"],
                  "generate": ["-o", "x"], "validate": [], "plan": []}
KERNEL_COMMANDS = {"run": [], "bisect": ["--scenario", "mask"], "generate": ["-o", "x"], "plan": []}


@pytest.mark.parametrize("command", sorted(BOARD_COMMANDS))
def test_every_command_takes_the_board_positionally_or_with_board(command):
    extra = BOARD_COMMANDS[command]
    a = cli.parser().parse_args([command, "virt-its", *extra])
    b = cli.parser().parse_args([command, "--board", "virt-its", *extra])
    assert cli.board_arg(a) == cli.board_arg(b) == "virt-its"
    assert cli.board_arg(cli.parser().parse_args([command, *extra])) is None  # the default board
    with pytest.raises(InputError, match="two boards given: q35-ims and --board virt-its"):
        cli.board_arg(cli.parser().parse_args([command, "q35-ims", "--board", "virt-its", *extra]))


@pytest.mark.parametrize("command", sorted(KERNEL_COMMANDS))
def test_every_command_takes_kernels_repeated_or_comma_separated(command):
    extra = KERNEL_COMMANDS[command]
    want = ["debian:6.1.0-56", "debian:6.12", "source:6.12"]
    forms = [["--kernel", "debian:6.1.0-56", "-k", "debian:6.12", "--kernel", "source:6.12"],
             ["--kernel", "debian:6.1.0-56,debian:6.12", "--kernel", "source:6.12"],
             ["--kernels", "debian:6.1.0-56,debian:6.12,source:6.12"]]
    for form in forms:
        assert cli.parser().parse_args([command, *form, *extra]).kernels == want
