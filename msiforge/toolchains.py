"""The compiler each Debian kernel's modules are built with, and the build roots that hold it.

Out-of-tree modules must be built with the compiler the kernel was built
with: its headers say which (``CONFIG_CC_VERSION_TEXT``, e.g.
``x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0``), and Kbuild's tools
shipped with it (modpost, objtool, resolve_btfids) must run, which for
trixie's and later kernels means glibc 2.38 or newer.  BTF for modules is
made by pahole with the flags the kernel's ``CONFIG_PAHOLE_VERSION`` picks.

When the host has that compiler and can run the tools, modules build on the
host.  Otherwise they build in a **build root**: a minimal Debian root of the
suite that has that exact compiler (same Debian version; failing that, the
same upstream release, said so), made once with ``mmdebstrap`` and cached
like kernels (content key, lock, atomic rename; a killed creation is never
trusted).  The build runs in it through ``unshare`` + ``chroot`` with /proc,
/dev and the kernel and module trees mounted at their own paths, so every
path in the build (and in its diagnostics) is the host's.  A different
compiler is never used silently: no suite with it is an error.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import debs, hostprogs, progress, suites
from .cache import cache_root, ensure_entry
from .errors import EnvironmentProblem

#: Suites whose main archive has compilers, in the order a build root is looked for.
ROOT_SUITES = ("bookworm", "trixie", "forky", "sid")
#: What a build root holds besides the compiler: Kbuild's needs for an M= build.
ROOT_PACKAGES = ("make", "libc6-dev", "binutils", "pahole", "libelf-dev", "bc", "flex", "bison", "kmod",
                 "libssl-dev", "xz-utils", "zstd", "cpio",
                 "perl")  # perl: W=1 runs scripts/kernel-doc (Pod::Usage)


@dataclass(frozen=True)
class Compiler:
    """The compiler a kernel names: its command, the gcc package and the Debian version."""

    text: str  # CONFIG_CC_VERSION_TEXT
    command: str  # x86_64-linux-gnu-gcc-14, gcc-12
    package: str  # gcc-14
    version: str  # 14.2.0-19 (Debian's version of the package)

    @property
    def upstream(self) -> str:
        return self.version.split("-")[0]


def parse_compiler(text: str) -> Compiler:
    """The compiler of a ``CONFIG_CC_VERSION_TEXT`` (a Debian gcc; anything else is an error)."""
    m = re.match(r"^(?P<cmd>\S*gcc-(?P<major>\d+)) \(Debian (?P<ver>[^)\s]+)\) \S+$", text.strip())
    if not m:
        raise EnvironmentProblem(f"compiler {text!r}: not a Debian gcc, so msiforge cannot find it a build root")
    return Compiler(text.strip(), m["cmd"], f"gcc-{m['major']}", m["ver"])


def _config_value(config: str, name: str) -> str | None:
    m = re.search(rf"^CONFIG_{name}=(.*)$", config, re.M)
    return m[1].strip().strip('"') if m else None


def glibc_needed(tools: list[Path]) -> tuple[int, int]:
    """The newest GLIBC_2.N symbol version any of the ELF files under ``tools`` needs."""
    best = (2, 0)
    for top in tools:
        for path in [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()):
            if path.is_symlink():
                continue
            with open(path, "rb") as fh:
                if fh.read(4) != b"\x7fELF":
                    continue
                data = fh.read()
            for minor in re.findall(rb"GLIBC_2\.(\d+)", data):
                best = max(best, (2, int(minor)))
    return best


def host_glibc() -> tuple[int, int]:
    ver = os.confstr("CS_GNU_LIBC_VERSION").split()[-1]  # "glibc 2.36"
    major, minor = ver.split(".")[:2]
    return int(major), int(minor)


@functools.lru_cache(maxsize=None)
def _host_compiler_text(command: str) -> str | None:
    """The first line of ``command --version`` on the host, or None when the host lacks it.

    Only compilers set-up installs (``hostprogs.PROGRAMS``) count as the host's.
    """
    path = hostprogs.which(command) if command in hostprogs.PROGRAMS else None
    if path is None:
        return None
    proc = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.splitlines()[0].strip() if proc.returncode == 0 and proc.stdout else None


@dataclass(frozen=True)
class Toolchain:
    """Where and with what one kernel's modules are built: the host, or a build root."""

    compiler: Compiler
    pahole: int | None  # CONFIG_PAHOLE_VERSION (130 = 1.30), None without BTF
    glibc: tuple[int, int]  # what the kernel's Kbuild tools need
    suite: str | None  # None: the host
    packages: tuple[str, ...] = ()  # the build root's packages (pinned compiler first)
    why: str = ""

    @property
    def on_host(self) -> bool:
        return self.suite is None

    @property
    def key(self) -> str:
        """The build root's cache key: its suite and exact package list."""
        digest = hashlib.sha256(json.dumps([self.suite, suites.mirrors()["debian"], *self.packages]).encode())
        return f"{self.suite}-{self.compiler.package}-{digest.hexdigest()[:12]}"

    @property
    def root_entry(self) -> Path:
        return cache_root() / "buildroots" / self.key

    def ensure_root(self) -> Path:
        """The build root's directory, made first (once, cached) when it does not exist."""
        if self.on_host:
            raise ValueError("a host toolchain has no build root")
        title = f"make build root {self.suite} ({self.compiler.package} {self.compiler.version}; once, cached)"
        if (self.root_entry / ".complete").exists():
            return self.root_entry / "root"
        with progress.step(title):
            ensure_entry(self.root_entry, self._make_root)
        return self.root_entry / "root"

    def _make_root(self, tmp: Path) -> None:
        cmd = [hostprogs.require("mmdebstrap"), "--quiet", "--variant=essential",
               f"--mode={'root' if os.geteuid() == 0 else 'unshare'}",
               f"--include={','.join(self.packages)}",
               '--aptopt=Acquire::Check-Valid-Until "false"', '--aptopt=Acquire::Languages "none"',
               "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
               "--dpkgopt=path-exclude=/usr/share/locale/*",
               self.suite, str(tmp / "root"),
               f"deb [signed-by={suites.KEYRING}] {suites.mirrors()['debian']} {self.suite} main"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              env=dict(os.environ, LC_ALL="C"))
        (tmp / "mmdebstrap.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
            raise EnvironmentProblem(f"mmdebstrap {self.suite} (build root for {self.compiler.text}) "
                                     f"failed: {tail}")
        installed = _installed(tmp / "root")
        got = installed.get(self.compiler.package)
        if got is None:
            raise EnvironmentProblem(f"build root {self.suite}: {self.compiler.package} was not installed")
        meta = {"suite": self.suite, "compiler": self.compiler.text, "packages": self.packages,
                "installed": {p: installed[p] for p in (self.compiler.package, "pahole", "libc6", "binutils", "make")
                              if p in installed}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")

    def installed(self) -> dict[str, str]:
        """Versions of the build root's main packages (empty until it is made)."""
        meta = self.root_entry / "meta.json"
        return json.loads(meta.read_text())["installed"] if meta.exists() else {}

    def wrap(self, argv: list[str], paths: list[Path]) -> list[str]:
        """``argv`` run on this toolchain: as is on the host, else in the build root.

        ``paths`` (the kernel tree, the module tree) are mounted into the root
        at the same absolute paths.
        """
        if self.on_host:
            return argv
        root = self.ensure_root()
        mount = shlex.quote(hostprogs.require("mount"))
        lines = ["set -e", f"R={shlex.quote(str(root))}", f'{mount} -t proc proc "$R/proc"',
                 f'{mount} --rbind /dev "$R/dev"']
        for p in dict.fromkeys(str(Path(p).resolve()) for p in paths):
            q = shlex.quote(p)
            lines.append(f'mkdir -p "$R"{q} && {mount} --bind {q} "$R"{q}')
        inner = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp", "LC_ALL=C", *argv]
        lines.append(f'exec chroot "$R" {shlex.join(inner)}')
        user = [] if os.geteuid() == 0 else ["--map-root-user"]
        return [hostprogs.require("unshare"), "--mount", f"--propagation={_propagation()}", "--pid", "--fork",
                *user, "--", "sh", "-c", "\n".join(lines)]

    @property
    def pahole_text(self) -> str:
        """CONFIG_PAHOLE_VERSION as pahole says it (130: "1.30"), "" without BTF."""
        return f"{self.pahole // 100}.{self.pahole % 100:02d}" if self.pahole else ""

    def describe(self) -> str:
        """One line: the compiler and where it runs."""
        pahole = f", pahole {self.pahole_text}" if self.pahole else ""
        where = "the host" if self.on_host else f"build root {self.suite}"
        return f"{self.compiler.command} {self.compiler.version}{pahole} on {where}"


def _propagation() -> str:
    """How the build's mount namespace treats the mounts it copies.

    ``private`` (nothing the build mounts reaches the host) needs "/" to be a
    mount point.  Inside a chroot it is not (unshare: "cannot change root
    filesystem propagation"): there the mounts are the chroot's maker's, who
    must have made them private (check-fresh does), and they are left as
    they are.
    """
    with open("/proc/self/mountinfo") as fh:
        root_is_a_mount = any(line.split()[4] == "/" for line in fh if len(line.split()) > 4)
    return "private" if root_is_a_mount else "unchanged"


def _installed(root: Path) -> dict[str, str]:
    status = (root / "var/lib/dpkg/status").read_text(errors="replace")
    out = {}
    for block in status.split("\n\n"):
        f = debs.control_fields(block)
        if "Package" in f and "install ok installed" in f.get("Status", ""):
            out[f["Package"]] = f.get("Version", "")
    return out


def _suite_versions(suite: str, package: str) -> list[str]:
    return [r["Version"] for r in suites.packages(suites.get(suite)) if r["Package"] == package]


def for_headers(build_dir: Path, kernel_suite: str | None = None) -> Toolchain:
    """The toolchain for modules of the kernel whose build directory is ``build_dir``."""
    config = (build_dir / ".config").read_text(errors="replace")
    text = _config_value(config, "CC_VERSION_TEXT") or ""
    comp = parse_compiler(text)
    pahole = _config_value(config, "PAHOLE_VERSION")
    pahole_v = int(pahole) if pahole and pahole.isdigit() and int(pahole) > 0 else None
    tools = [build_dir / "scripts", build_dir / "tools"]
    need = glibc_needed([t.resolve() for t in tools if t.exists()])
    have = host_glibc()
    host_cc = _host_compiler_text(comp.command)
    if host_cc == comp.text and need <= have:
        return Toolchain(comp, pahole_v, need, None, why="the host has this compiler and runs its Kbuild tools")
    reasons = []
    if host_cc != comp.text:
        reasons.append(f"the host has no {comp.command}" if host_cc is None else f"the host's is {host_cc!r}")
    if need > have:
        reasons.append(f"its Kbuild tools need glibc {need[0]}.{need[1]} (the host has {have[0]}.{have[1]})")
    known = {x.name for x in suites.active()}
    order = [name for name in ROOT_SUITES if name in known]
    if kernel_suite and suites.get(kernel_suite).release in order:  # its own release first
        order.remove(suites.get(kernel_suite).release)
        order.insert(0, suites.get(kernel_suite).release)
    exact = [(s, v) for s in order for v in _suite_versions(s, comp.package) if v == comp.version]
    close = [(s, v) for s in order for v in _suite_versions(s, comp.package)
             if v.split("-")[0] == comp.upstream]
    if exact:
        suite, version = exact[0]
        note = ""
    elif close:
        suite, version = close[0]
        note = f"; {comp.package} {version}: the same upstream release as the kernel's {comp.version}"
    else:
        raise EnvironmentProblem(f"no Debian suite msiforge indexes has {comp.package} {comp.upstream} "
                                 f"(the kernel was built with {comp.text})")
    packages = (f"{comp.package}={version}", *ROOT_PACKAGES)
    why = f"{' and '.join(reasons)}{note}"
    return Toolchain(comp, pahole_v, need, suite, packages, why)
