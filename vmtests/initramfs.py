"""The guest's own minimal initramfs: busybox, the modules and the test script.

Written directly in the kernel's ``newc`` cpio format (no external cpio
needed, deterministic output).
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from .. import hostprogs
from ..errors import EnvironmentProblem

#: What every /init does first: mount what the tests need.
#: Debian's static busybox runs its applets from its shell without links
#: (FEATURE_SH_STANDALONE, through /proc/self/exe once /proc is mounted), so
#: none are installed: that is ~400 symlinks less.
_MOUNT = r"""#!/bin/busybox sh
export PATH=/bin
/bin/busybox mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t debugfs debugfs /sys/kernel/debug
# The kernel's own modules the payload's virtio-serial port needs, where they are not built in (plan.port_modules).
for m in /lib/port/*.ko; do
	[ -e "$m" ] && insmod "$m"
done
"""

#: What every /init does last: inject the fault in $fault (for the harness's own
#: tests), run the script, power off.
_RUN = r"""case "$fault" in
hang-hard) while :; do sleep 3600; done ;;
panic|oops|bug|warn|call-trace|lockdep|kasan|atomic-sleep) insmod /modules/msiforge_fault.ko what=$fault ;;
hang-soft) export MSIFORGE_STALL=1 ;;
load-fail) export MSIFORGE_INSMOD_ARGS=pci_slot=31 ;;
vm-crash)
	# An edu DMA into a device buffer address out of range makes QEMU abort.
	d=$(ls -d /sys/bus/pci/devices/*/ | while read -r p; do
		[ "$(cat "$p/vendor"):$(cat "$p/device")" = 0x1234:0x11e8 ] && echo "$p" && break; done)
	echo 1 > "$d/enable"
	bar=$(($(cut -d " " -f 1 "$d/resource" | head -n 1)))
	devmem $((bar + 0x80)) 32 0x1000
	devmem $((bar + 0x88)) 32 0x0
	devmem $((bar + 0x90)) 32 4
	devmem $((bar + 0x98)) 32 1
	sleep 5 ;;
esac
sh /run.sh
echo "msiforge-guest: exit $?"
poweroff -f
"""

#: /init of a cold boot: the fault comes from the kernel command line (msiforge.fault=...).
INIT = _MOUNT + r"""read -r cmdline < /proc/cmdline
for arg in $cmdline; do
	case "$arg" in
	msiforge.fault=*) fault=${arg#msiforge.fault=} ;;
	esac
done
""" + _RUN

#: What the base guest of a warm snapshot prints when it is ready to be saved.
READY = "msiforge-ready: waiting for the payload"
#: The payload crosses the console in chunks of this many base64 lines, each
#: acknowledged: the guest's tty buffers would drop what it has not read.
CHUNK_LINES = 200
#: The name of the virtio-serial port a resumed guest reads its payload from (vmtests/snapshot.py).
PORT_NAME = "msiforge.payload"

#: /init of a warm snapshot's base guest (vmtests/snapshot.py).  It boots with
#: no msiforge module, keeps each edu's PCI config header, says it is ready and
#: waits on the console; the host saves the VM there.  A restored guest reads
#: ``go FAULT LINES MD5``, then LINES of base64 (an xz-compressed newc cpio:
#: /run.sh and /modules) in acknowledged chunks, or ``port FAULT BYTES MD5``
#: and BYTES of that cpio from the virtio-serial port named PORT_NAME, and
#: goes on as a cold boot would.
#: QEMU's edu has no vmstate: a restored one is freshly reset (BARs
#: unassigned, decoding off), so its header is written back first: BARs,
#: interrupt line, then the command word.
WARM_INIT = _MOUNT + r"""mkdir -p /run/cfg
for d in /sys/bus/pci/devices/*; do
	[ "$(cat "$d/vendor"):$(cat "$d/device")" = 0x1234:0x11e8 ] && cat "$d/config" > "/run/cfg/${d##*/}"
