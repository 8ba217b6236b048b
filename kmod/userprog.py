"""Guest programs: static C programs built against a kernel's own nolibc and uapi headers.

A scenario that drives a kernel interface from user space (vfio-platform's
ioctls) needs a program in the guest; busybox cannot issue them, and the
guest has no C library.  The kernel tree has what it takes:
``tools/include/nolibc`` (a libc of headers, for exactly this) and its uapi
headers, installed with ``make headers_install`` from the kernel's build
directory (so a patch series' new uapi is there).  The program is built
static with the board's compiler (``aarch64-linux-gnu-gcc`` for arm64),
``-Wall -Wextra -Werror``: as for the modules, a warning is a failure.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .. import arches, hostprogs
from ..cache import atomic_write, locked
from ..errors import BuildError

#: Where a kernel's installed uapi headers are kept, in its build directory.
UAPI_DIR = "msiforge-uapi"


def uapi_headers(kernel) -> Path:
    """The kernel's uapi headers (``make headers_install``), installed once per kernel build."""
    src, obj = kernel.header_dirs[0], kernel.build_dir
    dest = obj / UAPI_DIR
    stamp = dest / "release"
    with locked(obj / f"{UAPI_DIR}.lock"):
        if stamp.is_file() and stamp.read_text().strip() == kernel.release:
            return dest / "include"
        ba = arches.get(kernel.arch)
        cmd = [hostprogs.require("make"), "-s", "-C", str(src), f"O={obj}", *ba.make_vars,
               f"INSTALL_HDR_PATH={dest}", "headers_install"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BuildError(f"make headers_install for {kernel.release} failed: "
                             f"{(proc.stdout + proc.stderr).strip()[-300:]}")
        atomic_write(stamp, kernel.release + "\n")
    return dest / "include"


def build(source: Path, kernel, out: Path) -> Path:
    """Build the guest program ``source`` for ``kernel``'s arch into ``out``; return it.

    Raises BuildError with the compiler's first diagnostic.
    """
    nolibc = kernel.header_dirs[0] / "tools" / "include" / "nolibc"
    if not (nolibc / "nolibc.h").is_file():
        raise BuildError(f"{kernel.release}: no tools/include/nolibc in its source tree: "
                         "guest programs need a source kernel")
    cc = hostprogs.require(arches.get(kernel.arch).cross_compile + "gcc")
    cmd = [cc, "-static", "-nostdlib", "-Os", "-Wall", "-Wextra", "-Werror", "-fno-asynchronous-unwind-tables",
           "-fno-ident", "-include", str(nolibc / "nolibc.h"), "-I", str(nolibc),
           "-I", str(uapi_headers(kernel)), "-o", str(out), str(source), "-lgcc"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ": error: " in ln or ": warning: " in ln]
        raise BuildError(f"guest program {source.name} for {kernel.release}: "
                         f"{(lines or proc.stderr.strip().splitlines()[-1:] or ['failed'])[0]}")
    return out
