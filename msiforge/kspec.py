"""Kernel specs: the strings users write to name a kernel.

Supported forms (resolved against the Debian package index by ``kernels.py``)::

    debian:6.12          newest 6.12 ABI, flavour amd64
    debian:6.12.117      that upstream release (ABI 6.12.117+deb12)
    debian:6.1.0-56      that Debian ABI
    debian:6.1           newest 6.1 ABI
    debian:6.1.0-56-rt   flavour suffix: -rt or -cloud (default amd64)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SpecError

FLAVOURS = {"": "amd64", "rt": "rt-amd64", "cloud": "cloud-amd64"}

_DEBIAN_RE = re.compile(
    r"^debian:(?P<major>\d{1,2})\.(?P<minor>\d{1,3})"
    r"(?:\.(?P<patch>\d{1,4})(?:-(?P<abinum>\d{1,4}))?)?"
    r"(?:-(?P<flavour>rt|cloud))?$"
)


@dataclass(frozen=True)
class KernelSpec:
    """A parsed kernel spec; ``text`` is what the user wrote."""

    text: str
    kind: str  # "debian"
    major: int
    minor: int
    patch: int | None
    abinum: int | None
    flavour: str  # Debian flavour: amd64 | rt-amd64 | cloud-amd64

    @property
    def series(self) -> str:
        return f"{self.major}.{self.minor}"


def parse_spec(text: object) -> KernelSpec:
    """Parse a kernel spec string or raise SpecError naming what is wrong."""
    if not isinstance(text, str):
        raise SpecError(f"kernel spec must be a string like 'debian:6.12', got {type(text).__name__}")
    if not text.startswith("debian:"):
        kind = text.split(":", 1)[0] if ":" in text else ""
        if kind in ("source", "tree"):
            raise SpecError(f"kernel spec {text!r}: '{kind}:' kernels are not supported yet (use debian:SERIES)")
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
