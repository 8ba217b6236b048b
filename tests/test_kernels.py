"""Kernel specs and their resolution against the Debian suites' package index."""

import pytest

from msiforge import kernels
from msiforge.errors import SpecError
from msiforge.kspec import parse_spec


def _k(abi: str, flavour: str = "amd64", suite: str = "bookworm", version: str = "") -> kernels.DebianKernel:
    return kernels.make_kernel(abi, flavour, suite, version)


INDEX = sorted([_k("6.1.0-47", version="6.1.170-3"), _k("6.1.0-56", version="6.1.192-2"),
                _k("6.1.0-56", "rt-amd64", version="6.1.192-2"), _k("6.1.0-50", version="6.1.176-1"),
                _k("6.12.107+deb12"), _k("6.12.117+deb12"), _k("6.12.113+deb12"), _k("6.12.117+deb12", "rt-amd64"),
                _k("6.12.117+deb13", suite="trixie"), _k("6.12.118+deb13", suite="trixie-security"),
                _k("7.2.12+deb13", suite="trixie-backports", version="7.2.12-1~bpo13+1"),
                _k("7.2.13+deb14", suite="sid", version="7.2.13-1"),
                _k("7.3", suite="experimental", version="7.3~rc7-1~exp1"),
                _k("7.3.4+deb13", suite="trixie-backports", version="7.3.4-1~bpo13+1"),
                _k("7.3.4+deb13", "rt-amd64", suite="trixie-backports", version="7.3.4-1~bpo13+1")])


@pytest.mark.parametrize("spec,release", [
    ("debian:6.12", "6.12.118+deb13-amd64"),
    ("debian:6.12.117", "6.12.117+deb13-amd64"),  # the newest ABI of that upstream release
    ("debian:6.12.117+deb12", "6.12.117+deb12-amd64"),
    ("debian:6.12.113", "6.12.113+deb12-amd64"),
    ("debian:6.12@bookworm", "6.12.117+deb12-amd64"),
    ("debian:6.1", "6.1.0-56-amd64"),
    ("debian:6.1.0-50", "6.1.0-50-amd64"),
    ("debian:6.1.0-56-rt", "6.1.0-56-rt-amd64"),
    ("debian:6.12-rt", "6.12.117+deb12-rt-amd64"),
    ("debian:7.3", "7.3.4+deb13-amd64"),  # a release, never the candidate
    ("debian:7.3-rc7", "7.3-amd64"),
    ("debian:7.3-rc", "7.3-amd64"),
    ("debian:7.3-rt", "7.3.4+deb13-rt-amd64"),
    ("debian:7.2", "7.2.13+deb14-amd64"),
    ("debian:7.2@trixie-backports", "7.2.12+deb13-amd64"),
])
def test_resolve(spec, release):
    assert kernels.resolve(spec, INDEX).release == release


def test_version_order_spans_suites_and_candidates():
    """7.3~rc7 sorts after 7.2.13 and before 7.3.4; 6.1 ABIs by their upstream version."""
    order = [k.release for k in INDEX if k.flavour == "amd64"]
    assert order.index("7.2.13+deb14-amd64") < order.index("7.3-amd64") < order.index("7.3.4+deb13-amd64")
    assert order[:3] == ["6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-56-amd64"]
    assert order.index("6.12.117+deb12-amd64") < order.index("6.12.117+deb13-amd64")


def test_ranges_and_all_expand_to_exact_specs():
    got = kernels.expand_specs(["debian:7.2..7.3"], INDEX)
    assert got == ["debian:7.2.12+deb13", "debian:7.2.13+deb14", "debian:7.3-rc7", "debian:7.3.4+deb13"]
    assert [kernels.resolve(s, INDEX).release for s in got][-1] == "7.3.4+deb13-amd64"
    every = kernels.expand("debian:all", INDEX)
    assert len(every) == len([k for k in INDEX if k.flavour == "amd64"])
    assert [k.release for k in kernels.expand("debian:all-rt", INDEX)] == \
        ["6.1.0-56-rt-amd64", "6.12.117+deb12-rt-amd64", "7.3.4+deb13-rt-amd64"]
    assert [k.release for k in kernels.expand("debian:6.1.0-56..6.12.107", INDEX)] == \
        ["6.1.0-56-amd64", "6.12.107+deb12-amd64"]
    # A plain spec in the list stays as written; duplicates go.
    assert kernels.expand_specs(["debian:7.3", "debian:7.3"], INDEX) == ["debian:7.3"]


@pytest.mark.parametrize("spec,message", [
    ("debian:6.1.0-99", "no matching Debian kernel with headers (available: 6.1.0-47, 6.1.0-50, 6.1.0-56)"),
    ("debian:6.12-cloud", "no matching Debian kernel with headers"),
    ("debian:5.10", "no matching Debian kernel with headers"),
    ("debian:7.3-rc6", "no matching Debian kernel with headers (available: 7.3-rc7, 7.3.4+deb13)"),
    ("debian:7.2@bookworm", "no matching Debian kernel with headers in bookworm"),
])
def test_resolve_errors(spec, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        kernels.resolve(spec, INDEX)


def test_a_set_is_not_one_kernel():
    with pytest.raises(SpecError, match="names several kernels"):
        kernels.resolve("debian:all", INDEX)


@pytest.mark.parametrize("text", ["6.12", "debian:", "debian:six", "debian:6.12;id", "debian:6.12-foo", 612,
                                  "debian:7.3@nosuch", "debian:6.1..", "debian:6.1-rt..7.3-cloud", "debian:all-foo",
                                  "debian:7.3-rc7.1", "debian:6.12.117+debian"])
def test_bad_specs(text):
    with pytest.raises(SpecError):
        parse_spec(text)


def test_real_index_spans_the_suites():
    """msiforge's own apt state: bookworm's 6.1, trixie's 6.12, 7.x from backports, sid and experimental."""
    by_suite = {}
    for k in kernels.index():
        by_suite.setdefault(k.suite, set()).add(k.release)
    assert "6.1.0-56-amd64" in by_suite["bookworm-security"]
    assert any(r.startswith("6.12.") and "+deb13" in r for r in by_suite["trixie"])
    assert any(r.startswith("7.3.") for r in by_suite["trixie-backports"])
    assert "7.3-amd64" in by_suite["experimental"]
    assert all(k.usable for k in kernels.index())
    signed_only = [k for k in kernels.index(all_kernels=True) if not k.usable]
    assert any(k.release.startswith("6.16.") for k in signed_only)  # backports keeps only signed images
