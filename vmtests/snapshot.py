"""Warm snapshots: boot a kernel and machine once, save the VM, resume it for every later run.

A run's kernel, machine and base initramfs rarely change between runs; the
driver and the guest script do.  So the first warm run of a (kernel, QEMU
command line) boots the base guest (``initramfs.WARM_INIT``: busybox, no
msiforge module) to its ready point, where it waits on the console, and
saves the VM there with QEMU's migration (QMP ``stop``, ``migrate
exec:cat > FILE``) into the cache.  Later runs start QEMU with the same
command line and ``-incoming`` while the modules build, continue the guest
once they are built, and hand it the payload (run.sh and the modules, an xz
cpio): over a virtio-serial port hot-added for it where the kernel has the
drivers built in or as modules of its own package (those the base guest
loads first), else over the serial console in base64, in acknowledged
chunks.  From there the guest goes on as a cold boot does.

What must match between the save and a resume is everything that shapes the
saved state: the QEMU binary, every argument (machine, CPU, memory, clock
mode, devices, the boot image, the kernel command line) and the files they
name (kernel, base initramfs, device tree).  The cache key covers all of it,
so a changed input never resumes an old snapshot; the entry is written by the
cache's discipline (temporary directory, rename, lock), so a half-written one
is never used.  QEMU's edu has no vmstate: a resumed guest writes each edu's
PCI header back before anything touches it (see WARM_INIT).  The guest's
clocks continue from the save (icount state is in the stream), so a resumed
guest sees no jump of its monotonic clocks; its wall clock is as old as the
snapshot.  docs/research/snapshots.md has the reasoning and the sources.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pexpect

from . import console, initramfs

#: Bump when the save procedure or the saved guest's layout changes.
FORMAT = 1
#: Files up to this size are keyed by their content, larger ones by path, size and mtime
#: (the big ones, kernel images, sit in content-keyed cache paths already).
_HASHED_FILE_LIMIT = 16 << 20


#: A kernel report from a base guest (no msiforge module loaded): the line, for the reason given.
BASE_REPORT = r"(?:WARNING: CPU: \d+ PID: |" + console.REPORT + r")[^\r\n]*"
#: A single-step trap in kernel mode that nothing set up: x86's exc_debug_kernel warns ("the kernel
#: doesn't use TF single-step outside of kprobes and KGDB", neither of which a run uses).  In a
#: resumed guest it is QEMU 7.2's restore: the CPU's flags come back with TF set, and garbage in
#: bits no instruction writes, right after a cmpxchg16b.  Seen after the payload too, so it is
#: watched for the whole run: the guest's verdict would be QEMU's, not the drivers'.
RESTORE_FAULT = r"WARNING: CPU: \d+ PID: \d+ at arch/x86/kernel/traps\.c:\d+ exc_debug_kernel[^\r\n]*"


class Unusable(Exception):
    """A snapshot could not be made or resumed; the run boots cold and says why."""


class Misbehaved(Unusable):
    """A resumed guest reported a kernel problem that is QEMU 7.2's restore, not the run's: tried again once.

    Any report before its payload (no msiforge code has run), or RESTORE_FAULT
    at any time.  The same state had resumed cleanly in the post-save check, so
    the state is not what went wrong; a second resume of it usually runs clean.
    """


class Qmp:
    """A minimal QMP client over a UNIX socket: one command at a time, events skipped."""

    def __init__(self, path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise Unusable(f"QEMU's QMP socket did not appear within {timeout:g} s") from None
                time.sleep(0.01)
        self.sock.settimeout(timeout)
        self.buf = b""
        self._message()  # the greeting
        self.cmd("qmp_capabilities")

    def _message(self) -> dict:
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except OSError as exc:
                raise Unusable(f"QMP: {exc}") from None
            if not chunk:
                raise Unusable("QEMU closed its QMP socket (it exited)")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name: str, /, **args) -> dict:
        """Run one QMP command; its ``return`` value, or Unusable naming QMP's error."""
        msg = {"execute": name, **({"arguments": args} if args else {})}
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError:
            raise Unusable(f"QMP {name}: QEMU closed its QMP socket (it exited)") from None
        while True:
            reply = self._message()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise Unusable(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")

    def wait_status(self, want: set[str], timeout: float) -> str:
        """Poll ``query-status`` until the VM is in one of ``want``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.cmd("query-status")["status"]
            if status in want:
                return status
            if time.monotonic() > deadline:
                raise Unusable(f"the VM stayed {status!r} for {timeout:g} s")
            time.sleep(0.005)

    def close(self) -> None:
        self.sock.close()


def _file_identity(word: str) -> str:
    p = Path(word)
    try:
        if not p.is_file():
            return ""
    except OSError:
        return ""
    st = p.stat()
    if st.st_size <= _HASHED_FILE_LIMIT:
        return hashlib.sha256(p.read_bytes()).hexdigest()
    return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def key(argv: list[str]) -> str:
    """The cache key of a snapshot of the guest ``argv`` boots: the binary, every argument and the files named."""
    h = hashlib.sha256(f"msiforge-snapshot {FORMAT}\0".encode())
    binary = Path(shutil.which(argv[0]) or argv[0])
    st = binary.stat()
    h.update(f"{binary.resolve()}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    for word in argv[1:]:
        # A file counts by what it holds, not where it is (a run's device tree sits in its own directory).
        h.update((_file_identity(word) or word).encode() + b"\0")
    return h.hexdigest()[:24]


def lookup(argv: list[str], cache_dir: Path) -> Snapshot | None:
    """The saved snapshot for ``argv``, if the cache has a complete one (marked as used now)."""
    entry = cache_dir / "snapshots" / key(argv)
    try:
        os.utime(entry / ".complete")  # its last use: prune() keeps the most recently used
    except OSError:
        return None
    return Snapshot(entry)


def kept() -> int:
    """How many snapshots the cache keeps (``$MSIFORGE_SNAPSHOTS_KEPT``, default 48: ~80 MB each, so a
    whole ladder of Debian kernels and the test suite's fit together)."""
    text = os.environ.get("MSIFORGE_SNAPSHOTS_KEPT", "48")
    if not text.isdigit() or int(text) < 1:
        from ..errors import InputError

        raise InputError(f"MSIFORGE_SNAPSHOTS_KEPT: {text!r} is not a whole number of at least 1")
    return int(text)


def prune(cache_dir: Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` most recently used snapshots; return what was removed.

    A guest resuming a removed one either has its state open already (the
    file lives on until it is closed) or fails to load it and boots cold.
    """
    root = cache_dir / "snapshots"
    entries = []
    for entry in root.iterdir() if root.is_dir() else ():
        try:
            entries.append(((entry / ".complete").stat().st_mtime_ns, entry))
        except OSError:
            continue  # not a snapshot (the base initramfs, a lock) or one being written
    removed = []
    for _, entry in sorted(entries, reverse=True)[keep:]:
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _socket_dir() -> Path:
    # A UNIX socket path is at most 107 bytes: keep it short, whatever the cache's path.
    return Path(tempfile.mkdtemp(prefix="msiforge-qmp-"))


@dataclass(frozen=True)
class Snapshot:
    """A saved base guest in the cache: the VM state and the console log up to the ready point."""

    entry: Path

    @property
    def state(self) -> Path:
        return self.entry / "state"

    @property
    def boot_log(self) -> str:
        return (self.entry / "boot.log").read_text(encoding="utf-8", errors="replace")

    @property
    def info(self) -> dict:
        return json.loads((self.entry / "info.json").read_text())

    def discard(self) -> None:
        """Remove it from the cache (it failed to resume); the next warm run saves a new one."""
        shutil.rmtree(self.entry, ignore_errors=True)


#: The virtio-serial bus of a base guest whose kernel has the drivers (plan.handover_choice): at a
#: resume the host hot-adds a port on it, backed by the payload's file, and the guest reads it whole.  No
#: MSI-X vectors (vectors=0: INTx), so the guest's vector space is a cold boot's; port 0 is a console's.
PORT_BUS = "msiforge-vser"
PORT_NAME = initramfs.PORT_NAME
PORT_DEVICE = ["-device", f"virtio-serial-pci,id={PORT_BUS},max_ports=2,vectors=0"]
#: The handover's ways (BootPlan.handover): a hot-added virtio-serial port, or the serial console.
VIRTIO_SERIAL, CONSOLE = "virtio-serial", "console"


class _Handover:
    """What both ways of starting a warm guest share: the go line and the payload, over one of two channels.

    console.run calls it with the guest: at once (``at_ready`` False: a
    resumed guest is past its ready point), or when the guest prints
    initramfs.READY (a booting one), inside the run's boot phase.  The
    payload crosses a virtio-serial port the host hot-adds (``channel``
    VIRTIO_SERIAL: the xz cpio as it is, 0.1 s) or the serial console
    (CONSOLE: base64 in acknowledged chunks, about 0.5 s for 29 KB).
    """

    at_ready = False
    #: What the run's events record as its start (Events.start).
    start = ""
    #: A console line that makes the whole run the snapshot's fault (console.run watches for it).
    fault_pattern: str | None = None

    def fault(self, line: str) -> None:
        """``fault_pattern`` matched ``line``: raise Misbehaved (the run is tried again, then cold)."""
        raise Misbehaved(f"the resumed guest reported {line.strip()!r}: a kernel-mode single-step trap that "
                         "nothing set up, QEMU 7.2's restore (corrupt CPU flags), not the run's verdict")

    def __init__(self, payload: bytes | Callable[[], bytes], fault: str | None, timeout: float,
                 channel: str = CONSOLE) -> None:
        self.sockdir = _socket_dir()
        self.sock = self.sockdir / "qmp.sock"
        #: The payload, or what makes it (the run's module build, going on beside the guest's start).
        self.payload = payload
        self.data: bytes | None = None
        self.channel = channel
        self.fault_arg = fault
        self.lines: list[str] = []
        self.timeout = timeout
        #: What the run's events record (Events.warm_seconds): seconds from QEMU's start to each step.
        self.seconds: dict[str, float] = {}
        #: console.run's timeout clock (cpushare.GuestClock), and what waiting for the payload took of it.
        self.clock = None
        self.waited = 0.0
        self.spawned = time.monotonic()

    def _mark(self, step: str) -> None:
        self.seconds[step] = round(time.monotonic() - self.spawned, 3)

    def _payload_ready(self) -> None:
        """Have the payload (waiting for the module build it comes from; its BuildError is raised).

        The guest is paused meanwhile; what the wait cost on the run's timeout
        clock (``clock``, console.run's) is kept in ``waited``: the run gives
        it back, since the guest did not run.
        """
        if self.data is not None:
            return
        before = self.clock.now() if self.clock else 0.0
        self.data = self.payload() if callable(self.payload) else self.payload
        self.waited = (self.clock.now() - before) if self.clock else 0.0
        if self.channel == VIRTIO_SERIAL:
            (self.sockdir / "payload").write_bytes(self.data)
        else:
            self.lines = base64.encodebytes(self.data).decode().splitlines(keepends=True)
        self._mark("built")

    @property
    def go(self) -> str:
        """The line that starts the handover (WARM_INIT reads it): ``go FAULT LINES MD5`` for the console,
        ``port FAULT BYTES MD5`` for a virtio-serial port (the MD5 of what crosses)."""
        self._payload_ready()
        if self.channel == VIRTIO_SERIAL:
            return f"port {self.fault_arg or '-'} {len(self.data)} {hashlib.md5(self.data).hexdigest()}\n"
        text = "".join(self.lines)
        return f"go {self.fault_arg or '-'} {len(self.lines)} {hashlib.md5(text.encode()).hexdigest()}\n"

    def _attach(self, qmp: Qmp) -> None:
        """For a virtio-serial handover: add the port, backed by the payload's file (the guest reads it whole)."""
        if self.channel != VIRTIO_SERIAL:
            return
        self._payload_ready()
        qmp.cmd("chardev-add", id="msiforge-payload",
                backend={"type": "file", "data": {"in": str(self.sockdir / "payload"), "out": "/dev/null"}})
        qmp.cmd("device_add", driver="virtserialport", bus=f"{PORT_BUS}.0", nr=1, chardev="msiforge-payload",
                name=PORT_NAME)
        self._mark("attached")

    def _send_payload(self, child: pexpect.spawn) -> None:
        go = self.go
        self._mark("continued")
        child.send(go)
        step = initramfs.CHUNK_LINES
        for n, i in enumerate(range(0, len(self.lines), step), start=1):
            child.send("".join(self.lines[i:i + step]))
            self._expect(child, rf"msiforge-warm: chunk {n}\r*\n", f"chunk {n} of the payload")
        self._expect(child, r"msiforge-warm: payload ok\r*\n", "the payload's checksum")
        self._mark("payload")

    def _expect(self, child: pexpect.spawn, pattern: str, what: str) -> None:
        idx = child.expect([pattern, r"msiforge-warm: payload corrupt", pexpect.EOF, pexpect.TIMEOUT,
                            BASE_REPORT], timeout=self.timeout)
        if idx == 4:
            # No msiforge code has run yet: the report is the resumed base guest's, a snapshot gone bad.
            raise Misbehaved(f"the guest reported {child.after.strip()!r} before its payload arrived "
                             "(no msiforge module loaded yet)")
        if idx != 0:
            why = ("arrived corrupt", "QEMU exited", f"not acknowledged within {self.timeout:g} s")[idx - 1]
            raise Unusable(f"handing the guest its payload: {what} {why}")

    def cleanup(self) -> None:
        shutil.rmtree(self.sockdir, ignore_errors=True)


class SaveFirst(_Handover):
    """The first warm run of a (kernel, command line): boot the base guest, save it at its ready point, go on.

    The save costs a pause of the guest (its clocks stop with it), not a
    boot: the same guest then gets its payload and runs the scenarios.  A
    guest that never gets ready is left to the run's own verdict (a panic, a
    hang); a failed save leaves no snapshot and the run goes on.
    """

    def __init__(self, argv: list[str], cache_dir: Path, payload: bytes | Callable[[], bytes], fault: str | None,
                 timeout: float, channel: str = CONSOLE) -> None:
        super().__init__(payload, fault, timeout, channel)
        self.base_argv = argv
        self.entry = cache_dir / "snapshots" / key(argv)
        #: Why no snapshot was saved ("" when it was, or another run saved it meanwhile).
        self.save_error = ""

    at_ready = True
    start = "saved"

    def argv(self, argv: list[str]) -> list[str]:
        self.spawned = time.monotonic()
        return [*argv, "-qmp", f"unix:{self.sock},server=on,wait=off"]

    def __call__(self, child: pexpect.spawn, log_so_far: str = "") -> None:
        """Save the guest, which has just printed its ready line (``log_so_far``: the console until then)."""
        from ..cache import ensure_entry

        self._mark("ready")
        try:
            qmp = Qmp(self.sock, self.timeout)
            try:
                # Paused for the save, and after it until the modules are built: a guest left running
                # meanwhile would race its idle clock ahead (icount, sleep=off) and take CPU from the build.
                qmp.cmd("stop")

                def save(tmp: Path) -> None:
                    _migrate(qmp, tmp / "state", self.timeout)
                    self._mark("saved")
                    _check(self.base_argv, tmp / "state", self.timeout)
                    self._mark("checked")
                    (tmp / "boot.log").write_text(log_so_far, encoding="utf-8", errors="replace")
                    info = {"argv": self.base_argv, "boot_seconds": self.seconds["ready"],
                            "save_seconds": round(self.seconds["saved"] - self.seconds["ready"], 3),
                            "check_seconds": round(self.seconds["checked"] - self.seconds["saved"], 3),
                            "state_bytes": (tmp / "state").stat().st_size}
                    (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")

                try:
                    ensure_entry(self.entry, save)
                    prune(self.entry.parent.parent, kept())
                except Unusable as exc:
                    self.save_error = str(exc)
                self._payload_ready()
                self._attach(qmp)  # after the save: the snapshot has no port, as every resume expects
                qmp.cmd("cont")
            finally:
                qmp.close()
            self._send_payload(child)
        finally:
            self.cleanup()


def _migrate(qmp: Qmp, dest: Path, timeout: float) -> None:
    """Save the stopped VM's state into ``dest`` (QEMU's migration stream, through ``cat``)."""
    qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})  # no rate limit: it is a local file
    qmp.cmd("migrate", uri=f"exec:cat > {shlex.quote(str(dest))}")
    deadline = time.monotonic() + timeout
    while (status := qmp.cmd("query-migrate").get("status")) not in ("completed", "failed", "cancelled"):
        if time.monotonic() > deadline:
            qmp.cmd("migrate_cancel")
            raise Unusable(f"saving the VM did not finish within {timeout:g} s")
        time.sleep(0.005)
    if status != "completed":
        raise Unusable(f"QEMU could not save the VM (migration {status})")


def _check(argv: list[str], state: Path, timeout: float) -> None:
    """Resume a fresh snapshot once, in a QEMU of its own, and have the guest do some work; Unusable if it fails.

    QEMU 7.2 under TCG very rarely saves a state that does not resume (the
    guest crashes at once, or QEMU refuses the stream): such a snapshot is
    never kept.
    """
    sockdir = _socket_dir()
    sock = sockdir / "qmp.sock"
    child = console.spawn([*argv, "-qmp", f"unix:{sock},server=on,wait=off",
                           "-incoming", f"exec:cat {shlex.quote(str(state))}"],
                          encoding="utf-8", codec_errors="replace", timeout=timeout, echo=False,
                          dimensions=(50, 250))
    try:
        try:
            qmp = Qmp(sock, timeout)
            try:
                qmp.wait_status({"paused", "running"}, timeout)
                qmp.cmd("cont")
            finally:
                qmp.close()
        except Unusable as exc:
            raise Unusable(f"the new snapshot does not resume: {_qemu_error(child) or exc}") from None
        child.send("check - 0 -\n")
        idx = child.expect([r"msiforge-warm: check [0-9a-f]+ ok", BASE_REPORT, pexpect.EOF, pexpect.TIMEOUT])
        if idx == 1:
            raise Unusable(f"the new snapshot does not resume: the guest reported {child.after.strip()!r}")
        if idx != 0:
            tail = " ".join((child.before or "").split()[-12:])
            raise Unusable(f"the new snapshot does not resume: the guest did not pass its check ({tail})")
    finally:
        child.terminate(force=True)
        child.close()
        console.forget(child)
        shutil.rmtree(sockdir, ignore_errors=True)


def _qemu_error(child: pexpect.spawn) -> str:
    """QEMU's last error line, once it has exited ("" if it says none within a few seconds)."""
    try:
        child.expect(pexpect.EOF, timeout=5)
    except pexpect.TIMEOUT:
        pass
    errors = re.findall(r"qemu-system-[\w-]+: ([^\r\n]+)", child.before or "")
    return errors[-1] if errors else ""


class Resume(_Handover):
    """A later warm run: QEMU loads the snapshot, the guest continues and gets its payload.

    The VM stays paused after the load (it was saved stopped) until the
    ``cont``.  Unusable when the state does not load or the payload does not
    arrive whole: the caller removes the snapshot and boots cold.
    """

    start = "resumed"
    fault_pattern = RESTORE_FAULT

    def __init__(self, snap: Snapshot, payload: bytes | Callable[[], bytes], fault: str | None,
                 timeout: float, channel: str = CONSOLE) -> None:
        super().__init__(payload, fault, timeout, channel)
        self.snap = snap

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` (the command line the snapshot was saved with) as a resume of it."""
        self.spawned = time.monotonic()
        return [*argv, "-qmp", f"unix:{self.sock},server=on,wait=off",
                "-incoming", f"exec:cat {shlex.quote(str(self.snap.state))}"]

    def __call__(self, child: pexpect.spawn, log_so_far: str = "") -> None:
        try:
            try:
                qmp = Qmp(self.sock, self.timeout)
                try:
                    qmp.wait_status({"paused", "running"}, self.timeout)
                    self._mark("loaded")
                    # Still paused: its clocks stand while the modules finish building.
                    self._payload_ready()
                    self._attach(qmp)
                    qmp.cmd("cont")
                finally:
                    qmp.close()
            except Unusable as exc:
                raise Unusable(f"QEMU did not load the snapshot: {_qemu_error(child) or exc}") from None
            self._send_payload(child)
        finally:
            self.cleanup()
