"""Debian suites msiforge reads kernels from, each with its own apt state in the cache.

The host's apt sources are never read for this and never changed: msiforge
takes only the mirror's address from them (or ``$MSIFORGE_MIRROR``) and keeps,
per suite, a private apt configuration, source list and package lists under
``<cache>/apt/<suite>/``.  apt is pointed at it with ``APT_CONFIG`` (read
before anything under /etc/apt), so the host's apt.conf.d settings cannot
leak in either.  Signatures are checked with the Debian archive keyring.

Some suites on a mirror may be past their ``Valid-Until`` (sid and
experimental stop being refreshed on frozen mirrors).  apt is told to accept
them, and msiforge itself warns, once per suite and process, whenever a
kernel from an expired index is listed or used.

Each suite's kernel-related package records (kernel images, headers, kbuild,
base, modules, linux-source, compilers, pahole) are kept as a small JSON
index beside its lists, rebuilt when the lists change.
"""

from __future__ import annotations

import datetime
import email.utils
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import debs, hostprogs, progress
from .cache import atomic_write, cache_root, locked
from .errors import EnvironmentProblem

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

#: Package names kept in a suite's index: what kernels, build roots and source trees need.
_WANTED = re.compile(r"^(?:linux-(?:image|binary-unsigned|headers|kbuild|base|modules|source)-\d\S*"
                     r"|gcc-\d+|gcc-\d+-for-host|pahole"
                     # vmtests/newer_qemu.py: a newer QEMU than the host's, unpacked into the cache
                     r"|qemu-system-(?:x86|arm|ppc|common|data)|seabios)$")

#: How long a suite's lists are used before ``apt-get update`` runs again (seconds).
DEFAULT_TTL = 24 * 3600


@dataclass(frozen=True)
class Suite:
    """One suite of the Debian archive: its ``dists/`` name and which archive serves it."""

    name: str
    archive: str  # "debian" | "debian-security"
    #: The Debian release the suite belongs to (its packages' ``+debNN`` and compilers).
    release: str


#: Every suite msiforge reads, in the order ties between identical packages are broken.
SUITES: tuple[Suite, ...] = (
    Suite("bookworm", "debian", "bookworm"),
    Suite("bookworm-security", "debian-security", "bookworm"),
    Suite("bookworm-backports", "debian", "bookworm"),
    Suite("trixie", "debian", "trixie"),
    Suite("trixie-security", "debian-security", "trixie"),
    Suite("trixie-backports", "debian", "trixie"),
    Suite("forky", "debian", "forky"),
    Suite("sid", "debian", "sid"),
    Suite("experimental", "debian", "sid"),
)
BY_NAME = {s.name: s for s in SUITES}


def active() -> tuple[Suite, ...]:
    """The suites msiforge indexes: all of ``SUITES``, or those ``$MSIFORGE_SUITES`` names (comma-separated)."""
    names = [n.strip() for n in os.environ.get("MSIFORGE_SUITES", "").split(",") if n.strip()]
    if not names:
        return SUITES
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        from .errors import InputError

        raise InputError(f"MSIFORGE_SUITES: unknown suite {unknown[0]!r} (known: {', '.join(BY_NAME)})")
    return tuple(s for s in SUITES if s.name in names)


def get(name: str) -> Suite:
    """The suite called ``name`` (a programming error if unknown)."""
    return BY_NAME[name]


def _host_sources() -> list[dict[str, str]]:
    """The host's deb822 and one-line apt sources, as stanzas (read only)."""
    stanzas: list[dict[str, str]] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for block in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields = debs.control_fields(block)
            if fields:
                stanzas.append(fields)
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
            if m:
                stanzas.append({"Types": "deb", "URIs": m[1], "Suites": m[2]})
    return stanzas