done
stty -echo
# A 16550's receive interrupt after 14 bytes, not 8: the payload crosses faster.
for t in /sys/class/tty/*/rx_trig_bytes; do echo 14 > "$t"; done 2>/dev/null
# Saved while a kernel thread runs (the boot's async crypto self-tests, say), a QEMU
# 7.2 TCG state can resume with that CPU's flags corrupted (seen: TF and IOPL set in
# kmalloc's cmpxchg16b, then an oops).  So the save waits until nothing but this
# shell is runnable, three samples in a row (at most 5 s).
q=0
n=0
while [ $q -lt 3 ] && [ $n -lt 100 ]; do
	read -r _ _ _ r _ < /proc/loadavg
	if [ "${r%/*}" = 1 ]; then q=$((q + 1)); else q=0; fi
	n=$((n + 1))
	sleep 0.05
done
echo "@READY@"
read -r go fault left sum
if [ "$go" = check ]; then
	# The host tries a fresh snapshot once before keeping it: a guest that survives some work.
	find /sys/devices -maxdepth 5 > /dev/null
	echo "msiforge-warm: check $(cat /proc/sys/kernel/random/uuid | cut -c 1-8) ok"
	poweroff -f
fi
if [ "$go" = port ]; then
	# $left bytes on the virtio-serial port the host has just hot-added (its driver is built in).
	p=
	i=0
	while [ -z "$p" ] && [ $i -lt 1000 ]; do
		for d in /sys/class/virtio-ports/*; do
			name=
			read -r name 2>/dev/null < "$d/name"
			[ "$name" = @PORT@ ] && [ -c "/dev/${d##*/}" ] && p=/dev/${d##*/}
		done
		[ -n "$p" ] || sleep 0.01
		i=$((i + 1))
	done
	f=/run/payload.xz
	[ -n "$p" ] || echo "msiforge-warm: no port @PORT@ within 10 s"
	[ -n "$p" ] && head -c "$left" "$p" > $f
else
	f=/run/payload
	i=0
	while [ "$left" -gt 0 ]; do
		n=@CHUNK@
		[ "$left" -lt $n ] && n=$left
		head -n $n >> /run/payload
		left=$((left - n))
		i=$((i + 1))
		echo "msiforge-warm: chunk $i"
	done
fi
stty echo
if [ "$(md5sum < $f)" != "$sum  -" ]; then
	echo "msiforge-warm: payload corrupt"
	poweroff -f
fi
echo "msiforge-warm: payload ok"
[ $f = /run/payload ] && base64 -d $f > /run/payload.xz
unxz < /run/payload.xz | (cd / && cpio -id 2>/dev/null)
rm -f /run/payload /run/payload.xz
for f in /run/cfg/*; do
	[ -e "$f" ] || continue
	c=/sys/bus/pci/devices/${f##*/}/config
	dd if="$f" of="$c" bs=4 skip=4 seek=4 count=6 conv=notrunc 2>/dev/null
	dd if="$f" of="$c" bs=1 skip=60 seek=60 count=1 conv=notrunc 2>/dev/null
	dd if="$f" of="$c" bs=2 skip=2 seek=2 count=1 conv=notrunc 2>/dev/null
