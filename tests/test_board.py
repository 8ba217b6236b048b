"""Board validation: valid boards load; invalid ones give one clean line, exit 2, no output."""

from __future__ import annotations

import copy

import pytest

from helpers import default_board, msiforge, write_board
from msiforge.board import load_board, validate
from msiforge.errors import BoardError


def test_default_board_is_built_in_and_valid():
    board = load_board(None)
    assert board.name == "q35-ims"
    assert [d.name for d in board.devices] == ["ims0", "pmsi0"]
    assert board.scenarios == ("deliver", "mask", "affinity", "groups", "unload")
    assert [k.text for k in board.kernels] == ["debian:6.12"]
    assert board.devices[1].pci_slot == 0x11


def test_defaults_fill_optional_fields():
    board = validate({"name": "tiny", "devices": [{"name": "d0"}]}, "tiny.yaml")
    dev = board.devices[0]
    assert (dev.storage, dev.slots, dev.mask, dev.update, dev.groups) == ("ims", 32, "source", "direct", (32,))
    assert (board.machine, board.iommu, board.cpus, board.memory_mib, board.fires) == ("q35", "intel-ir", 2, 1024, 3)


def _mutate(path: str, value) -> dict:
    data = copy.deepcopy(default_board())
    node = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    last = keys[-1]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()

# (mutation path, new value, expected field in the message, expected words of the reason)
INVALID = [
    ("name", "Q35_bad", "name", "is not a board name"),
    ("name", 42, "name", "must be a string"),
    ("name", _DELETE, "name", "missing"),
    ("cpus", "two", "cpus", "must be an integer"),
    ("cpus", 0, "cpus", "must be in 1..8"),
    ("cpus", True, "cpus", "got a boolean"),
    ("memory", "1T", "memory", "is not a size"),
    ("memory", "64M", "memory", "between 256M and 16G"),
    ("accel", "hvf", "accel", "is not one of auto, kvm, tcg"),
    ("iommu", "amd-vi", "iommu", "is not one of none, intel-ir"),
    ("machine", "pc", "iommu", "needs machine: q35"),
    ("arch", "riscv64", "arch", "is not one of"),
    ("kernels", "debian:6.12", "kernels", "must be a list"),
    ("kernels", ["linux-6.12"], "kernels[0]", "expected 'debian:'"),
    ("kernels", ["debian:6.x"], "kernels[0]", "not a Debian kernel version"),
    ("devices", [], "devices", "must have 1..16 entries"),
    ("devices", _DELETE, "devices", "missing"),
    ("devices.0.slots", 0, "devices[0].slots", "must be in 1..2048, got 0"),
    ("devices.0.slots", 4096, "devices[0].slots", "must be in 1..2048"),
    ("devices.0.slots", "32", "devices[0].slots", "must be an integer"),
    ("devices.1.name", "ims0", "devices[1].name", "duplicate device name 'ims0'"),
    ("devices.0.name", "0ims", "devices[0].name", "is not a C identifier"),
    ("devices.0.name", "ims-0", "devices[0].name", "is not a C identifier"),
    ("devices.0.name", "ims0; rm -rf /", "devices[0].name", "is not a C identifier"),
    ("devices.0.name", "a" * 17, "devices[0].name", "is not a C identifier"),
    ("devices.0.storage", "msix", "devices[0].storage", "is not one of ims, platform-msi, pci-msi"),
    ("devices.0.mask", "both", "devices[0].mask", "is not one of source, parent, none"),
    ("devices.0.update", "lazy", "devices[0].update", "is not one of direct, queued"),
    ("devices.0.emulation", "e1000", "devices[0].emulation", "is not one of edu"),
    ("devices.0.groups", [16, 32], "devices[0].groups", "add up to 48, more than the 32 slots"),
    ("devices.0.groups", [0], "devices[0].groups[0]", "must be in 1..2048"),
    ("devices.0.colour", "red", "devices[0].colour", "unknown field"),
    ("devices.0", "ims0", "devices[0]", "must be a mapping"),
    ("scenarios", ["deliver", "teleport"], "scenarios[1]", "is not one of"),
    ("scenarios", ["mask", "mask"], "scenarios[1]", "duplicate scenario"),
    ("fires", 0, "fires", "must be in 1..1000"),
    ("fires", 2.5, "fires", "got a number"),
    ("extra", 1, "extra", "unknown field"),
]


@pytest.mark.parametrize("path,value,field,reason", INVALID, ids=[f"{p}={v!r}"[:40] for p, v, _, _ in INVALID])
def test_invalid_board_is_one_clean_line(tmp_path, path, value, field, reason):
    board = write_board(tmp_path, _mutate(path, value))
    out = tmp_path / "out"
    proc = msiforge("generate", str(board), "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"msiforge: error: {board}: {field}: "), lines[0]
    assert reason in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists()


def test_single_cpu_board_cannot_ask_for_affinity():
    data = _mutate("cpus", 1)
    with pytest.raises(BoardError, match="scenarios: 'affinity' moves vectors between CPU0 and CPU1"):
        validate(data, "b.yaml")


def test_pci_msi_needs_exactly_one_slot():
    data = default_board()
    data["devices"] = [{"name": "m", "storage": "pci-msi", "slots": 4}]
    with pytest.raises(BoardError, match=r"devices\[0\].slots: storage pci-msi .* exactly 1 message"):
        validate(data, "b.yaml")


@pytest.mark.parametrize("content,field,reason", [
    ("", "<file>", "empty board file"),
    ("name: [unclosed\n", "<yaml>", "line 2, column 1"),
    ("name: a\nname: b\n", "<yaml>", "duplicate key 'name'"),
    ("- just\n- a list\n", "<board>", "must be a mapping"),
    ("\tname: tab\n", "<yaml>", "line 1"),
])
def test_malformed_files(tmp_path, content, field, reason):
    path = tmp_path / "b.yaml"
    path.write_text(content)
    proc = msiforge("validate", str(path))
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"msiforge: error: {path}: {field}: ")
    assert reason in line


def test_missing_binary_and_directory(tmp_path):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\x7fELF\x00\x01\x02")
    for path, reason in [(tmp_path / "nope.yaml", "no such file"), (tmp_path, "is a directory"),
                         (binary, "binary file")]:
        proc = msiforge("validate", str(path))
        assert proc.returncode == 2
        assert proc.stderr.strip() == f"msiforge: error: {path}: <file>: " + proc.stderr.strip().split(": <file>: ")[1]
        assert reason in proc.stderr


def test_validate_describes_the_board():
    proc = msiforge("validate")
    assert proc.returncode == 0, proc.stderr
    assert "device ims0: edu at 00:10.0, ims, 32 slot(s), mask source, update direct" in proc.stdout


def test_bad_kernel_spec_on_the_command_line(tmp_path):
    proc = msiforge("run", "--kernel", "debian:9.99", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("msiforge: error: kernel spec 'debian:9.99': no matching Debian kernel")
    assert not (tmp_path / "r").exists()


def test_unknown_scenario_on_the_command_line(tmp_path):
    proc = msiforge("run", "--scenario", "teleport", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "unknown scenario" in proc.stderr and not (tmp_path / "r").exists()
