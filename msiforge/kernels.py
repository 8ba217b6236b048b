"""Debian prebuilt kernels: resolve specs against the package index, fetch and cache them.

The index spans every suite of ``suites.SUITES`` (bookworm to experimental; ``$MSIFORGE_SUITES``
narrows it).
A fetched kernel is an extracted set of Debian packages (the unsigned kernel,
headers, headers-common, kbuild and, from 7.x on, linux-base-<rel>) under
``<cache>/kernels/debian/<release>/root``, usable for out-of-tree module
builds without installing anything into the system.  Package checksums are
checked against the suite's signed index.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import debs, progress, suites, toolchains
from .cache import cache_root, ensure_entry
from .errors import EnvironmentProblem, SpecError
from .kspec import FLAVOURS as SPEC_FLAVOURS
from .kspec import KernelSpec, parse_spec

#: Flavours msiforge boots (the x86_64 ones; arm64 boards take source: kernels).
FLAVOURS = ("amd64", "rt-amd64", "cloud-amd64")
_FLAV = "|".join(FLAVOURS)
#: A kernel's own packages: the old layout ships vmlinuz in linux-image-<rel>-unsigned
#: (boot/vmlinuz-<rel>), 7.x in linux-binary-unsigned-<rel> (usr/lib/modules/<rel>/vmlinuz.unsigned).
_KERNEL_PKG_RE = re.compile(r"^linux-(?:image-(?P<a>\S+?)-unsigned|binary-unsigned-(?P<b>\S+?))$")
_HEADERS_RE = re.compile(rf"^linux-headers-(?P<rel>\S+-(?:{_FLAV}))$")
_REL_RE = re.compile(rf"^(?P<abi>\d\S*?)-(?P<flavour>{_FLAV})$")


def upstream_key(version: str) -> tuple:
    """Version order of a Debian kernel package version: ``7.3~rc7-1~exp1`` < ``7.3.4-1~bpo13+1``."""
    upstream = version.split(":")[-1].rsplit("-", 1)[0]
    base, _, pre = upstream.partition("~")
    nums = [int(x) for x in re.findall(r"\d+", base.split("+")[0])][:3]
    nums += [0] * (3 - len(nums))
    m = re.match(r"rc(\d+)", pre)
    return (*nums, int(m[1]) - 1000 if m else 0)


def version_key(version: str) -> tuple:
    """A total order of package versions: upstream order, then the version text (Debian revisions)."""
    return (upstream_key(version), version)


@dataclass(frozen=True, order=True)
class DebianKernel:
    """One Debian kernel ABI and flavour in one suite, e.g. 7.3.4+deb13 / amd64 in trixie-backports."""

    sort_key: tuple
    abi: str = field(compare=False)
    flavour: str = field(compare=False)
    suite: str = field(default="bookworm", compare=False)
    version: str = field(default="", compare=False)  # the Debian version of its packages
    kernel_package: str = field(default="", compare=False)  # "" when the archive has only a signed image
    headers: bool = field(default=True, compare=False)
    #: The compiler package its headers depend on (gcc-12, gcc-14-for-host, ...): a hint before fetching.
    compiler: str = field(default="", compare=False)

    @property
    def release(self) -> str:
        """The kernel release string (``uname -r``)."""
        return f"{self.abi}-{self.flavour}"

    @property
    def series(self) -> str:
        return ".".join(self.abi.split("-")[0].split("+")[0].split(".")[:2])

    @property
    def rc(self) -> int | None:
        """The release candidate number (7.3~rc7: 7), None for a release."""
        m = re.search(r"~rc(\d+)", self.version)
        return int(m[1]) if m else None

    @property
    def usable(self) -> bool:
        """Bootable and buildable: an unsigned kernel and headers (with kbuild) in the archive."""
        return self.headers and bool(self.kernel_package)

    @property
    def spec(self) -> str:
        """The spec that names exactly this kernel."""
        flav = {v: f"-{k}" if k else "" for k, v in SPEC_FLAVOURS.items()}[self.flavour]
        if self.rc is not None:
            return f"debian:{self.series}-rc{self.rc}{flav}"
        return f"debian:{self.abi}{flav}"


def make_kernel(abi: str, flavour: str, suite: str = "bookworm", version: str = "",
                kernel_package: str = "-", headers: bool = True, compiler: str = "") -> DebianKernel:
    """A DebianKernel with its sort key (version order, then ABI, then flavour)."""
    version = version or abi.split("+")[0].split("-")[0] + "-1"
    if kernel_package == "-":
        kernel_package = f"linux-image-{abi}-{flavour}-unsigned"
    order = [s.name for s in suites.SUITES].index(suite) if suite in suites.BY_NAME else 99
    return DebianKernel((upstream_key(version), _abi_key(abi), abi, flavour, order), abi, flavour, suite,
                        version, kernel_package, headers, compiler)


@dataclass
class Kernel:
    """A fetched kernel, ready to boot and to build modules against."""

    spec: str
    release: str
    vmlinuz: Path
    build_dir: Path  # the directory for `make -C ... M=...`
    header_dirs: list[Path]  # where include/linux/... live, for feature probes
    patch_series: str | None = None  # source:X.Y+NAME: the msiforge patch series built in
    arch: str = "x86_64"  # the board arch it runs on (modules are built for it)
    suite: str = ""  # debian: the suite it came from
    #: Where its modules build and with which compiler (None: the host's, as the kernel was built here).
    toolchain: toolchains.Toolchain | None = None
    #: source:...+in-tree: the board's driver modules, built in the kernel tree.
    in_tree: tuple[Path, ...] = ()
    #: Its own modules (lib/modules/<release>: the image package's), None when it has none here.
    modules_dir: Path | None = None



def _abi_key(abi: str) -> tuple:
    nums = [int(x) for x in re.findall(r"\d+", abi.split("+")[0])]
    return tuple(nums)


def _newest(records: list[dict]) -> dict:
    return max(records, key=lambda r: version_key(r["Version"]))


def suite_kernels(suite: suites.Suite, records: list[dict]) -> list[DebianKernel]:
    """The x86_64 kernels one suite's package records offer, with or without headers.

    Metapackages (``linux-image-6.12-amd64`` depending on the real one) are
    skipped: a real image depends on kmod (old layout) or on its
    linux-binary package (7.x), real headers on their linux-kbuild.
    """
    by_name: dict[str, list[dict]] = {}
    for r in records:
        if r.get("Architecture") in ("amd64", "all"):
            by_name.setdefault(r["Package"], []).append(r)
    rels: dict[str, dict] = {}
    for name, recs in by_name.items():
        m = _HEADERS_RE.match(name)
        if m and _REL_RE.match(m["rel"]) and "linux-kbuild-" in _newest(recs)["Depends"]:
            rels.setdefault(m["rel"], {})["headers"] = _newest(recs)
        m = _KERNEL_PKG_RE.match(name)
        if m and _REL_RE.match(m["a"] or m["b"]):
            rels.setdefault(m["a"] or m["b"], {})["kernel"] = _newest(recs)
        m = re.match(r"^linux-image-(\S+)$", name)
        dep = _newest(recs)["Depends"]
        if m and _REL_RE.match(m[1]) and ("kmod" in dep or "linux-binary-" in dep):
            rels.setdefault(m[1], {}).setdefault("signed", _newest(recs))
    out = []
    for rel, got in rels.items():
        rm = _REL_RE.match(rel)
        head, kern = got.get("headers"), got.get("kernel")
        version = (head or kern or got["signed"])["Version"]
        kpkg = kern["Package"] if kern and kern["Version"] == version else ""
        cc = re.search(r"\b(gcc-\d+)(?:-for-host)?\b", head["Depends"]) if head else None
        out.append(make_kernel(rm["abi"], rm["flavour"], suite.name, version, kpkg, head is not None,
                               cc[1] if cc else ""))
    return out


def index(all_kernels: bool = False) -> list[DebianKernel]:
    """Every usable Debian kernel (unsigned image and headers) of every suite, oldest first.

    With ``all_kernels``, also those the archive keeps only as signed images
    (listed, never resolved).  A release offered by several suites is taken
    from the one with the newest version (ties: the first in ``suites.SUITES``).
    """
    found: dict[str, DebianKernel] = {}
    for suite in suites.active():
        for k in suite_kernels(suite, suites.packages(suite)):
            old = found.get(k.release)
            if old is None or (k.usable, version_key(k.version)) > (old.usable, version_key(old.version)):
                found[k.release] = k
    kernels = sorted(k for k in found.values() if all_kernels or k.usable)
    if not kernels:
        raise EnvironmentProblem("the Debian suites msiforge indexes list no kernels with headers: "
                                 "check the mirror (msiforge kernels update)")
    return kernels


def _matches(spec: KernelSpec, k: DebianKernel) -> bool:
    """Whether ``k`` is one the single-kernel part of ``spec`` names (any version of it)."""
    if k.flavour != spec.flavour or (spec.suite and k.suite != spec.suite):
        return False
    if spec.every:
        return True
    key = _abi_key(k.abi)
    if key[:2] != (spec.major, spec.minor):
        return False
    if spec.rc is not None:
        return k.rc is not None and (spec.rc == 0 or k.rc == spec.rc)
    if spec.patch is not None:
        if len(key) < 3 or key[2] != spec.patch or k.rc is not None:
            return False
        if spec.abinum is not None and (len(key) < 4 or key[3] != spec.abinum):
            return False
        return spec.deb is None or k.abi.endswith(f"+{spec.deb}")
    return k.rc is None  # debian:X.Y means releases, never candidates


def _no_match(spec: KernelSpec, part: KernelSpec, available: list[DebianKernel]) -> SpecError:
    near = sorted({k.abi if k.rc is None else f"{k.series}-rc{k.rc}" for k in available
                   if part.major is not None and _abi_key(k.abi)[:2] == (part.major, part.minor)
                   and k.flavour == part.flavour})
    hint = f" (available: {', '.join(near)})" if near else ""
    where = f" in {part.suite}" if part.suite else ""
    return SpecError(f"kernel spec {spec.text!r}: no matching Debian kernel with headers{where}{hint}")


def resolve(spec: KernelSpec | str, available: list[DebianKernel] | None = None) -> DebianKernel:
    """Resolve a single-kernel ``debian:`` spec to the newest matching Debian kernel."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    if spec.many:
        raise SpecError(f"kernel spec {spec.text!r} names several kernels; here it must name one")
    available = index() if available is None else available
    matches = [k for k in available if _matches(spec, k)]
    if not matches:
        raise _no_match(spec, spec, available)
    suites.warn_if_expired(suites.get(matches[-1].suite))
    return matches[-1]


