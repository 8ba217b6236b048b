"""Debian prebuilt kernels: resolve specs against the package index, fetch and cache them.

A fetched kernel is an extracted set of Debian packages (image, headers,
headers-common and kbuild) under ``<cache>/kernels/debian/<release>/root``,
usable for out-of-tree module builds without installing anything into the
system.  Package checksums are checked against the signed index.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import debs, hostprogs, progress
from .cache import atomic_write, cache_root, ensure_entry
from .errors import EnvironmentProblem, SpecError
from .kspec import KernelSpec, parse_spec

_IMAGE_RE = re.compile(
    r"^linux-image-(?P<abi>\d+\.\d+\.\d+(?:-\d+)?(?:\+deb\d+)?)-(?P<flavour>amd64|cloud-amd64|rt-amd64)-unsigned$"
)


@dataclass(frozen=True, order=True)
class DebianKernel:
    """One Debian kernel ABI and flavour, e.g. 6.12.117+deb12 / amd64."""

    sort_key: tuple
    abi: str = field(compare=False)
    flavour: str = field(compare=False)

    @property
    def release(self) -> str:
        """The kernel release string (``uname -r``)."""
        return f"{self.abi}-{self.flavour}"

    @property
    def series(self) -> str:
        return ".".join(self.abi.split(".")[:2])


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



def _abi_key(abi: str) -> tuple:
    nums = [int(x) for x in re.findall(r"\d+", abi.split("+")[0])]
    return tuple(nums)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    hostprogs.require(cmd[0])
    return subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)


_APT_LISTS = Path("/var/lib/apt/lists")


def _package_names() -> list[str]:
    """linux-image-* package names, cached until apt's lists change (apt-cache takes ~0.5 s)."""
    lists = sorted(_APT_LISTS.glob("*_Packages*")) if _APT_LISTS.is_dir() else []
    stamp = hashlib.sha256("".join(f"{p.name}:{p.stat().st_mtime_ns}:{p.stat().st_size}"
                                   for p in lists).encode()).hexdigest()[:16]
    cached = cache_root() / "index" / f"linux-image-{stamp}.json"
    if lists and cached.exists():
        return json.loads(cached.read_text())
    names = _run(["apt-cache", "pkgnames", "linux-image-"]).stdout.split()
    if lists and names:
        atomic_write(cached, json.dumps(names) + "\n")
    return names


def index() -> list[DebianKernel]:
    """All Debian kernel images the package index offers, oldest first."""
    out = _package_names()
    kernels = []
    for name in out:
        m = _IMAGE_RE.match(name)
        if m:
            abi, flavour = m["abi"], m["flavour"]
            kernels.append(DebianKernel((_abi_key(abi), flavour), abi, flavour))
    if not kernels:
        raise EnvironmentProblem(
            "the Debian package index lists no kernel images: run 'apt-get update' (as root) and try again"
        )
    return sorted(kernels)


def resolve(spec: KernelSpec | str, available: list[DebianKernel] | None = None) -> DebianKernel:
    """Resolve a ``debian:`` spec to the newest matching Debian kernel."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    available = index() if available is None else available
    matches = []
    for k in available:
        key = k.sort_key[0]
        if k.flavour != spec.flavour or key[:2] != (spec.major, spec.minor):
            continue
        if spec.patch is not None and (len(key) < 3 or key[2] != spec.patch):
            continue
        if spec.abinum is not None and (len(key) < 4 or key[3] != spec.abinum):
            continue
        matches.append(k)
    if not matches:
        near = sorted({k.abi for k in available if k.sort_key[0][:2] == (spec.major, spec.minor)})
        hint = f" (available: {', '.join(near)})" if near else ""
        raise SpecError(f"kernel spec {spec.text!r}: no matching Debian kernel package{hint}")
    return matches[-1]


def entry_dir(kernel: DebianKernel) -> Path:
    return cache_root() / "kernels" / "debian" / kernel.release


def _packages_for(kernel: DebianKernel) -> list[debs.Candidate]:
    headers = debs.candidate(f"linux-headers-{kernel.release}")
    pkgs = [debs.candidate(f"linux-image-{kernel.release}-unsigned"), headers]
    for dep in headers.fields.get("Depends", "").split(","):
        name = dep.strip().split()[0] if dep.strip() else ""
        if name.startswith(("linux-headers-", "linux-kbuild-")):
            pkgs.append(debs.candidate(name))
    return pkgs


def _build_entry(kernel: DebianKernel, tmp: Path) -> None:
    pkgs = _packages_for(kernel)
    progress.info(f"downloading {len(pkgs)} Debian packages for {kernel.release}")
    dl = tmp / "debs"
    dl.mkdir()
    files = debs.download(pkgs, dl)
    root = tmp / "root"
    for deb in files:
        debs.unpack(deb, root)
    build = root / "usr/src" / f"linux-headers-{kernel.release}"
    makefile = build / "Makefile"
    # The flavour's Makefile includes the common one by absolute path: point it into the cache.
    text = makefile.read_text()
    text = re.sub(r"include /usr/src/(linux-headers-[^/\s]+)/Makefile",
                  lambda m: f"include $(dir $(lastword $(MAKEFILE_LIST)))../{m[1]}/Makefile", text)
    makefile.write_text(text)
    meta = {"release": kernel.release, "abi": kernel.abi, "flavour": kernel.flavour,
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
    build = root / "usr/src" / f"linux-headers-{dk.release}"
    commons = sorted(p for p in (root / "usr/src").glob("linux-headers-*common*") if p.is_dir())
    return Kernel(spec=spec, release=dk.release, vmlinuz=root / "boot" / f"vmlinuz-{dk.release}",
                  build_dir=build, header_dirs=[build, *commons])


def cached_releases() -> set[str]:
    root = cache_root() / "kernels" / "debian"
    if not root.is_dir():
        return set()
    return {p.name for p in root.iterdir() if (p / ".complete").exists()}
