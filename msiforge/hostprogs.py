"""Every program msiforge and its tests run on the host, the Debian package that provides it, and why.

This is the one list.  ``make deps`` installs and checks from it (the
Makefile asks ``python3 msiforge/hostprogs.py packages`` and ``... ensure``;
this file imports nothing outside the standard library so that it runs
before the venv exists), the code looks programs up through
:func:`require` / :func:`optional`, and ``tests/test_hostprogs.py`` fails
when any command line in the code names a program missing here.

A *required* program missing at run time is a one-line error naming the
package; an *optional* one (ccache, say) degrades with a one-line notice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Program:
    """A host program: its Debian package and what needs it."""

    name: str
    package: str
    needed_for: str
    optional: bool = False
    #: Where it is installed from when it is not a Debian package ("venv": the project's Python venv).
    source: str = "debian"
    #: Only some tests need it: ``make test`` installs it (hostprogs.py ensure --tests), ``make deps`` does not.
    tests_only: bool = False


def _p(name: str, package: str, needed_for: str, **kw) -> Program:
    return Program(name, package, needed_for, **kw)


#: name -> Program, in the order ``make deps`` reports them.
PROGRAMS: dict[str, Program] = {p.name: p for p in [
    # Booting guests.
    _p("qemu-system-x86_64", "qemu-system-x86", "booting x86_64 boards (q35)"),
    _p("qemu-system-aarch64", "qemu-system-arm", "booting arm64 boards (virt with a GICv3 ITS)"),
    _p("qemu-system-ppc64", "qemu-system-ppc", "booting ppc64le boards (pseries, with SLOF/VOF firmware)"),
    _p("busybox", "busybox-static", "the x86_64 guest's /init and shell (a static busybox)"),
    # Debian packages: the index, downloads, unpacking.
    _p("apt-get", "apt", "downloading Debian kernels, linux-source and foreign busybox into the cache"),
    _p("apt-cache", "apt", "reading the package index (kernel versions, SHA256 sums)"),
    _p("apt-config", "apt", "tests: msiforge's private apt configuration takes nothing from the host's"),
    _p("dpkg", "dpkg", "adding the arm64 architecture to apt's index (make deps)"),
    _p("dpkg-deb", "dpkg", "unpacking downloaded packages without installing them"),
    _p("dpkg-query", "dpkg", "checking installed libraries (make deps)"),
    _p("tar", "tar", "unpacking linux-source tarballs"),
    _p("xz", "xz-utils", "decompressing linux-source tarballs (tar -J)"),
    # Kernel and module builds.
    _p("make", "make", "Kbuild: kernels and out-of-tree modules"),
    _p("gcc", "gcc", "host programs of Kbuild (HOSTCC)"),
    _p("x86_64-linux-gnu-gcc-12", "gcc-12", "x86_64 kernels and modules (the compiler Debian 12's kernels were built with)"),
    _p("gcc-12", "gcc-12", "checking that Debian 6.1 kernels' compiler is the host's (they name it gcc-12)"),
    _p("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu", "cross-building arm64 kernels and modules"),
    _p("powerpc64le-linux-gnu-gcc", "gcc-powerpc64le-linux-gnu", "cross-building ppc64le kernels and modules"),
    _p("strip", "binutils", "stripping debug info from x86_64 modules for the guest"),
    _p("aarch64-linux-gnu-strip", "binutils-aarch64-linux-gnu", "stripping debug info from arm64 modules"),
    _p("powerpc64le-linux-gnu-strip", "binutils-powerpc64le-linux-gnu", "stripping debug info from ppc64le modules"),
    _p("ccache", "ccache", "caching kernel compilations between builds and build slots", optional=True),
    _p("flex", "flex", "Kbuild's kconfig and dtc lexers"),
    _p("bison", "bison", "Kbuild's kconfig and dtc parsers"),
    _p("bc", "bc", "Kbuild's timeconst generation"),
    _p("perl", "perl", "Kbuild scripts and scripts/checkpatch.pl"),
    _p("pahole", "dwarves", "BTF generation in Kbuild (CONFIG_DEBUG_INFO_BTF kernels)"),
    _p("depmod", "kmod", "modules.dep for Debian kernels' headers and guests"),
    _p("nice", "coreutils", "kernel builds at low priority"),
    _p("sh", "dash", "Kbuild's merge_config.sh"),
    _p("cpio", "cpio", "Kbuild's initramfs and kheaders tooling"),
    _p("git", "git", "pristine kernel trees, patch series (format-patch, am), bisection"),
    # Device trees of arm64 boards.
    _p("dtc", "device-tree-compiler", "adding the board's platform devices to QEMU's virt device tree"),
    # Kernel image formats Python cannot decompress itself.
    _p("zstd", "zstd", "extracting vmlinux from zstd-compressed bzImages (PVH boot)"),
    _p("lz4", "lz4", "extracting vmlinux from lz4-compressed bzImages (PVH boot)", optional=True),
    _p("lzop", "lzop", "extracting vmlinux from lzo-compressed bzImages (PVH boot)", optional=True),
    _p("rsync", "rsync", "make headers_install: the uapi headers a guest program is built against (vfio-platform)"),
    # The test suite.
    _p("pgrep", "procps", "tests: no QEMU left behind"),
    _p("modinfo", "kmod", "tests: a +in-tree kernel's drivers are Kbuild's (intree=Y)"),
    _p("chromium", "chromium", "tests: rendering report.html in a headless browser", tests_only=True),
    _p("dkms", "dkms", "tests: dkms build of a generated tree (msiforge generate --dkms)", tests_only=True),
    # Build roots: modules of kernels built with a compiler the host lacks (toolchains.py).
    _p("mmdebstrap", "mmdebstrap", "build roots (a kernel's own compiler) and make check-fresh's Debian 12 root"),
    _p("unshare", "util-linux", "builds in build roots, and make check-fresh: private mounts of /proc and /dev"),
    _p("mount", "mount", "builds in build roots: /proc, /dev and the kernel and module trees mounted into the root"),
    _p("chroot", "coreutils", "builds in build roots, and running check-fresh's suite in its root"),
    # From the venv, not Debian; and what it runs on the host itself.
    _p("vng", "virtme-ng", "the virtme-ng boot backend (--backend vng)", source="venv"),
    _p("file", "file", "virtme-ng: telling a static busybox and the kernel version (--backend vng)"),
    _p("modprobe", "kmod", "virtme-ng: its guest's module loading (--backend vng)"),
]}

#: Debian packages that provide no program msiforge runs, and why they are needed.
LIBRARIES: dict[str, str] = {
    "libelf-dev": "Kbuild's objtool and resolve_btfids (libelf headers)",
    "libssl-dev": "Kbuild's sign-file and extract-cert (OpenSSL headers)",
    "python3-venv": "the project's Python venv (python3 -m venv)",
    "qemu-system-data": "QEMU's firmware (qboot, SeaBIOS) and option ROMs",
}

#: Foreign-architecture packages that are downloaded into the cache (never installed):
#: Debian arch -> (package, why).  ``make deps`` makes the architecture known to apt.
FOREIGN: dict[str, tuple[str, str]] = {
    "arm64": ("busybox-static", "the arm64 guest's /init and shell"),
    "ppc64el": ("busybox-static", "the ppc64le guest's /init and shell"),
}

_noticed: set[str] = set()

#: Programs a run may start that are not host tools: this Python, msiforge itself, pytest.
_SELF = {"msiforge", "pytest", "python", "python3"}


def install_audit(log_path: str) -> None:
    """Record in ``log_path`` every program this process (or a forked child) executes that is not registered.

    The test suite sets ``MSIFORGE_AUDIT_PROGRAMS`` and msiforge calls this
    at import, so the command lines msiforge builds at run time are checked
    against the registry too (``tests/test_hostprogs.py``).
    """
    def hook(event: str, args: tuple) -> None:
        if event not in ("subprocess.Popen", "os.exec", "os.posix_spawn"):
            return
        exe, argv = args[0], args[1]  # all three events start (executable, argv, ...)
        if isinstance(argv, (str, bytes)):
            argv = [argv]
        first = exe if exe is not None else (argv[0] if argv else "")
        name = os.path.basename(os.fsdecode(first))
        if name in PROGRAMS or name in _SELF or name.startswith("python") or \
                os.path.realpath(os.fsdecode(first)) == os.path.realpath(sys.executable):
            return
        with open(log_path, "a") as fh:
            fh.write(f"{name}\t{' '.join(map(os.fsdecode, argv))[:200]}\n")

    sys.addaudithook(hook)


def _program(name: str) -> Program:
    try:
        return PROGRAMS[os.path.basename(name)]
    except KeyError:  # a programming error: every host program is registered
        raise LookupError(f"{name!r} is not in msiforge.hostprogs.PROGRAMS; register it there") from None


def _venv_bin() -> str:
    return os.path.dirname(sys.executable)


def which(name: str) -> str | None:
    """The path of a registered program, or None when it is not installed."""
    prog = _program(name)
    if os.sep in name:  # an absolute path of a registered program (from an earlier lookup)
        return name if os.access(name, os.X_OK) else None
    if prog.source == "venv":
        return shutil.which(name, path=os.pathsep.join([_venv_bin(), os.environ.get("PATH", "")]))
    return shutil.which(name)


def require(name: str) -> str:
    """The path of a registered program; EnvironmentProblem naming its package when missing."""
    path = which(name)
    if path:
        return path
    from .errors import EnvironmentProblem

    prog = _program(name)
    if prog.source == "venv":
        raise EnvironmentProblem(f"{name} not found (needed for {prog.needed_for}): "
                                 f"pip install {prog.package} in msiforge's venv (make setup)")
    raise EnvironmentProblem(f"{name} not found (needed for {prog.needed_for}): "
                             f"install Debian's {prog.package} (make deps, as root)")


def optional(name: str) -> str | None:
    """The path of an optional program, or None after a one-time notice on stderr saying what is lost."""
    prog = _program(name)
    path = which(name)
    if path is None and name not in _noticed:
        _noticed.add(name)
        print(f"msiforge: note: {name} is not installed, so no {prog.needed_for} "
              f"(Debian's {prog.package}; make deps installs it)", file=sys.stderr)
    return path


def _wanted(tests: bool) -> list[Program]:
    return [p for p in PROGRAMS.values() if p.source == "debian" and (tests or not p.tests_only)]


def packages(tests: bool = False) -> list[str]:
    """Every Debian package ``make deps`` installs (with ``tests``, ``make test``'s too), in registry order."""
    out = [p.package for p in _wanted(tests)] + list(LIBRARIES)
    return list(dict.fromkeys(out))


def missing(tests: bool = False) -> list[str]:
    """What ``make deps`` would install: programs not on PATH, libraries not installed, foreign archs unknown."""
    gone = [f"{p.name} ({p.package})" for p in _wanted(tests) if not shutil.which(p.name)]
    for pkg in LIBRARIES:
        st = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", pkg], capture_output=True, text=True)
        if "install ok installed" not in st.stdout:
            gone.append(pkg)
    # Kernel specs resolve against the index: it must list Debian's kernel images.
    names = subprocess.run(["apt-cache", "pkgnames", "linux-image-6"], capture_output=True, text=True).stdout
    if not names.strip():
        gone.append("apt index (apt-get update)")
    for arch, (pkg, _why) in FOREIGN.items():
        if subprocess.run(["apt-cache", "show", f"{pkg}:{arch}"], capture_output=True).returncode != 0:
            gone.append(f"{pkg}:{arch} in the index (dpkg --add-architecture {arch})")
    return gone


def ensure(tests: bool = False) -> int:
    """Install what is missing (as root) or say exactly what to run; the exit status of ``make deps``
    (``tests``: of ``make test``'s set-up, which adds the programs only tests use)."""
    gone = missing(tests)
    if not gone:
        return 0
    print("msiforge set-up: missing: " + ", ".join(gone))
    pkgs = packages(tests)
    if os.geteuid() != 0:
        archs = " && ".join(f"dpkg --add-architecture {a}" for a in FOREIGN)
        print(f"msiforge set-up: as root, run: {archs} && apt-get update && "
              f"apt-get install -y --no-install-recommends {' '.join(pkgs)}", file=sys.stderr)
        return 1
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    known = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout.split()
    for arch in FOREIGN:
        if arch not in known:
            subprocess.run(["dpkg", "--add-architecture", arch], check=True)
    steps = [["apt-get", "update", "-q"],
             ["apt-get", "install", "-y", "-q", "--no-install-recommends", *pkgs]]
    for cmd in steps:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            print(f"msiforge set-up: {' '.join(cmd[:2])} failed (exit {proc.returncode}): {tail}", file=sys.stderr)
            return 1
    still = missing(tests)
    if still:
        print("msiforge set-up: still missing after install: " + ", ".join(still), file=sys.stderr)
        return 1
    print(f"msiforge set-up: installed {len(pkgs)} packages; every registered program is present")
    return 0


def report() -> str:
    """A table of every registered program: present or not, its package and what needs it."""
    rows = []
    for p in PROGRAMS.values():
        state = "ok" if which(p.name) else ("absent (optional)" if p.optional else "MISSING")
        rows.append(f"{p.name:26} {state:18} {p.package:28} {p.needed_for}")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    """``hostprogs.py packages|ensure|report``: what the Makefile calls before the venv exists."""
    cmd = argv[1] if len(argv) > 1 else "report"
    tests = "--tests" in argv[2:]
    if cmd == "packages":
        print(" ".join(packages(tests)))
        return 0
    if cmd == "ensure":
        return ensure(tests)
    if cmd == "report":
        print(report())
        return 0
    print(f"usage: {argv[0]} packages|ensure|report [--tests]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