def mirrors() -> dict[str, str]:
    """archive name -> base URL, from ``$MSIFORGE_MIRROR`` or the host's apt sources.

    ``$MSIFORGE_MIRROR`` is the main archive's URL (…/debian); the security
    archive is then the same URL with ``-security``.
    """
    main = os.environ.get("MSIFORGE_MIRROR", "").rstrip("/")
    security = ""
    if not main:
        for st in _host_sources():
            if "deb" not in st.get("Types", "").split():
                continue
            uri = st.get("URIs", "").split()[0].rstrip("/") if st.get("URIs") else ""
            names = st.get("Suites", "").split()
            if any(n.endswith("-security") for n in names):
                security = security or uri
            elif names:
                main = main or uri
    if not main:
        raise EnvironmentProblem("no Debian mirror: the host's apt sources name none; "
                                 "set MSIFORGE_MIRROR to the archive's URL (…/debian)")
    return {"debian": main, "debian-security": security or f"{main}-security"}


def state_dir(suite: Suite) -> Path:
    return cache_root() / "apt" / suite.name


def _apt_conf(d: Path, arches: tuple[str, ...]) -> str:
    archs = " ".join(f'"{a}";' for a in arches)
    lines = [
        f'Dir::Etc "{d}/etc/";',
        'Dir::Etc::Main "apt.conf";',
        'Dir::Etc::Parts "apt.conf.d";',
        f'Dir::State "{d}/state/";',
        f'Dir::State::status "{d}/state/status";',
        f'Dir::Cache "{d}/cache/";',
        'Dir::Cache::srcpkgcache "";',
        f'Dir::Log "{d}/log/";',
        f'APT::Architecture "{arches[0]}";',
        f"APT::Architectures {{ {archs} }};",
        # Expired indexes are used (frozen mirrors keep sid's past Valid-Until);
        # msiforge warns about them itself, see expired().
        'Acquire::Check-Valid-Until "false";',
        'Acquire::Languages "none";',
        'Acquire::GzipIndexes "true";',
    ]
    if os.geteuid() == 0:  # apt's sandbox user cannot write into root's cache
        lines.append('APT::Sandbox::User "root";')
    return "\n".join(lines) + "\n"


