"""Every config string that reaches C, a shell, QEMU or a path is checked; random input fails cleanly."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import default_board
from msiforge.board import read_yaml, validate
from msiforge.errors import BoardError
from msiforge.generator import features, render

HOSTILE = ["a$(reboot)", "a;rm -rf /", "../../etc", "a,addr=0x3", "a\nb", "a b", "a*/", "A", "a'b", 'a"b', "a`id`"]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", ["name", "device"])
def test_hostile_names_are_rejected(value, field):
    data = default_board()
    if field == "name":
        data["name"] = value
    else:
        data["devices"][0]["name"] = value
    with pytest.raises(BoardError, match="is not"):
        validate(data, "b.yaml")


@pytest.mark.parametrize("spec", ["debian:6.12;reboot", "debian:6.12 $(id)", "debian:6.12,x", "debian:../6.12"])
def test_hostile_kernel_specs_are_rejected(spec):
    data = default_board()
    data["kernels"] = [spec]
    with pytest.raises(BoardError, match=r"kernels\[0\]"):
        validate(data, "b.yaml")


def test_description_is_escaped_in_c(tmp_path):
    evil = "x */ int pwned; /* \n#include </etc/passwd>\n$(reboot) `id` 'q' \"dq\" \\ \x07"
    data = default_board()
    data["description"] = evil
    board = validate(data, "b.yaml")
    target = render.KernelTarget("6.12.0-test", features.Features(msi_parent=True, pci_ims=False,
                                                                   platform_msi_group=False))
    tree = render.generate(board, [target], tmp_path / "gen")["6.12.0-test"]
    text = (tree / "msiforge_ims0.c").read_text()
    header = text.split("*/", 1)[0]  # the first comment must hold the whole description
    assert "int pwned" in header and "* / int pwned; / *" in header
    assert not any(line.startswith("#include </etc") for line in text.splitlines())
    assert "\x07" not in text
    # The description is for the C header only: the guest script is exactly the one a plain board gets.
    plain = render.generate(validate(default_board(), "b.yaml"), [target], tmp_path / "plain")["6.12.0-test"]
    assert (tree / "run.sh").read_text() == (plain / "run.sh").read_text()


def test_generate_is_atomic_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "gen"
    out.mkdir()
    (out / "keep").write_text("previous output\n")
    board = validate(default_board(), "b.yaml")
    target = render.KernelTarget("6.12.0-test", features.Features(True, False, False))

    def boom(*a, **k):
        raise RuntimeError("template exploded")

    monkeypatch.setattr(render, "render_tree", boom)
    with pytest.raises(RuntimeError):
        render.generate(board, [target], out)
    assert (out / "keep").read_text() == "previous output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"]


_KEYS = ["name", "description", "arch", "machine", "cpus", "memory", "accel", "iommu", "kernels", "devices",
         "scenarios", "fires", "slots", "storage", "mask", "update", "groups", "emulation", "bogus"]
_SCALARS = (st.none() | st.booleans() | st.integers(-3, 5000) | st.floats(allow_nan=False, allow_infinity=False)
            | st.sampled_from(["q35", "ims", "source", "debian:6.12", "1G", "x86_64", "intel-ir", "deliver", "d0"])
            | st.text(max_size=12))
_DOCS = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(_KEYS), c,
                                                                                   max_size=8), max_leaves=25)


def _load_text(text: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b.yaml"
        path.write_text(text)
        try:
            return validate(read_yaml(path, "b.yaml"), "b.yaml")
        except BoardError as exc:
            assert exc.path == "b.yaml" and exc.field and exc.reason and "\n" not in str(exc)
            return None


def test_a_key_that_is_not_a_string_names_the_document():
    """YAML '?' is a mapping with a null key (found by the random-text test on a fresh machine)."""
    with tempfile.TemporaryDirectory() as tmp, pytest.raises(BoardError) as exc:
        (Path(tmp) / "b.yaml").write_text("?")
        validate(read_yaml(Path(tmp) / "b.yaml", "b.yaml"), "b.yaml")
    assert str(exc.value) == "b.yaml: <document>: keys must be strings, got None"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCS)
def test_random_documents_give_clean_errors_or_boards(doc):
    _load_text(yaml.safe_dump(doc))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_gives_clean_errors(text):
    _load_text(text)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["slots", "mask", "update", "storage", "groups", "name"]), _SCALARS))
def test_mutated_devices_give_clean_errors_or_boards(changes):
    data = default_board()
    data["devices"][0].update(changes)
    board = _load_text(yaml.safe_dump(data))
    if board is not None:
        dev = board.devices[0]
        assert 1 <= dev.slots <= 2048 and sum(dev.groups) <= dev.slots