def expand(spec: KernelSpec | str, available: list[DebianKernel] | None = None) -> list[DebianKernel]:
    """The kernels a spec names, oldest first: one for a plain spec, every match of a range or ``all``."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    available = index() if available is None else available
    if not spec.many:
        return [resolve(spec, available)]
    if spec.every:
        picked = [k for k in available if _matches(spec, k)]
    else:
        lo = [k for k in available if _matches(spec, k)]
        hi = [k for k in available if _matches(spec.upper, k)]
        if not lo or not hi:
            raise _no_match(spec, spec if not lo else spec.upper, available)
        picked = [k for k in available if k.flavour == spec.flavour and lo[0] <= k <= hi[-1]
                  and (not spec.suite or k.suite == spec.suite)]
    if not picked:
        raise SpecError(f"kernel spec {spec.text!r}: no Debian kernel with headers in that range")
    for name in dict.fromkeys(k.suite for k in picked):
        suites.warn_if_expired(suites.get(name))
    return picked


def expand_specs(specs: list[str], available: list[DebianKernel] | None = None) -> list[str]:
    """``specs`` with every range or ``all`` replaced by the exact specs of its kernels (order kept)."""
    out: list[str] = []
    for text in specs:
        spec = parse_spec(text)
        if spec.kind == "debian" and spec.many:
            out += [k.spec for k in expand(spec, available)]
        else:
            out.append(text)
    return list(dict.fromkeys(out))


def entry_dir(kernel: DebianKernel) -> Path:
    return cache_root() / "kernels" / "debian" / kernel.release


def _packages_for(kernel: DebianKernel) -> list[debs.Candidate]:
    """The kernel's packages from its suite: the unsigned kernel, headers, and the build packages they need.

    Among the headers' dependencies: -common, linux-kbuild and (7.x)
    linux-base-<rel>, which has the kernel's config and modules.* lists.
    """
    suite = suites.get(kernel.suite)
    # Its own suite first, then the others of its Debian release (bookworm-security's kbuild for bookworm's 6.1).
    family = [suite] + [s for s in suites.active() if s.release == suite.release and s is not suite]

    def cand(name: str, version: str | None) -> debs.Candidate:
        found = [(r, s.name) for s in family for r in suites.packages(s)
                 if r["Package"] == name and (version is None or r["Version"] == version)]
        if not found:
            raise EnvironmentProblem(f"suite {suite.name} has no {name} {version or ''}".rstrip())
        r, where = max(found, key=lambda f: (f[1] == suite.name and version is not None, version_key(f[0]["Version"])))
        return debs.Candidate(name, r["Version"], r["SHA256"], r, where)

    headers = cand(f"linux-headers-{kernel.release}", kernel.version)
    pkgs = [cand(kernel.kernel_package, kernel.version), headers]
    for dep in headers.fields.get("Depends", "").split(","):
        m = re.match(r"^\s*(linux-(?:headers|kbuild|base)-\d\S*)(?:\s*\((=|>=)\s*([^)\s]+)\))?", dep)
        if m:  # "= V" pins the version; otherwise the newest of the release, as apt would take
            pkgs.append(cand(m[1], m[3] if m[2] == "=" else None))
    return pkgs


def _vmlinuz(kernel: DebianKernel) -> str:
    if kernel.kernel_package.startswith("linux-binary-unsigned-"):
        return f"usr/lib/modules/{kernel.release}/vmlinuz.unsigned"
    return f"boot/vmlinuz-{kernel.release}"


def _build_entry(kernel: DebianKernel, tmp: Path) -> None:
    pkgs = _packages_for(kernel)
    progress.info(f"downloading {len(pkgs)} Debian packages for {kernel.release} ({kernel.suite})")
    dl = tmp / "debs"
    dl.mkdir()
    files = debs.download(pkgs, dl)
    root = tmp / "root"
    for deb in files:
        debs.unpack(deb, root)
    build = root / "usr/src" / f"linux-headers-{kernel.release}"
    makefile = build / "Makefile"
    # The flavour's Makefile includes the common one by absolute path, and (7.x) sets
    # KBUILD_OUTPUT to its own absolute path: point both into the cache, wherever it is.
    text = makefile.read_text()
    text = re.sub(r"include /usr/src/(linux-headers-[^/\s]+)/Makefile",
                  lambda m: f"include $(dir $(lastword $(MAKEFILE_LIST)))../{m[1]}/Makefile", text)
    text = re.sub(r"^KBUILD_OUTPUT\s*:?=\s*/usr/src/\S+$",
                  "KBUILD_OUTPUT := $(realpath $(dir $(lastword $(MAKEFILE_LIST))))", text, flags=re.M)
    makefile.write_text(text)
    if not (root / _vmlinuz(kernel)).is_file():
        raise EnvironmentProblem(f"{kernel.kernel_package}: no kernel image at /{_vmlinuz(kernel)}")
    meta = {"release": kernel.release, "abi": kernel.abi, "flavour": kernel.flavour, "suite": kernel.suite,
            "version": kernel.version, "vmlinuz": _vmlinuz(kernel),
            "packages": {d.name: hashlib.sha256(d.read_bytes()).hexdigest() for d in files}}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(dl)


def fetch(spec: str, available: list[DebianKernel] | None = None) -> Kernel:
    """Resolve and fetch a kernel (download and extract once; later calls hit the cache)."""
    dk = resolve(spec, available)
    entry = ensure_entry(entry_dir(dk), lambda tmp: _build_entry(dk, tmp))
    return load(spec, dk, entry)


def load(spec: str, dk: DebianKernel, entry: Path) -> Kernel:
    root = entry / "root"
    meta = json.loads((entry / "meta.json").read_text())
    build = root / "usr/src" / f"linux-headers-{dk.release}"
    commons = sorted(p for p in (root / "usr/src").glob("linux-headers-*common*") if p.is_dir())
    vmlinuz = root / meta.get("vmlinuz", f"boot/vmlinuz-{dk.release}")
    mods = next((d for d in (root / "lib/modules" / dk.release, root / "usr/lib/modules" / dk.release)
                 if (d / "kernel").is_dir()), None)
    return Kernel(spec=spec, release=dk.release, vmlinuz=vmlinuz, build_dir=build, header_dirs=[build, *commons],
                  suite=dk.suite, toolchain=toolchains.for_headers(build, dk.suite), modules_dir=mods)


def cached_releases() -> set[str]:
    root = cache_root() / "kernels" / "debian"
    if not root.is_dir():
        return set()
    return {p.name for p in root.iterdir() if (p / ".complete").exists()}
