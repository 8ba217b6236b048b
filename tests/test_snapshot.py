"""Warm snapshots (vmtests/snapshot.py): the key, the payload's way into the guest, and real resumes."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from helpers import msiforge


def _argv(tmp_path: Path, kernel: bytes = b"kernel", initrd: bytes = b"initrd", memory: str = "1024M",
          where: str = "a") -> list[str]:
    d = tmp_path / where
    d.mkdir(exist_ok=True)
    (d / "vmlinux").write_bytes(kernel)
    (d / "base.cpio").write_bytes(initrd)
    return ["qemu-system-x86_64", "-M", "q35", "-m", memory, "-kernel", str(d / "vmlinux"),
            "-initrd", str(d / "base.cpio"), "-append", "console=ttyS0"]


def test_the_key_follows_every_input_and_not_where_files_are(tmp_path):
    from msiforge.vmtests import snapshot

    base = snapshot.key(_argv(tmp_path))
    assert snapshot.key(_argv(tmp_path, where="b")) == base  # the same files elsewhere
    assert snapshot.key(_argv(tmp_path, kernel=b"kernel2")) != base
    assert snapshot.key(_argv(tmp_path, initrd=b"initrd2")) != base
    assert snapshot.key(_argv(tmp_path, memory="2048M")) != base
    assert snapshot.key([*_argv(tmp_path), "-icount", "shift=auto,sleep=off"]) != base


def test_a_half_written_snapshot_is_never_used(tmp_path):
    from msiforge.vmtests import snapshot

    argv = _argv(tmp_path)
    entry = tmp_path / "cache" / "snapshots" / snapshot.key(argv)
    entry.mkdir(parents=True)
    (entry / "state").write_bytes(b"QEVM")  # a save that was killed: no completion marker
    assert snapshot.lookup(argv, tmp_path / "cache") is None
    (entry / ".complete").write_text("ok\n")
    assert snapshot.lookup(argv, tmp_path / "cache").entry == entry


def test_the_payload_unpacks_with_the_guests_busybox(tmp_path):
    """What Resume sends is what WARM_INIT checks and unpacks, with the same busybox applets."""
    from msiforge.vmtests import initramfs, snapshot

    ko = tmp_path / "msiforge_ims0.ko"
    ko.write_bytes(bytes(range(256)) * 300)
    prog = tmp_path / "msiforge_prog"
    prog.write_bytes(b"\x7fELF" + b"\0" * 1000)
    script = tmp_path / "run.sh"
    script.write_text("echo hello\n")
    payload = initramfs.payload([ko, prog], script)
    assert payload == initramfs.payload([ko, prog], script)  # the same inputs, the same bytes
    resume = snapshot.Resume(snapshot.Snapshot(tmp_path), payload, "warn", 10)
    go, fault, lines, md5 = resume.go.split()
    assert (go, fault, int(lines)) == ("go", "warn", len(resume.lines))
    received = "".join(resume.lines)
    (tmp_path / "payload").write_text(received)
    busybox = str(initramfs.find_busybox())
    # The guest's check: md5sum of stdin prints "HASH  -".
    out = subprocess.run([busybox, "md5sum"], input=received.encode(), capture_output=True, check=True).stdout
    assert out.decode() == f"{md5}  -\n"
    root = tmp_path / "root"
    root.mkdir()
    # The guest's own pipeline (WARM_INIT), in the same busybox's shell.
    subprocess.run([busybox, "sh", "-c", f"base64 -d {tmp_path / 'payload'} | unxz | cpio -id"],
                   cwd=root, check=True, capture_output=True, env={"PATH": str(Path(busybox).parent)})
    assert (root / "run.sh").read_text() == "echo hello\n"
    assert (root / "modules" / "msiforge_ims0.ko").read_bytes() == ko.read_bytes()
    assert (root / "modules" / "msiforge_prog").stat().st_mode & 0o111
    assert not (root / "modules" / "msiforge_ims0.ko").stat().st_mode & 0o111
    assert resume.go == f"go warn {len(resume.lines)} {hashlib.md5(received.encode()).hexdigest()}\n"
    assert base64.decodebytes(received.encode()) == payload


def test_the_plan_says_why_a_boot_is_warm_or_cold():
    from msiforge import plan
    from helpers import default_board
    from msiforge.board import validate
    from msiforge.vmtests.qemu import Accel

    board = validate(default_board(), "b.yaml")
    tcg, kvm = Accel("tcg", "probe"), Accel("kvm", "probe")
    assert plan.start_choice(board, tcg, "qemu", False).value == "warm"
    assert plan.start_choice(board, tcg, "qemu", True) == plan.Choice("cold", "--cold: booted")
    assert "vng backend" in plan.start_choice(board, tcg, "vng", False).why
    assert plan.start_choice(board, kvm, "qemu", False).value == "cold"
    arm = validate({**default_board(), "arch": "arm64", "machine": "virt", "iommu": "none"}, "b.yaml")
    assert "not verified on arm64" in plan.start_choice(arm, tcg, "qemu", False).why


def test_the_payload_takes_a_virtio_serial_port_where_its_drivers_are_built_in_or_modules_it_has(tmp_path):
    from types import SimpleNamespace

    from msiforge import plan

    def choice(config: str | None, modules_dir=None):
        d = tmp_path / str(len(list(tmp_path.iterdir())))
        d.mkdir()
        if config is not None:
            (d / ".config").write_text(config)
        return plan.handover_choice(SimpleNamespace(build_dir=d, modules_dir=modules_dir))

    assert choice("CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_CONSOLE=y\n").value == "virtio-serial"
    modular = "CONFIG_VIRTIO_PCI=m\nCONFIG_VIRTIO_CONSOLE=m\n"  # Debian's 6.1
    assert choice(modular) == plan.Choice("console", "CONFIG_VIRTIO_PCI=m, CONFIG_VIRTIO_CONSOLE=m, but its "
                                                     "modules are not here: the serial console carries the "
                                                     "payload, base64 in acknowledged chunks")
    (tmp_path / "mods" / "kernel").mkdir(parents=True)
    assert choice(modular, tmp_path / "mods").why.startswith(
        f"CONFIG_VIRTIO_PCI=m, CONFIG_VIRTIO_CONSOLE=m, but no virtio_pci.ko under {tmp_path}/mods/kernel:")
    assert choice("CONFIG_VIRTIO_PCI=y\n# CONFIG_VIRTIO_CONSOLE is not set\n").why.startswith(
        "CONFIG_VIRTIO_CONSOLE not set:")
    assert choice(None) == plan.Choice("console", "no .config in its build directory: the serial console "
                                                  "carries the payload, base64 in acknowledged chunks")


def test_debian_6_1_loads_its_own_virtio_modules_for_the_port(fetched_kernels):
    """Debian's 6.1 builds virtio_pci and virtio_console as modules: its guests load them from its image
    package, dependencies first (read from each module's .modinfo), and take the payload over the port."""
    from msiforge import plan
    from msiforge.vmtests import kernel_modules

    k = fetched_kernels["debian:6.1.0-56"]
    choice, mods = plan.handover_plan(k)
    names = [m.stem for m in mods]
    assert sorted(names) == ["virtio", "virtio_console", "virtio_pci", "virtio_pci_legacy_dev",
                             "virtio_pci_modern_dev", "virtio_ring"]
    for i, m in enumerate(mods):
        info = kernel_modules.modinfo(m)
        assert info["vermagic"].split()[0] == k.release
        assert set(filter(None, info["depends"].split(","))) <= set(names[:i]), (m.name, info["depends"])
    assert choice.value == "virtio-serial"
    assert plan.handover_plan(fetched_kernels["debian:6.12.117+deb12"])[1] == []


def test_qmp_client_talks_to_a_real_qemu(tmp_path):
    """The QMP client against QEMU itself (no guest: -M none)."""
    from msiforge.vmtests import qemu, snapshot

    sock = tmp_path / "q.sock"
    proc = subprocess.Popen([qemu.qemu_binary(), "-M", "none", "-display", "none", "-nodefaults",
                             "-qmp", f"unix:{sock},server=on,wait=off", "-S"])
    try:
        q = snapshot.Qmp(sock, 10)
        assert q.cmd("query-status")["status"] == "prelaunch"
        with pytest.raises(snapshot.Unusable, match="QMP no-such-command: "):
            q.cmd("no-such-command")
        q.cmd("quit")
        assert proc.wait(10) == 0
        q.close()
    finally:
        proc.kill()
        proc.wait()


#: The one thing a scenario may legitimately do differently from boot to boot, cold or warm: an
#: affinity move that the kernel completes only when interrupts arrive takes as many as the
#: timing needs (run.sh's move_to fires until the effective affinity follows, and says so).
_MOVE = re.compile(r"(\S+): move of slot \d+ to CPU\d+ completed after (\d+) interrupt\(s\)")


def _untimed(scenarios: list[dict]) -> list[dict]:
    """The scenarios without their times and without the interrupts a deferred affinity move took."""
    out = []
    for s in scenarios:
        s = {k: v for k, v in s.items() if k != "seconds"}
        interrupts = dict(s.get("interrupts", {}))
        kept = []
        for d in s.get("diagnostics", []):
            if m := _MOVE.fullmatch(d):
                interrupts[m[1]] -= int(m[2])
            else:
                kept.append(d)
        out.append(s | {"diagnostics": kept, "interrupts": interrupts})
    return out


def _ktap(path: Path) -> list[str]:
    """A KTAP file's lines, less the deferred-move notes and the interrupts they took (see _MOVE)."""
    out, moved = [], {}
    for ln in path.read_text().splitlines():
        if m := _MOVE.search(ln):
            moved[m[1]] = moved.get(m[1], 0) + int(m[2])
            continue
        if (m := re.fullmatch(r"(\s*# (\S+): interrupts: )(\d+)", ln)) and m[2] in moved:
            ln = f"{m[1]}{int(m[3]) - moved.pop(m[2])}"
        out.append(ln)
    return out


def _run(tmp_path: Path, name: str, *extra: str) -> dict:
    run_dir = tmp_path / name
    proc = msiforge("run", "--kernel", "debian:6.12.117+deb12", "--out", str(run_dir), *extra, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((run_dir / "results.json").read_text())["kernels"][0] | {"dir": run_dir}


def _why_not_warm(k: dict) -> str:
    """What a run that should have resumed says about its warm attempt (for the assertion message)."""
    why = k["dir"] / k["release"] / "warm-failed.txt"
    return f"start {k['start']}: " + (why.read_text() if why.is_file() else "no warm-failed.txt")


@pytest.mark.vm
def test_a_resumed_guest_gives_the_cold_verdicts(tmp_path):
    """The default board on 6.12, booted and resumed: the same verdicts, the same KTAP, line for line."""
    cold = _run(tmp_path, "cold", "--cold")
    warm = _run(tmp_path, "warm")  # saves the snapshot if the cache has none, then resumes it
    again = _run(tmp_path, "again")  # resumes it
    assert cold["start"] == "cold"
    assert warm["start"] in ("saved", "resumed")  # saved unless an earlier run of the suite did
    assert again["start"] == "resumed", _why_not_warm(again)
    for k in (warm, again):
        assert k["verdict"] == cold["verdict"] == "pass"
        assert _untimed(k["scenarios"]) == _untimed(cold["scenarios"])
        assert _ktap(k["dir"] / k["release"] / "ktap.txt") == _ktap(cold["dir"] / cold["release"] / "ktap.txt")
        log = (k["dir"] / k["release"] / "console.log").read_text()
        assert "msiforge-warm: payload ok" in log
        assert log.index("msiforge-ready") < log.index("msiforge-guest: start")  # the boot log comes first
        plan = json.loads((k["dir"] / "plan.json").read_text())["kernels"][0]["boot"]
        assert plan["start"]["value"] == "warm" and "msiforge.fault" not in plan["cmdline"]
    assert "-incoming" in (again["dir"] / again["release"] / "cmdline").read_text()


@pytest.mark.vm
def test_a_snapshot_that_does_not_resume_is_replaced_by_a_cold_boot(tmp_path):
    """A state QEMU refuses: the run boots cold (the right verdict), removes it, and the next run saves anew."""
    first = _run(tmp_path, "first")
    if first["start"] == "saved":
        first = _run(tmp_path, "first-resumed")
    assert first["start"] == "resumed", _why_not_warm(first)
    argv = shlex.split((first["dir"] / first["release"] / "cmdline").read_text())
    entry = Path(shlex.split(argv[argv.index("-incoming") + 1].removeprefix("exec:"))[1]).parent
    assert (entry / ".complete").is_file()
    state = entry / "state"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a truncated stream
    broken = _run(tmp_path, "broken")
    assert broken["start"] == "cold"
    why = (broken["dir"] / broken["release"] / "warm-failed.txt").read_text()
    assert "QEMU" in why or "resum" in why
    assert not entry.exists()
    assert _untimed(broken["scenarios"]) == _untimed(first["scenarios"])
    assert _run(tmp_path, "after")["start"] == "saved"  # a new snapshot
    later = _run(tmp_path, "later")
    assert later["start"] == "resumed", _why_not_warm(later)


@pytest.mark.vm
def test_a_warm_guest_waits_for_its_modules_and_a_build_error_ends_it(fetched_kernels, tmp_path):
    """The resumed guest starts while the modules build, paused until they are there; a build error
    stops it and is the kernel's verdict (build-failed, naming file and line), not a cold boot."""
    import subprocess as sp

    from msiforge import runner
    from msiforge.board import validate
    from msiforge.cache import cache_root
    from msiforge.generator import render
    from msiforge.vmtests import qemu

    from helpers import default_board

    first = _run(tmp_path, "first")  # a snapshot to resume (saved now if the suite has none yet)
    kernel = fetched_kernels["debian:6.12.117+deb12"]
    board = validate(default_board(), "board.yaml")
    accel = qemu.choose_accel("auto", kernel.vmlinuz, cache_root() / "probes")
    tree = render.generate(board, [render.target_for(kernel)], tmp_path / "gen")[kernel.release]
    c = tree / "msiforge_ims0.c"
    c.write_text(c.read_text() + "\n/* edited */\n")  # new sources: a real build, not the module cache
    kdir = tmp_path / "edited"
    kdir.mkdir()
    result = runner.boot_kernel(board, kernel, tree, kdir, accel)
    assert result.verdict == "pass", result.detail
    events = json.loads((kdir / "events.json").read_text())
    assert events["start"] == "resumed", (first["start"], (kdir / "warm-failed.txt").read_text())
    steps = events["warm_seconds"]
    # Loaded, then (still paused) the modules, then continued: the guest never ran waiting for them.
    assert steps["loaded"] <= steps["built"] <= steps["continued"] <= steps["payload"]

    c.write_text(c.read_text() + "\nstatic int msiforge_broken = ;\n")
    kdir = tmp_path / "broken"
    kdir.mkdir()
    result = runner.boot_kernel(board, kernel, tree, kdir, accel)
    assert result.verdict == "build-failed"
    assert f"{kdir / 'build' / 'msiforge_ims0.c'}:" in result.detail and "error:" in result.detail
    assert "-incoming" in (kdir / "cmdline").read_text()  # the guest had been started
    assert not (kdir / "warm-failed.txt").exists()  # the snapshot is not blamed
    left = sp.run(["pgrep", "-f", str(cache_root() / "snapshots")], capture_output=True, text=True).stdout
    assert not left.strip(), f"QEMU left running: {left}"


def test_a_report_before_the_payload_is_the_snapshots_not_the_code_under_test():
    """A resumed base guest that WARNs or oopses before its payload arrives: Unusable (cold boot), not a verdict.

    The guest is a shell that prints what the resumed 6.12.118 guest printed (its flags corrupted by the
    restore); the real resume path runs in the VM tests above.
    """
    import pexpect

    from msiforge.vmtests import snapshot

    line = "[    7.226965] WARNING: CPU: 0 PID: 132 at arch/x86/kernel/traps.c:1120 exc_debug_kernel+0xca/0x160"
    child = pexpect.spawn("sh", ["-c", f"read go; echo '{line}'; sleep 30"], encoding="utf-8", timeout=10)
    handover = snapshot._Handover(b"payload", None, 10)
    try:
        with pytest.raises(snapshot.Unusable, match=r"reported 'WARNING: CPU: 0 PID: 132 at arch/x86/kernel/"
                                                    r"traps.c:1120 exc_debug_kernel\+0xca/0x160' before its "
                                                    r"payload arrived \(no msiforge module loaded yet\)"):
            handover._send_payload(child)
    finally:
        child.terminate(force=True)
        handover.cleanup()


def test_a_single_step_trap_in_a_resumed_guest_ends_the_run_as_the_snapshots_fault(tmp_path):
    """exc_debug_kernel's WARN after the payload, while the scenarios run: Misbehaved at once (no timeout).

    As seen in a resumed 6.12.117 guest during the affinity scenario (EFLAGS 04901f42 after a
    cmpxchg16b: TF, IOPL 3 and bits no instruction sets).  A cold guest that prints it gets the
    usual warn verdict: only a resumed one's flags come from QEMU's restore.
    """
    import time

    from msiforge.vmtests import console, snapshot

    class Resumed(snapshot._Handover):
        start = "resumed"
        fault_pattern = snapshot.RESTORE_FAULT

        def __call__(self, child, log_so_far=""):
            self.cleanup()

    line = "[  123.354195] WARNING: CPU: 0 PID: 285 at arch/x86/kernel/traps.c:1120 exc_debug_kernel+0xca/0x160"
    guest = ["sh", "-c", f"echo '{console.START}'; echo 'ok 1 deliver'; echo '{line}'; sleep 60"]
    start = time.monotonic()
    with pytest.raises(snapshot.Misbehaved, match=r"reported 'WARNING: CPU: 0 PID: 285 at arch/x86/kernel/"
                                                  r"traps.c:1120 exc_debug_kernel\+0xca/0x160': a kernel-mode "
                                                  r"single-step trap that nothing set up, QEMU 7.2's restore"):
        console.run(guest, tmp_path / "warm.log", 30, 30, ["deliver"], handover=Resumed(b"payload", None, 10))
    assert time.monotonic() - start < 20
    ev = console.run(["sh", "-c", f"echo '{console.START}'; echo '{line}'; echo '{console.DONE}'"],
                     tmp_path / "cold.log", 30, 30, ["deliver"])
    assert ev.ending == "done" and line in (tmp_path / "cold.log").read_text()


def test_waiting_for_the_modules_is_not_charged_to_the_boot_timeout(tmp_path):
    """The guest waits for its payload's module build paused: that wait is given back to the boot phase.

    A slow build (a build root made on first use took 140 s in a matrix) must not make a boot-timeout
    verdict.  The same wait spent elsewhere in the handover still counts: the guest's own time does.
    """
    import time

    from msiforge.vmtests import console, snapshot

    class Resumed(snapshot._Handover):
        start = "resumed"

        def __init__(self, payload, busy: bool):
            super().__init__(payload, None, 10)
            self.busy = busy

        def __call__(self, child, log_so_far=""):
            if self.busy:  # the guest's own handover being slow: 3 s of the run's clock, charged
                # On the run's clock, not the wall's: a loaded host charges a wall second as less.
                t0 = self.clock.now()
                while self.clock.now() - t0 < 3:
                    time.sleep(0.1)
            self._payload_ready()
            self.cleanup()

    def slow_build() -> bytes:
        time.sleep(3)
        return b"payload"

    guest = ["sh", "-c", f"sleep 0.5; echo '{console.START}'; echo '{console.DONE}'"]
    ev = console.run(guest, tmp_path / "a.log", 2, 30, ["deliver"], handover=Resumed(slow_build, busy=False))
    assert ev.ending == "done" and ev.started
    ev = console.run(guest, tmp_path / "b.log", 2, 30, ["deliver"], handover=Resumed(b"payload", busy=True))
    assert ev.ending == "timeout" and not ev.started


def test_the_cache_keeps_the_most_recently_used_snapshots(tmp_path, monkeypatch):
    """prune() removes the least recently used complete snapshots; lookup() counts as a use."""
    import os

    from msiforge.errors import InputError
    from msiforge.vmtests import snapshot

    argvs = [["true", "-name", f"guest{i}"] for i in range(5)]
    for i, argv in enumerate(argvs):
        entry = tmp_path / "snapshots" / snapshot.key(argv)
        entry.mkdir(parents=True)
        (entry / "state").write_bytes(b"x")
        (entry / ".complete").write_text("ok\n")
        os.utime(entry / ".complete", ns=(i * 10**9, i * 10**9))  # guest4 is the newest
    (tmp_path / "snapshots" / "half").mkdir()  # no .complete: being written, never pruned
    (tmp_path / "snapshots" / "base-x.cpio").write_bytes(b"")
    assert snapshot.lookup(argvs[0], tmp_path) is not None  # used now: the newest
    removed = snapshot.prune(tmp_path, 2)
    assert sorted(removed) == sorted(tmp_path / "snapshots" / snapshot.key(a) for a in argvs[1:4])
    assert snapshot.lookup(argvs[0], tmp_path) and snapshot.lookup(argvs[4], tmp_path)
    assert (tmp_path / "snapshots" / "half").is_dir() and (tmp_path / "snapshots" / "base-x.cpio").exists()
    monkeypatch.setenv("MSIFORGE_SNAPSHOTS_KEPT", "0")
    with pytest.raises(InputError, match="MSIFORGE_SNAPSHOTS_KEPT: '0' is not a whole number of at least 1"):
        snapshot.kept()
    monkeypatch.delenv("MSIFORGE_SNAPSHOTS_KEPT")
    assert snapshot.kept() == 48
