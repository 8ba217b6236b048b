"""Kernel specs: the strings users write to name a kernel.

Supported forms (resolved against the Debian package index by ``kernels.py``)::

    debian:6.12          newest 6.12 ABI, flavour amd64
    debian:6.12.117      that upstream release (ABI 6.12.117+deb12)
    debian:6.1.0-56      that Debian ABI
    debian:6.1           newest 6.1 ABI
    debian:6.1.0-56-rt   flavour suffix: -rt or -cloud (default amd64)

Kernels built from source (by ``source_kernels.py``)::

    source:6.12              Debian's linux-source-6.12, unpatched
    source:6.12+pci-ims      ... with a generated patch series applied
    source:6.1+platform-msi-group
    tree:PATH                a kernel git tree, its working tree as it is
    tree:PATH@REV            a kernel git tree at a commit, tag or branch
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SpecError

FLAVOURS = {"": "amd64", "rt": "rt-amd64", "cloud": "cloud-amd64"}

_SOURCE_RE = re.compile(r"^source:(?P<major>\d{1,2})\.(?P<minor>\d{1,3})(?:\+(?P<series>[a-z0-9][a-z0-9-]{0,39}))?$")
_TREE_RE = re.compile(r"^tree:(?P<path>[^@\s]+)(?:@(?P<rev>[A-Za-z0-9._/~^-]{1,100}))?$")

_DEBIAN_RE = re.compile(
    r"^debian:(?P<major>\d{1,2})\.(?P<minor>\d{1,3})"
    r"(?:\.(?P<patch>\d{1,4})(?:-(?P<abinum>\d{1,4}))?)?"
    r"(?:-(?P<flavour>rt|cloud))?$"
)


@dataclass(frozen=True)
class KernelSpec:
    """A parsed kernel spec; ``text`` is what the user wrote."""

    text: str
    kind: str  # "debian" | "source" | "tree"
    major: int | None  # None only for tree: (the tree's Makefile says)
    minor: int | None
    patch: int | None
    abinum: int | None
    flavour: str  # Debian flavour: amd64 | rt-amd64 | cloud-amd64 ("" for source:/tree:)
    patch_series: str | None = None  # source:X.Y+NAME: the generated patch series NAME
    path: str | None = None  # tree:PATH
    rev: str | None = None  # tree:PATH@REV

    @property
    def series(self) -> str:
        return f"{self.major}.{self.minor}"


def parse_spec(text: object) -> KernelSpec:
    """Parse a kernel spec string or raise SpecError naming what is wrong."""
    if not isinstance(text, str):
        raise SpecError(f"kernel spec must be a string like 'debian:6.12', got {type(text).__name__}")
    if text.startswith("source:"):
        return _parse_source(text)
    if text.startswith("tree:"):
        return _parse_tree(text)
    if not text.startswith("debian:"):
        raise SpecError(
            f"kernel spec {text!r}: expected 'debian:' followed by a version, e.g. debian:6.12, debian:6.1.0-56"
        )
    m = _DEBIAN_RE.match(text)
    if not m:
        raise SpecError(
            f"kernel spec {text!r}: not a Debian kernel version "
            "(forms: debian:6.12, debian:6.12.117, debian:6.1.0-56, debian:6.1-rt)"
        )
    g = m.groupdict()
    return KernelSpec(
        text=text,
        kind="debian",
        major=int(g["major"]),
        minor=int(g["minor"]),
        patch=int(g["patch"]) if g["patch"] is not None else None,
        abinum=int(g["abinum"]) if g["abinum"] is not None else None,
        flavour=FLAVOURS[g["flavour"] or ""],
    )


def _parse_source(text: str) -> KernelSpec:
    m = _SOURCE_RE.match(text)
    if not m:
        raise SpecError(
            f"kernel spec {text!r}: expected source:SERIES[+PATCHES], e.g. source:6.12, source:6.12+pci-ims"
        )
    return KernelSpec(text=text, kind="source", major=int(m["major"]), minor=int(m["minor"]), patch=None,
                      abinum=None, flavour="", patch_series=m["series"])


def _parse_tree(text: str) -> KernelSpec:
    m = _TREE_RE.match(text)
    if not m:
        raise SpecError(f"kernel spec {text!r}: expected tree:PATH or tree:PATH@REV (a kernel git tree)")
    return KernelSpec(text=text, kind="tree", major=None, minor=None, patch=None, abinum=None, flavour="",
                      path=m["path"], rev=m["rev"])
