"""Debian packages downloaded into msiforge's cache, checked against the package index.

Every download path (prebuilt kernels, linux-source trees, checkpatch.pl,
foreign busybox) goes through :func:`download`: ``apt-get download`` of an
exact version, then the file's SHA256 compared with the index's, so a
truncated or substituted package is an error, never a cache entry.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import hostprogs
from .errors import EnvironmentProblem


@dataclass(frozen=True)
class Candidate:
    """The version of a package apt would download, and its fields from the index."""

    package: str
    version: str
    sha256: str
    fields: dict
    #: The suite whose private apt state has it (``suites.py``); None: the host's own index.
    suite: str | None = None


def control_fields(text: str) -> dict[str, str]:
    """The ``Field: value`` lines of one Debian control stanza (apt-cache show, dpkg status, deb822 sources)."""
    return dict(re.findall(r"^([\w-]+):[ \t]*(.*)$", text, re.M))


def candidate(package: str) -> Candidate:
    """The candidate version of ``package`` (``name`` or ``name:arch``) in the package index."""
    proc = subprocess.run([hostprogs.require("apt-cache"), "show", "--no-all-versions", package],
                          capture_output=True, text=True, check=False)
    fields = control_fields(proc.stdout)
    if proc.returncode != 0 or "Version" not in fields:
        raise EnvironmentProblem(f"the package index has no {package}: run 'make deps' as root "
                                 "(it runs apt-get update)")
    return Candidate(package, fields["Version"], fields.get("SHA256", ""), fields)


def download(cands: list[Candidate], dest: Path) -> list[Path]:
    """Download exact versions into ``dest``; each file's SHA256 must match the index."""
    for suite in dict.fromkeys(c.suite for c in cands):
        _download([c for c in cands if c.suite == suite], dest, suite)
    out = []
    for c in cands:
        name = c.package.split(":")[0]
        deb = next((d for d in sorted(dest.glob(f"{name}_*.deb"))), None)
        if deb is None:
            raise EnvironmentProblem(f"apt-get download did not produce {c.package}")
        got = hashlib.sha256(deb.read_bytes()).hexdigest()
        if not c.sha256:
            raise EnvironmentProblem(f"{deb.name}: the package index gives no SHA256 to check it against")
        if got != c.sha256:
            raise EnvironmentProblem(f"{deb.name}: SHA256 {got} does not match the package index ({c.sha256})")
        out.append(deb)
    return out


def _download(cands: list[Candidate], dest: Path, suite: str | None) -> None:
    cmd, env = [hostprogs.require("apt-get"), "download", "-q"], None
    if suite is not None:
        from . import suites

        env = suites.apt_env(suites.get(suite))  # its apt.conf sets the sandbox user
    elif os.geteuid() == 0:  # apt's sandbox user cannot write into root's cache
        cmd += ["-o", "APT::Sandbox::User=root"]
    proc = subprocess.run(cmd + [f"{c.package}={c.version}" for c in cands], cwd=dest, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "unknown error"
        raise EnvironmentProblem(f"apt-get download {' '.join(c.package for c in cands)}: {msg}")


def unpack(deb: Path, dest: Path) -> None:
    """``dpkg-deb -x``: the package's files under ``dest``, nothing installed."""
    proc = subprocess.run([hostprogs.require("dpkg-deb"), "-x", str(deb), str(dest)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"dpkg-deb -x {deb.name}: {proc.stderr.strip()[-200:]}")
