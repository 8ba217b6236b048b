"""Kernel specs and their resolution against the Debian package index."""

import pytest

from msiforge import kernels
from msiforge.errors import SpecError
from msiforge.kspec import parse_spec


def _k(abi: str, flavour: str = "amd64") -> kernels.DebianKernel:
    return kernels.DebianKernel((kernels._abi_key(abi), flavour), abi, flavour)


INDEX = sorted([_k("6.1.0-47"), _k("6.1.0-56"), _k("6.1.0-56", "rt-amd64"), _k("6.1.0-50"),
                _k("6.12.107+deb12"), _k("6.12.117+deb12"), _k("6.12.113+deb12"), _k("6.12.117+deb12", "rt-amd64")])


@pytest.mark.parametrize("spec,release", [
    ("debian:6.12", "6.12.117+deb12-amd64"),
    ("debian:6.12.113", "6.12.113+deb12-amd64"),
    ("debian:6.1", "6.1.0-56-amd64"),
    ("debian:6.1.0-50", "6.1.0-50-amd64"),
    ("debian:6.1.0-56-rt", "6.1.0-56-rt-amd64"),
    ("debian:6.12-rt", "6.12.117+deb12-rt-amd64"),
])
def test_resolve(spec, release):
    assert kernels.resolve(spec, INDEX).release == release


@pytest.mark.parametrize("spec,message", [
    ("debian:6.1.0-99", "no matching Debian kernel package (available: 6.1.0-47, 6.1.0-50, 6.1.0-56)"),
    ("debian:6.12-cloud", "no matching Debian kernel package"),
    ("debian:5.10", "no matching Debian kernel package"),
])
def test_resolve_errors(spec, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        kernels.resolve(spec, INDEX)


@pytest.mark.parametrize("text", ["6.12", "debian:", "debian:six", "debian:6.12;id", "debian:6.12-foo", 612])
def test_bad_specs(text):
    with pytest.raises(SpecError):
        parse_spec(text)


def test_real_index_offers_both_series():
    releases = {k.release for k in kernels.index()}
    assert "6.1.0-56-amd64" in releases
    assert any(r.startswith("6.12.") for r in releases)