def _layout(suite: Suite) -> Path:
    """Write the suite's private apt configuration (idempotent); return its apt.conf."""
    d = state_dir(suite)
    for sub in ("etc/apt.conf.d", "etc/sources.list.d", "etc/preferences.d", "etc/trusted.gpg.d",
                "state/lists/partial", "cache/archives/partial", "log"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    status = d / "state/status"
    if not status.exists():
        status.write_text("")
    source = (f"Types: deb\nURIs: {mirrors()[suite.archive]}\nSuites: {suite.name}\nComponents: main\n"
              f"Architectures: amd64\nSigned-By: {KEYRING}\n")
    for path, text in ((d / "etc/sources.list.d/msiforge.sources", source), (d / "apt.conf", _apt_conf(d, ("amd64",)))):
        if not path.exists() or path.read_text() != text:
            atomic_write(path, text)
    return d / "apt.conf"


def apt_env(suite: Suite) -> dict[str, str]:
    """The environment that runs apt-get / apt-cache on ``suite``'s private state."""
    return dict(os.environ, APT_CONFIG=str(_layout(suite)), LC_ALL="C")


def _release_file(suite: Suite) -> Path | None:
    lists = state_dir(suite) / "state/lists"
    found = sorted(lists.glob(f"*_dists_{suite.name}_InRelease"))
    return found[0] if found else None


def _stamp(suite: Suite) -> Path:
    return state_dir(suite) / "updated.json"


def update(suite: Suite, force: bool = False, ttl: float | None = None) -> None:
    """``apt-get update`` of the suite's private state unless its lists are younger than ``ttl``.

    A failed update is an error only when there are no lists yet; otherwise
    the old lists are used, with a notice.
    """
    ttl = float(os.environ.get("MSIFORGE_APT_TTL", DEFAULT_TTL)) if ttl is None else ttl
    stamp = _stamp(suite)
    with locked(state_dir(suite).with_name(f"{suite.name}.lock")):
        if not force and stamp.exists() and _release_file(suite) and \
                time.time() - json.loads(stamp.read_text())["time"] < ttl:
            return
        env = apt_env(suite)
        with progress.step(f"apt-get update ({suite.name}, msiforge's own apt state)"):
            proc = subprocess.run([hostprogs.require("apt-get"), "-q", "update"], env=env,
                                  capture_output=True, text=True, check=False)
        bad = proc.returncode != 0 or re.search(r"^(E:|W: (GPG|The repository))", proc.stderr, re.M)
        if bad or _release_file(suite) is None:
            lines = proc.stderr.strip().splitlines() or ["no output"]
            # apt's own reason ("Failed to fetch ... Could not connect"), else its last word.
            tail = next((ln for ln in lines if "Failed to fetch" in ln or ln.startswith("E:")), lines[-1])
            if _release_file(suite) is None or not stamp.exists():
                raise EnvironmentProblem(f"apt-get update of suite {suite.name} failed: {tail}")
            print(f"msiforge: note: apt-get update of {suite.name} failed ({tail}); using its older lists",
                  file=sys.stderr)
            return
        atomic_write(stamp, json.dumps({"time": time.time()}) + "\n")


def valid_until(suite: Suite) -> datetime.datetime | None:
    """The Valid-Until of the suite's signed Release file, if it has one."""
    rel = _release_file(suite)
    if rel is None:
        return None
    m = re.search(r"^Valid-Until: (.+)$", rel.read_text(errors="replace"), re.M)
    return email.utils.parsedate_to_datetime(m[1].strip()) if m else None


def expired(suite: Suite, now: datetime.datetime | None = None) -> datetime.datetime | None:
    """When the suite's index expired, or None while it is valid."""
    until = valid_until(suite)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return until if until is not None and until < now else None


_warned: set[str] = set()


def warn_if_expired(suite: Suite) -> None:
    """A one-time warning on stderr when a kernel comes from an expired index."""
    when = expired(suite)
    if when is None or suite.name in _warned:
        return
    _warned.add(suite.name)
    days = (datetime.datetime.now(datetime.timezone.utc) - when).days
    print(f"msiforge: warning: the {suite.name} index on the mirror expired on {when:%Y-%m-%d} "
          f"({days} days ago); msiforge uses it anyway, so newer {suite.name} packages may exist",
          file=sys.stderr)


def _parse_records(text: str) -> list[dict[str, str]]:
    out = []
    for block in text.split("\n\n"):
        fields = debs.control_fields(block)
        if "Package" in fields and "Version" in fields:
            out.append({k: fields.get(k, "") for k in
                        ("Package", "Version", "Architecture", "Depends", "SHA256", "Size", "Source")})
    return out


def packages(suite: Suite) -> list[dict[str, str]]:
    """The suite's kernel-related package records (every version), updating its lists if stale."""
    update(suite)
    rel = _release_file(suite)
    lists = sorted((state_dir(suite) / "state/lists").glob("*Packages*"))
    key = hashlib.sha256(_WANTED.pattern.encode() + "".join(f"{p.name}:{p.stat().st_mtime_ns}:{p.stat().st_size}"
                                 for p in [rel, *lists] if p).encode()).hexdigest()[:16]
    cached = state_dir(suite) / f"index-{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    env = apt_env(suite)
    names = subprocess.run([hostprogs.require("apt-cache"), "pkgnames"], env=env, capture_output=True,
                           text=True, check=False).stdout.split()
    wanted = sorted(n for n in names if _WANTED.match(n))
    records: list[dict[str, str]] = []
    for i in range(0, len(wanted), 200):
        proc = subprocess.run([hostprogs.require("apt-cache"), "show", *wanted[i:i + 200]], env=env,
                              capture_output=True, text=True, check=False)
        records += _parse_records(proc.stdout)
    for old in state_dir(suite).glob("index-*.json"):
        old.unlink()
    atomic_write(cached, json.dumps(records) + "\n")
    return records
