"""Fixtures: the cache location and fetched kernels."""

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
