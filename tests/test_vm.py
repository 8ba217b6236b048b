"""Real boots: Debian kernels in QEMU, real interrupts from edu DMA, exact counts."""

from __future__ import annotations

import json
import shlex
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import msiforge, write_board

pytestmark = pytest.mark.vm
SCENARIOS = ["deliver", "mask", "affinity", "groups", "unload"]


def _results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_default_board_on_6_1_and_6_12(tmp_path):
    """One generator, two kernels: every scenario passes on both, with artifacts written."""
    run_dir = tmp_path / "run"
    proc = msiforge("run", "--kernel", "debian:6.1.0-56", "--kernel", "debian:6.12.117+deb12", "--out", str(run_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "accelerator: " in proc.stderr and "(" in proc.stderr.split("accelerator: ")[1].splitlines()[0]
    res = _results(run_dir)
    assert res["passed"] is True
    assert [k["release"].split(".")[0:2] for k in res["kernels"]] == [["6", "1"], ["6", "12"]]
    for k in res["kernels"]:
        assert [s["name"] for s in k["scenarios"]] == SCENARIOS
        assert all(s["status"] == "pass" for s in k["scenarios"]), k
        assert all(s["devices"] == {"ims0": "ok", "pmsi0": "ok"} for s in k["scenarios"])
        ktap = (run_dir / k["release"] / "ktap.txt").read_text()
        assert ktap.startswith("KTAP version 1\n1..6\n")
        assert "# ims0: 32 slot(s) x 3 fires delivered" in ktap
        assert "# pmsi0: 3 fires while masked (parent mask, 0 held by the device), 1 delivered on unmask" in ktap
        assert "# ims0: 3 fires while masked (source mask, 3 held by the device), 1 delivered on unmask" in ktap
        assert "parent INTEL-IR" in ktap
        assert "# ims0: groups 4 8 4 at runtime (module-local), group 1 freed and reallocated at slot 4" in ktap
        assert "# pmsi0: groups 2 4 2 at runtime (module-local), group 1 freed and reallocated at slot 2" in ktap
        # What each step delivered, as the guest counted it: deliver 32 + 8 slots x 3 fires; mask one
        # on unmask and one fired; groups 16 + 8 slots twice; affinity 3 on CPU1 and what each of its
        # two moves took (at most 5 each); unload leaves no driver to count.
        counts = {s["name"]: s["interrupts"] for s in k["scenarios"]}
        assert counts["deliver"] == {"ims0": 96, "pmsi0": 24}, counts
        assert counts["mask"] == {"ims0": 2, "pmsi0": 2}, counts
        assert counts["groups"] == {"ims0": 32, "pmsi0": 16}, counts
        assert sorted(counts["affinity"]) == ["ims0", "pmsi0"], counts
        assert all(3 <= n <= 13 for n in counts["affinity"].values()), counts
        assert counts["unload"] == {}, counts
    suites = ET.parse(run_dir / "junit.xml").getroot()
    assert [int(s.get("tests")) for s in suites] == [5, 5]
    assert [int(s.get("failures")) for s in suites] == [0, 0]
    assert "PASSED" in proc.stdout
    # 6.1 stalls under -icount on the host's QEMU 7.2: it runs on the newer QEMU, in the fast clock mode.
    old, new = (k["boot"] for k in json.loads((run_dir / "plan.json").read_text())["kernels"])
    assert (old["clock"]["value"], new["clock"]["value"]) == ("icount", "icount"), (old["clock"], new["clock"])
    assert "/qemu/qemu-system-x86-10." in old["qemu"]["value"] and "bookworm-backports" in old["qemu"]["why"]
    assert new["qemu"]["value"] == ""
    assert shlex.split((run_dir / res["kernels"][0]["release"] / "cmdline").read_text())[0] == old["qemu"]["value"]
    # Warm: both take the payload over a hot-added virtio-serial port; 6.1 builds its drivers as modules,
    # which every guest of it (cold ones too: the same machine) loads from the kernel's own package first.
    assert (old["handover"]["value"], new["handover"]["value"]) == ("virtio-serial", "virtio-serial")
    assert [Path(m).stem for m in old["port_modules"]][-2:] == ["virtio_pci", "virtio_console"]
    assert "CONFIG_VIRTIO_PCI=m, CONFIG_VIRTIO_CONSOLE=m" in old["handover"]["why"] and new["port_modules"] == []
    for k in res["kernels"]:
        ev = json.loads((run_dir / k["release"] / "events.json").read_text())
        if ev["start"] != "cold":  # a fault of QEMU 7.2's restore falls back to a cold boot
            assert "attached" in ev["warm_seconds"], ev["warm_seconds"]


def test_debian_7x_prebuilt_with_its_own_compiler(tmp_path):
    """7.3.4 from trixie-backports (7.x package layout): modules from gcc-14 in a trixie build root, all pass."""
    run_dir = tmp_path / "run"
    proc = msiforge("run", "--kernel", "debian:7.3", "--out", str(run_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (k,) = _results(run_dir)["kernels"]
    assert k["release"].startswith("7.3.") and k["release"].endswith("+deb13-amd64")
    assert [s["name"] for s in k["scenarios"]] == SCENARIOS
    assert all(s["status"] == "pass" for s in k["scenarios"]), k
    plan = json.loads((run_dir / "plan.json").read_text())["kernels"][0]
    assert plan["compiler"]["value"].startswith("x86_64-linux-gnu-gcc-14 14.2.0-19")
    assert "build root trixie" in plan["compiler"]["value"]
    assert plan["features"]["irqchip_move_deferred"] is True
    ktap = (run_dir / k["release"] / "ktap.txt").read_text()
    assert "# ims0: 32 slot(s) x 3 fires delivered" in ktap
    assert "# ims0: 3 fires while masked (source mask, 3 held by the device), 1 delivered on unmask" in ktap
    assert "parent INTEL-IR" in ktap
    modules = sorted((run_dir / k["release"] / "modules").glob("*.ko"))  # the guest's copies
    assert modules and all(b"GCC: (Debian 14.2.0-19) 14.2.0\0" in m.read_bytes() for m in modules)
    rows = msiforge("parse", str(run_dir), "--by-kernel").stdout.splitlines()
    assert rows[0] == "| kernel | release | suite | compiler | strategy | boot | verdict |"
    cells = [c.strip() for c in rows[2].split("|")[1:-1]]
    assert cells[0] == "`debian:7.3`" and cells[2] == "trixie-backports" and cells[6] == "pass"
    assert cells[3].startswith("x86_64-linux-gnu-gcc-14") and "ims0 module-local" in cells[4]


#: The storage, mask and update variants the default board does not have, on a board without an IOMMU.
VARIANTS = {
    "name": "variants", "iommu": "none", "machine": "q35", "fires": 2,
    "devices": [
        {"name": "q", "storage": "platform-msi", "slots": 3, "mask": "source", "update": "queued"},
        {"name": "n", "storage": "ims", "slots": 2, "mask": "none", "update": "direct"},
        {"name": "m", "storage": "pci-msi", "slots": 1, "mask": "none"},
    ]}


def test_variant_board_without_remapping(tmp_path):
    """No IOMMU: the vector domain is the parent and an affinity change rewrites the stored message."""
    board = write_board(tmp_path, VARIANTS)
    run_dir = tmp_path / "run"
    proc = msiforge("run", str(board), "--kernel", "debian:6.1.0-56", "--kernel", "debian:6.12.117+deb12",
                    "--out", str(run_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for k in _results(run_dir)["kernels"]:
        ktap = (run_dir / k["release"] / "ktap.txt").read_text()
        assert "parent VECTOR" in ktap
        moved = [line for line in ktap.splitlines() if "# q: stored message" in line][0]
        before, after = moved.split("stored message ")[1].split(" -> ")
        assert before.split("/")[0] != after.split("/")[0], moved  # destination APIC ID rewritten


def test_broken_storage_ops_fail_the_right_scenarios(tmp_path, fetched_kernels):
    """A driver whose source mask does nothing fails `mask`; one that stores a wrong data word fails `deliver`."""
    from msiforge.board import load_board
    from msiforge.generator import render
    from msiforge.runner import boot_kernel
    from msiforge.vmtests import qemu

    board = load_board(None)
    kernel = fetched_kernels["debian:6.12.117+deb12"]
    target = render.target_for(kernel)
    tree = render.generate(board, [target], tmp_path / "gen")[kernel.release]
    ims0 = tree / "msiforge_ims0.c"
    text = ims0.read_text()
    assert "\tims0_update(ims0_of(d), d->hwirq, NULL, 1);\n" in text
    ims0.write_text(text.replace("\tims0_update(ims0_of(d), d->hwirq, NULL, 1);\n", "\t/* sabotaged: no mask */\n", 1))
    pmsi0 = tree / "msiforge_pmsi0.c"
    text = pmsi0.read_text()
    assert "\t\tsh->data = msg->data;\n" in text
    pmsi0.write_text(text.replace("\t\tsh->data = msg->data;\n", "\t\tsh->data = msg->data + 1;\n", 1))
    kdir = tmp_path / "k"
    kdir.mkdir()
    accel = qemu.choose_accel(board.accel, kernel.vmlinuz)
    result = boot_kernel(board, kernel, tree, kdir, accel)
    status = {s.name: s for s in result.scenarios}
    assert status["mask"].status == "fail"
    assert status["mask"].devices["ims0"] == "not ok"
    assert any("messages held by the masked source: got 0, expected 3" in d for d in status["mask"].diagnostics)
    assert status["deliver"].status == "fail"
    assert status["deliver"].devices == {"ims0": "ok", "pmsi0": "not ok"}
    assert not result.passed


SMALL = {"name": "small", "fires": 1, "boot_timeout": 20, "scenario_timeout": 20,
         "devices": [{"name": "ims0", "storage": "ims", "slots": 2, "mask": "source"}]}

# fault -> (verdict, words that must be in the detail or the console log)
FAULT_CASES = {
    "panic": ("panic", "Kernel panic - not syncing"),
    "oops": ("oops", "Oops"),
    "warn": ("warn", "WARNING:"),
    "bug": ("bug", "BUG: scheduling while atomic"),
    "call-trace": ("call-trace", "Call Trace:"),
    "hang-hard": ("boot-timeout", "no 'msiforge-guest: start' within 20 s"),
    "hang-soft": ("scenario-timeout", "guest script not done within 20 s"),
    "load-fail": ("load-failed", "did not bind its edu device"),
    "vm-crash": ("vm-crashed", "QEMU exited"),
}
# Reports only a debug kernel (source:...+debug) makes.
DEBUG_FAULT_CASES = {
    "lockdep": ("lockdep", "WARNING: possible circular locking dependency detected"),
    "kasan": ("kasan", "BUG: KASAN: slab-out-of-bounds in msiforge_fault_"),
    "atomic-sleep": ("atomic-sleep", "BUG: sleeping function called from invalid context"),
}


def _check_fault_verdict(tmp_path, fault, *kernel_args, board=SMALL, how="warm"):
    """The fault's verdict, in a guest started warm (the default: saved or resumed) or booted (``how`` cold)."""
    verdict, words = {**FAULT_CASES, **DEBUG_FAULT_CASES}[fault]
    path = write_board(tmp_path, board)
    # The kernel built and its boot probed (once per machine: a debug kernel builds for minutes on a new
    # one) before the timed run: the timing below is the fault's, not the cache's.
    ready = msiforge("plan", str(path), *kernel_args, timeout=1800)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    start = time.monotonic()
    cold = ["--cold"] if how == "cold" else []
    proc = msiforge("run", str(path), *kernel_args, *cold, "--guest-fault", fault, "--out", str(tmp_path / "run"),
                    timeout=180)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stdout + proc.stderr
    k = _results(tmp_path / "run")["kernels"][0]
    assert k["verdict"] == verdict, k
    if how == "warm" and k["start"] == "cold":
        # QEMU 7.2 rarely restores a snapshot into a guest that reports before its payload (its flags
        # corrupted): the run then says why and boots cold, and the verdict below must still hold.
        why = (tmp_path / "run" / k["release"] / "warm-failed.txt").read_text()
        assert any(w in why for w in ("before its payload arrived", "did not load", "QEMU 7.2's restore")), why
    else:
        assert k["start"] in (("saved", "resumed") if how == "warm" else ("cold",)), k
    log = (tmp_path / "run" / k["release"] / "console.log").read_text(errors="replace")
    assert words in k["detail"] or words in log
    assert f"console log: {k['console_log']}" in proc.stdout
    assert elapsed < board["boot_timeout"] + board["scenario_timeout"] + 60  # plus build and probe slack
    status = {s["name"]: s for s in k["scenarios"]}
    if fault in ("oops", "bug", "warn", *DEBUG_FAULT_CASES):
        # The guest finished; its unload check saw the report in dmesg.
        assert status["unload"]["status"] == "fail"
        assert any("dmesg: " in d for d in status["unload"]["diagnostics"])
    elif fault == "call-trace":
        # A bare call trace is the kernel's verdict only: the guest's checks all passed.
        assert {s["status"] for s in k["scenarios"]} == {"pass"}
    elif fault == "load-fail":
        assert {s["status"] for s in k["scenarios"]} == {"load-failed"}
    else:
        assert {s["status"] for s in k["scenarios"]} == {verdict}


@pytest.mark.parametrize("how", ["warm", "cold"])
@pytest.mark.parametrize("fault", sorted(FAULT_CASES))
def test_guest_fault_is_its_own_verdict(tmp_path, fault, how):
    """Each fault's verdict, the same whether the guest started warm (from a snapshot) or booted."""
    _check_fault_verdict(tmp_path, fault, how=how)


@pytest.mark.build
@pytest.mark.source_kernels("source:6.12")
@pytest.mark.parametrize("fault", ["warn",  # CONFIG_BUG in msiforge's own config; the rest as on Debian's
                                   pytest.param("oops", marks=pytest.mark.slow),
                                   pytest.param("vm-crash", marks=pytest.mark.slow)])
def test_guest_fault_on_a_source_kernel(tmp_path, fault):
    """Self-built kernels report WARN and oops too (CONFIG_BUG, which tinyconfig drops) and have /dev/mem."""
    _check_fault_verdict(tmp_path, fault, "--kernel", "source:6.12")


@pytest.mark.build
@pytest.mark.source_kernels("source:6.12+debug")
@pytest.mark.parametrize("fault", ["lockdep",  # make test's debug-kernel boot; the others in make test-all
                                   pytest.param("kasan", marks=pytest.mark.slow),
                                   pytest.param("atomic-sleep", marks=pytest.mark.slow)])
def test_debug_kernel_report_is_its_own_verdict(tmp_path, fault):
    """lockdep, KASAN and DEBUG_ATOMIC_SLEEP each give their own verdict, on a real debug kernel."""
    _check_fault_verdict(tmp_path, fault, "--kernel", "source:6.12+debug",
                         board={**SMALL, "boot_timeout": 60, "scenario_timeout": 60})


@pytest.mark.build
@pytest.mark.slow
@pytest.mark.source_kernels("source:6.12+debug")
@pytest.mark.parametrize("variant", ["default", "variants"])
def test_every_scenario_passes_on_a_debug_kernel(tmp_path, variant):
    """lockdep, PROVE_RCU, DEBUG_ATOMIC_SLEEP, DEBUG_OBJECTS, KASAN and kmemleak watch every scenario: no report."""
    from helpers import default_board

    every = ["deliver", "mask", "affinity", "hotplug", "groups", "domain-layout", "stress", "churn", "unload"]
    data = {**(default_board() if variant == "default" else VARIANTS), "scenarios": every,
            "scenario_timeout": 1800}
    data.pop("kernels", None)
    run_dir = tmp_path / "run"
    proc = msiforge("run", str(write_board(tmp_path, data)), "--kernel", "source:6.12+debug", "--out", str(run_dir),
                    timeout=3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (k,) = _results(run_dir)["kernels"]
    assert k["verdict"] == "pass" and sorted(s["name"] for s in k["scenarios"]) == sorted(every), k
    # A pass means no report of any kind in the console (verdict.FAULTS); kmemleak's exact check ran
    # on every device (msiforge checked after olddefconfig that every debug option is in the kernel).
    ktap = (run_dir / k["release"] / "ktap.txt").read_text()
    for dev in data["devices"]:
        assert f"kmemleak: no unreferenced object from msiforge_{dev['name']}\n" in ktap


def test_debug_fault_needs_a_debug_kernel(tmp_path):
    path = write_board(tmp_path, SMALL)
    proc = msiforge("run", str(path), "--kernel", "source:6.12", "--guest-fault", "lockdep",
                    "--out", str(tmp_path / "run"), timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "only a debug kernel reports it" in proc.stderr
    assert "source:6.12 is not one" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def _as_a_foreground_job() -> None:
    """In the child: SIGINT and SIGHUP as a terminal's foreground job has them.

    A shell starts background jobs with SIGINT ignored, and nohup ignores
    SIGHUP; msiforge keeps an inherited "ignore", so the test must not inherit one.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _start_hanging_run(tmp_path):
    import subprocess

    from helpers import MSIFORGE

    path = write_board(tmp_path, SMALL)
    run_dir = tmp_path / "run"
    child = subprocess.Popen([*MSIFORGE, "run", str(path), "--guest-fault", "hang-soft", "--out", str(run_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=_as_a_foreground_job)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _qemu_under(child.pid):
        time.sleep(0.2)
    qemus = _qemu_under(child.pid)
    assert qemus, "QEMU never started"
    time.sleep(1)
    return child, qemus


@pytest.mark.parametrize("signame,code,words", [("SIGINT", 130, "msiforge: interrupted"),
                                                ("SIGTERM", 143, "msiforge: terminated by SIGTERM"),
                                                ("SIGHUP", 129, "msiforge: terminated by SIGHUP")])
def test_a_signal_stops_the_run_and_leaves_no_qemu_behind(tmp_path, signame, code, words):
    """Ctrl-C, a cancelled CI job or timeout(1) (SIGTERM), a closed terminal (SIGHUP): QEMU goes too."""
    import signal

    child, qemus = _start_hanging_run(tmp_path)
    child.send_signal(getattr(signal, signame))
    _, err = child.communicate(timeout=30)
    assert child.returncode == code, err
    assert words in err and "Traceback" not in err
    time.sleep(0.5)
    assert _still_running(qemus) == []


def test_sigkill_of_msiforge_takes_qemu_with_it(tmp_path):
    """Not even SIGKILL leaves a guest running: QEMU has PR_SET_PDEATHSIG."""
    import signal

    child, qemus = _start_hanging_run(tmp_path)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _still_running(qemus):
        time.sleep(0.1)
    assert _still_running(qemus) == []


def test_an_unknown_step_in_the_guest_fails_closed(tmp_path):
    """A step with no scenario function in the guest script fails the device; it never passes."""
    import dataclasses

    from msiforge import runner
    from msiforge.board import load_board

    board = load_board(str(write_board(tmp_path, SMALL)))
    board = dataclasses.replace(board, scenarios=("deliver", "no-such-step"))
    result = runner.run(board, ["debian:6.12.117+deb12"], None, tmp_path / "run")
    deliver, unknown = result.kernels[0].scenarios
    assert (deliver.name, deliver.status) == ("deliver", "pass")
    assert (unknown.name, unknown.status, unknown.devices) == ("no-such-step", "fail", {"ims0": "not ok"})
    assert any("no scenario_no_such_step in this guest script" in d for d in unknown.diagnostics), unknown


def _proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(command name, state, parent pid) of a live process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
    return comm, rest[0], int(rest[1])


def _qemu_under(root: int) -> list[int]:
    """The QEMU processes below ``root`` in the process tree (its argv may name only the cache: a resumed guest)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))):
            parents[int(entry.name)] = stat
    found = []
    for pid, (comm, _, _) in parents.items():
        up = pid
        while up in parents and up != root:
            up = parents[up][2]
        if up == root and comm.startswith("qemu-system"):
            found.append(pid)
    return found


def _still_running(pids: list[int]) -> list[int]:
    """Those of ``pids`` still alive as the same QEMU (not gone, not a zombie)."""
    return [pid for pid in pids
            if (stat := _proc_stat(pid)) and stat[0].startswith("qemu-system") and stat[1] != "Z"]


def test_vng_backend_runs_the_same_script(tmp_path):
    """--backend vng boots through virtme-ng and gets the same verdicts from the same guest script."""
    board = write_board(tmp_path, {
        "name": "small", "fires": 2,
        "devices": [{"name": "ims0", "storage": "ims", "slots": 4, "mask": "source"}]})
    run_dir = tmp_path / "run"
    proc = msiforge("run", str(board), "--backend", "vng", "--out", str(run_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    k = _results(run_dir)["kernels"][0]
    assert [s["status"] for s in k["scenarios"]] == ["pass"] * 5  # the default scenarios, groups included
    assert "vng" in (run_dir / k["release"] / "cmdline").read_text()
    assert "# ims0: 4 slot(s) x 2 fires delivered" in (run_dir / k["release"] / "ktap.txt").read_text()


def test_stress_churn_and_rt(tmp_path):
    """stress, churn and rt on a PREEMPT_RT 6.12 kernel, beside the default scenarios."""
    board = write_board(tmp_path, {
        "name": "stress", "fires": 2, "scenario_timeout": 600,
        "devices": [{"name": "ims0", "storage": "ims", "slots": 4, "mask": "source", "groups": [1, 2]},
                    {"name": "pmsi0", "storage": "platform-msi", "slots": 3, "mask": "parent",
                     "update": "queued", "groups": [1, 2]}],
        "scenarios": ["deliver", "mask", "affinity", "stress", "churn", "rt", "unload"]})
    run_dir = tmp_path / "run"
    proc = msiforge("run", str(board), "--kernel", "debian:6.12.117+deb12-rt", "--out", str(run_dir))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    k = _results(run_dir)["kernels"][0]
    assert k["release"].endswith("-rt-amd64")
    ktap = (run_dir / k["release"] / "ktap.txt").read_text()
    assert "# ims0: 1000 fires from 2 CPUs over 4 slot(s) during" in ktap
    assert "# pmsi0: 50 group rounds (1 2) and 20 reloads; irq descriptors stay" in ktap
    assert "# ims0: 4 threaded handler(s) on " in ktap