done
[ "$fault" = - ] && fault=
""".replace("@READY@", READY).replace("@CHUNK@", str(CHUNK_LINES)).replace("@PORT@", PORT_NAME) + _RUN

#: Faults the guest can inject, and the verdict each must produce.
FAULTS = {
    "panic": "panic", "oops": "oops", "bug": "bug", "warn": "warn", "call-trace": "call-trace",
    # Only a debug kernel (source:...+debug) reports these.
    "lockdep": "lockdep", "kasan": "kasan", "atomic-sleep": "atomic-sleep",
    "hang-hard": "boot-timeout", "hang-soft": "scenario-timeout",
    "load-fail": "load-failed", "vm-crash": "vm-crashed",
}


def find_busybox() -> Path:
    """The static busybox to put in the guest (Debian's busybox-static)."""
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        if p.is_file():
            return p
    return Path(hostprogs.require("busybox"))


def busybox_for(arch: str) -> Path:
    """The static busybox for a board ``arch``: the host's for x86_64, else Debian's.

    Foreign ones are Debian's ``busybox-static:<arch>``, downloaded with
    ``apt-get download`` (SHA256 checked against the package index) and
    unpacked into the cache; nothing is installed.  ``make setup`` makes
    the architecture known to apt.
    """
    from .. import arches, debs
    from ..cache import cache_root, ensure_entry

    if arch not in arches.names():
        raise EnvironmentProblem(f"no guest busybox for arch {arch!r}")
    if not arches.get(arch).foreign:
        return find_busybox()
    darch = arches.get(arch).debian
    cand = debs.candidate(f"busybox-static:{darch}")
    entry = cache_root() / "tools" / f"busybox-{darch}_{cand.version.replace(':', '_')}"

    def fetch(tmp: Path) -> None:
        deb = debs.download([cand], tmp)[0]
        debs.unpack(deb, tmp / "deb")
        (tmp / "deb" / "bin" / "busybox").rename(tmp / "busybox")
        shutil.rmtree(tmp / "deb")
        deb.unlink()

    ensure_entry(entry, fetch)
    return entry / "busybox"


class _Newc:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        entry = header + name.encode() + b"\0"
        entry += b"\0" * (-len(entry) % 4)
        entry += data + b"\0" * (-len(data) % 4)
        self.chunks.append(entry)
        self.ino += 1

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return b"".join(self.chunks)


def build(dest: Path, modules: list[Path], script: Path, busybox: Path | None = None,
          port_modules: list[Path] = ()) -> Path:
    """Write the initramfs to ``dest`` and return it (``port_modules``: the kernel's own, loaded first, in order)."""
    dest.write_bytes(image(modules, script, busybox, port_modules=port_modules))
    return dest


def image(modules: list[Path], script: Path | None, busybox: Path | None = None, init: str = INIT,
          port_modules: list[Path] = ()) -> bytes:
    """An initramfs: busybox, ``init``, the kernel's own ``port_modules`` (/lib/port, numbered in load order),
    and the script and modules (none for a warm base)."""
    busybox = busybox or find_busybox()
    arc = _Newc()
    for d in ("bin", "dev", "proc", "sys", "tmp", "modules") + (("lib", "lib/port") if port_modules else ()):
        arc.add(d, stat.S_IFDIR | 0o755)
    arc.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    arc.add("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes())
    arc.add("init", stat.S_IFREG | 0o755, init.encode())
    for i, ko in enumerate(port_modules):
        arc.add(f"lib/port/{i:02d}-{ko.name}", stat.S_IFREG | 0o644, ko.read_bytes())
    if script is not None:
        _add_payload(arc, modules, script)
    return arc.finish()


def _add_payload(arc: _Newc, modules: list[Path], script: Path) -> None:
    arc.add("run.sh", stat.S_IFREG | 0o755, script.read_bytes())
    for ko in modules:
        # Next to the modules: a scenario's guest program (not a .ko), executable.
        mode = 0o644 if ko.suffix == ".ko" else 0o755
        arc.add(f"modules/{ko.name}", stat.S_IFREG | mode, ko.read_bytes())


def warm_base(cache_dir: Path, busybox: Path, port_modules: list[Path] = ()) -> Path:
    """The base initramfs of warm snapshots (WARM_INIT, busybox, the kernel's ``port_modules``), kept in
    ``cache_dir`` by its content."""
    import hashlib

    from ..cache import atomic_write

    data = image([], None, busybox, WARM_INIT, port_modules)
    dest = cache_dir / f"base-{hashlib.sha256(data).hexdigest()[:20]}.cpio"
    if not dest.is_file():
        atomic_write(dest, data)
    return dest


def payload(modules: list[Path], script: Path) -> bytes:
    """What a restored warm guest unpacks (WARM_INIT): /run.sh and /modules, as an xz-compressed newc cpio.

    xz makes half of gzip's size here, and the serial console is the slow part;
    CRC32 is a check that busybox's unxz knows.
    """
    import lzma

    arc = _Newc()
    arc.add("modules", stat.S_IFDIR | 0o755)
    _add_payload(arc, modules, script)
    return lzma.compress(arc.finish(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)


def build_minimal(dest: Path, init: str, busybox: Path | None = None) -> Path:
    """An initramfs with only busybox and the given /init script."""
    busybox = busybox or find_busybox()
    arc = _Newc()
    for d in ("bin", "dev"):
        arc.add(d, stat.S_IFDIR | 0o755)
    arc.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    arc.add("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes())
    arc.add("init", stat.S_IFREG | 0o755, init.encode())
    dest.write_bytes(arc.finish())
    return dest
