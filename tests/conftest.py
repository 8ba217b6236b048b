"""Fixtures: the cache location and fetched kernels; the order of the tests and the background kernel builds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import KERNELS


#: Every program this session (and the msiforge processes it starts) executes is logged here
#: when the registry lacks it (msiforge/hostprogs.py): the session fails on any.
_AUDIT = Path(os.environ.setdefault("MSIFORGE_AUDIT_PROGRAMS", f"/tmp/msiforge-audit-{os.getpid()}.log"))
_AUDIT.unlink(missing_ok=True)
import msiforge  # noqa: E402,F401  (installs the audit hook: MSIFORGE_AUDIT_PROGRAMS is set)


@pytest.fixture(scope="session", autouse=True)
def _programs_are_registered():
    yield
    logged = _AUDIT.read_text() if _AUDIT.exists() else ""
    assert logged == "", f"programs run without being in msiforge/hostprogs.py:\n{logged}"


def _wanted_kernels(item: pytest.Item) -> list[str]:
    """The ``SPEC@ARCH`` kernels a test's ``source_kernels`` markers name (arch x86_64 when none)."""
    return [k if "@" in k else f"{k}@x86_64" for m in item.iter_markers("source_kernels") for k in m.args]


@pytest.hookimpl(trylast=True)  # after -m / -k deselection: only the tests that will run
def pytest_collection_modifyitems(config, items):
    """Tests that need a source kernel built run after the others, which leaves time to build them.

    tests/prebuild.py builds those kernels in the background meanwhile, in the
    order the tests need them, on the CPU the other tests leave idle.
    """
    wanted = [(it, _wanted_kernels(it)) for it in items]
    items[:] = [it for it, kernels in wanted if not kernels] + [it for it, kernels in wanted if kernels]
    config.stash[_PREBUILD] = _build_order(list(dict.fromkeys(k for _, kernels in wanted for k in kernels)))


def _build_order(kernels: list[str]) -> list[str]:
    """``kernels`` in the order the tests need them, except that the cheap ones go last.

    A kernel of the same series, arch and debug setting as an earlier one differs from it only in a
    patch series: it reuses that one's objects from ccache (about 100 s here, against 300-500 s for
    a whole build).  Built last, it leaves the long builds an earlier start; a test that needs it
    sooner builds it itself meanwhile (in its slot, which the builder then finds built).
    """
    from msiforge.kspec import parse_spec

    seen, first, cheap = set(), [], []
    for k in kernels:
        spec, _, arch = k.partition("@")
        s = parse_spec(spec)
        kind = (s.major, s.minor, arch, s.debug)
        (cheap if kind in seen else first).append(k)
        seen.add(kind)
    return first + cheap


_PREBUILD = pytest.StashKey[list]()
_PREBUILD_LOG = pytest.StashKey[Path]()


@pytest.fixture(scope="session", autouse=True)
def _prebuild_source_kernels(request, tmp_path_factory, _cache_env):
    """Start tests/prebuild.py for the selected tests' source kernels (MSIFORGE_PREBUILD=0: do not)."""
    import signal
    import subprocess
    import sys

    kernels = request.config.stash.get(_PREBUILD, [])
    if not kernels or os.environ.get("MSIFORGE_PREBUILD") == "0":
        yield
        return
    log = tmp_path_factory.getbasetemp() / "prebuild.log"
    request.config.stash[_PREBUILD_LOG] = log
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("prebuild.py")), str(log), *kernels],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield
    if proc.poll() is None:  # the tests built what was left themselves, or stopped early
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def pytest_terminal_summary(terminalreporter, config):
    """One line per kernel the background builder took: how it ended and its seconds."""
    log = config.stash.get(_PREBUILD_LOG, None)
    if log is not None and log.exists():
        for line in log.read_text().splitlines():
            terminalreporter.write_line("background build: " + line.replace("\t", "  "))


@pytest.fixture(scope="session", autouse=True)
def _cache_env():
    # Tests share the user's cache (kernels are large); CI may point it elsewhere.
    os.environ.setdefault("MSIFORGE_CACHE", str(Path.home() / ".cache" / "msiforge"))


@pytest.fixture(scope="session")
def fetched_kernels():
    """The Debian kernels of KERNELS, fetched into the cache (downloads once)."""
    from msiforge import kernels

    available = kernels.index()
    return {spec: kernels.fetch(spec, available) for spec in KERNELS}


@pytest.fixture(scope="session", autouse=True)
def _no_qemu_left_behind(tmp_path_factory):
    """After the suite, no QEMU started for this session's tests may still run."""
    import subprocess

    base = str(tmp_path_factory.getbasetemp())
    yield
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True).stdout
    ours = [line for line in out.splitlines() if base in line]
    assert not ours, f"QEMU processes left behind: {ours}"


@pytest.fixture(scope="session", autouse=True)
def _every_kcidb_json_is_valid(tmp_path_factory):
    """After the suite, every kcidb.json any test wrote (runs, bisects, failures, merges) passes kcidb-io's schema."""
    base = tmp_path_factory.getbasetemp()
    yield
    import json

    from kcidb_io.schema import LATEST

    bad = []
    for path in sorted(base.rglob("kcidb.json")):
        try:
            LATEST.validate(json.loads(path.read_text()))
        except Exception as exc:  # noqa: BLE001 - every failure is reported, with its file
            bad.append(f"{path}: {str(exc).splitlines()[0]}")
    assert not bad, "kcidb.json files kcidb-io rejects:\n" + "\n".join(bad)
