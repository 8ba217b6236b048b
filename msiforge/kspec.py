"""Kernel specs: the strings users write to name a kernel.

Debian prebuilt kernels, resolved by ``kernels.py`` against every Debian suite
msiforge indexes (bookworm to experimental, see ``suites.py``); only kernels
whose headers are in the archive are picked::

    debian:7.3           newest 7.3 release (not a release candidate), any suite
    debian:6.12.117      that upstream release (the newest ABI of it: +deb13 over +deb12)
    debian:6.12.117+deb12  that exact ABI (uname -r without the flavour)
    debian:6.1.0-56      that Debian ABI (6.1's numbering)
    debian:7.3-rc7       a release candidate (experimental); debian:7.3-rc the newest one
    debian:7.3-rt        flavour suffix: -rt or -cloud (default amd64)
    debian:7.2@sid       only from that suite
    debian:6.1..7.3      every kernel with headers from the oldest 6.1 to the newest 7.3
                         (release candidates between them included); ends are specs too
    debian:all           every kernel with headers (debian:all-rt: of that flavour)

Kernels built from source (by ``source_kernels.py``)::

    source:6.12              Debian's linux-source-6.12, unpatched
    source:6.12+pci-ims      ... with a generated patch series applied
    source:6.1+platform-msi-group
    source:7.3+pci-ims+in-tree  ... and the board's drivers as its last patches, built in
                             the tree (drivers/misc/msiforge/); source:6.12+in-tree without a series
    source:6.12+debug        ... a debug kernel: lockdep, PROVE_RCU, DEBUG_ATOMIC_SLEEP,
                             DEBUG_OBJECTS, generic KASAN, kmemleak (kconfigs/debug.config);
                             last, after any series and +in-tree, in a build slot of its own
    tree:PATH                a kernel git tree, its working tree as it is
    tree:PATH@REV            a kernel git tree at a commit, tag or branch
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from .errors import SpecError

FLAVOURS = {"": "amd64", "rt": "rt-amd64", "cloud": "cloud-amd64"}

#: "+in-tree" and "+debug" (last) are no series: the board's own drivers in the tree; a debug kernel.
_SOURCE_RE = re.compile(r"^source:(?P<major>\d{1,2})\.(?P<minor>\d{1,3})"
                        r"(?:\+(?!(?:in-tree|debug)(?:$|\+))(?P<series>[a-z0-9][a-z0-9-]{0,39}))?"
                        r"(?P<in_tree>\+in-tree)?(?P<debug>\+debug)?$")
_TREE_RE = re.compile(r"^tree:(?P<path>[^@\s]+)(?:@(?P<rev>[A-Za-z0-9._/~^-]{1,100}))?$")

_DEBIAN_RE = re.compile(
    r"^(?P<major>\d{1,2})\.(?P<minor>\d{1,3})"
    r"(?:\.(?P<patch>\d{1,4})(?:-(?P<abinum>\d{1,4})|\+(?P<deb>deb\d{1,3}(?:\.\d{1,3})?))?|(?P<pre>-rc(?P<rc>\d{1,2})?))?"
    r"(?:-(?P<flavour>rt|cloud))?(?:@(?P<suite>[a-z][a-z-]{1,30}))?$"
)
_ALL_RE = re.compile(r"^all(?:-(?P<flavour>rt|cloud))?(?:@(?P<suite>[a-z][a-z-]{1,30}))?$")
_DEBIAN_FORMS = ("forms: debian:7.3, debian:6.12.117, debian:6.12.117+deb12, debian:6.1.0-56, debian:7.3-rc7, "
                 "debian:6.1-rt, debian:7.2@sid, debian:6.1..7.3, debian:all")


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
    in_tree: bool = False  # source:X.Y[+NAME]+in-tree: the board's drivers built in the tree
    debug: bool = False  # source:...+debug: the debug configuration (kconfigs/debug.config) on top
    path: str | None = None  # tree:PATH
    rev: str | None = None  # tree:PATH@REV
    deb: str | None = None  # debian:X.Y.Z+debNN: the Debian release part of the ABI
    rc: int | None = None  # debian:X.Y-rcN (0: debian:X.Y-rc, the newest candidate)
    suite: str | None = None  # debian:...@SUITE
    upper: KernelSpec | None = None  # debian:A..B: this spec is A, upper is B
    every: bool = False  # debian:all

    @property
    def series(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def many(self) -> bool:
        """Whether the spec names a set of kernels (a range or all), expanded by ``kernels.expand``."""
        return self.every or self.upper is not None


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
            f"kernel spec {text!r}: expected 'debian:', 'source:' or 'tree:', e.g. debian:7.3, source:6.12"
        )
    body = text[len("debian:"):]
    m = _ALL_RE.match(body)
    if m:
        return KernelSpec(text=text, kind="debian", major=None, minor=None, patch=None, abinum=None,
                          flavour=FLAVOURS[m["flavour"] or ""], suite=_suite(text, m["suite"]), every=True)
    if ".." in body:
        lo_text, _, hi_text = body.partition("..")
        lo, hi = _parse_debian(text, lo_text), _parse_debian(text, hi_text)
        named = {k.flavour for k in (lo, hi)} - {FLAVOURS[""]}
        if len(named) > 1:
            raise SpecError(f"kernel spec {text!r}: the range's ends are different flavours")
        flavour = named.pop() if named else FLAVOURS[""]
        lo = dataclasses.replace(lo, text=text, flavour=flavour)
        return dataclasses.replace(lo, upper=dataclasses.replace(hi, flavour=flavour))
    return _parse_debian(text, body)


def _suite(text: str, name: str | None) -> str | None:
    from .suites import BY_NAME

    if name is not None and name not in BY_NAME:
        raise SpecError(f"kernel spec {text!r}: unknown suite {name!r} (known: {', '.join(BY_NAME)})")
    return name


def _parse_debian(text: str, body: str) -> KernelSpec:
    m = _DEBIAN_RE.match(body)
    if not m:
        raise SpecError(f"kernel spec {text!r}: not a Debian kernel version ({_DEBIAN_FORMS})")
    g = m.groupdict()
    rc = (int(g["rc"]) if g["rc"] is not None else 0) if g["pre"] else None
    return KernelSpec(
        text=text,
        kind="debian",
        major=int(g["major"]),
        minor=int(g["minor"]),
        patch=int(g["patch"]) if g["patch"] is not None else None,
        abinum=int(g["abinum"]) if g["abinum"] is not None else None,
        flavour=FLAVOURS[g["flavour"] or ""],
        deb=g["deb"],
        rc=rc,
        suite=_suite(text, g["suite"]),
    )


def _parse_source(text: str) -> KernelSpec:
    m = _SOURCE_RE.match(text)
    if not m:
        raise SpecError(
            f"kernel spec {text!r}: expected source:SERIES[+PATCHES][+in-tree][+debug], e.g. source:6.12, "
            "source:6.12+pci-ims, source:7.3+pci-ims+in-tree, source:6.12+debug"
        )
    return KernelSpec(text=text, kind="source", major=int(m["major"]), minor=int(m["minor"]), patch=None,
                      abinum=None, flavour="", patch_series=m["series"], in_tree=bool(m["in_tree"]),
                      debug=bool(m["debug"]))


def _parse_tree(text: str) -> KernelSpec:
    m = _TREE_RE.match(text)
    if not m:
        raise SpecError(f"kernel spec {text!r}: expected tree:PATH or tree:PATH@REV (a kernel git tree)")
    return KernelSpec(text=text, kind="tree", major=None, minor=None, patch=None, abinum=None, flavour="",
                      path=m["path"], rev=m["rev"])
