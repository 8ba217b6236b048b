"""msiforge benchmarks: `make bench` prints a table and writes bench/results.json.

Every figure is the median of several runs; every comparison is measured side
by side in the same run (interleaved), on the same kernel and machine flags.

  edit loop  after a one-line change of the driver template: run --scenario deliver and the default
             scenarios resumed from a warm snapshot, vs the bare boot, a cold run and virtme-ng
  floor      msiforge run --cold --scenario deliver  vs  bare qemu -kernel -initrd (busybox init that powers off;
             same image, machine flags and kernel command line); where the bare boot's time goes
  vng        msiforge run --scenario deliver  vs  the same through virtme-ng (--backend vng)
  matrix     4 kernels x default scenarios: --jobs 1 vs --jobs 2
  firing     interrupts per second through the device-side store: real-time clocks vs -icount
  builds     module build: cold and after a one-line change; patched kernel (bench/kernel_build.py)
  generate   rendering a board with 16 devices x 2048 slots
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
MSIFORGE = [sys.executable, "-m", "msiforge.cli"]
KERNEL = "debian:6.12.117+deb12"
MATRIX = ["debian:6.1.0-55", "debian:6.1.0-56", "debian:6.12.115+deb12", "debian:6.12.117+deb12"]


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[:6])}... failed ({proc.returncode}):\n{proc.stdout[-2000:]}"
                         f"{proc.stderr[-2000:]}")
    return proc


def timed(cmd: list[str], **kw) -> float:
    start = time.monotonic()
    sh(cmd, **kw)
    return time.monotonic() - start


def board_file(tmp: Path, name: str, **fields) -> Path:
    data = yaml.safe_load((REPO / "boards" / "q35-ims.yaml").read_text())
    data.update(fields)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def msiforge_run(tmp: Path, *args: str) -> tuple[float, dict]:
    out = Path(tempfile.mkdtemp(dir=tmp))
    secs = timed([*MSIFORGE, "run", *args, "--out", str(out)])
    return secs, json.loads((out / "results.json").read_text()) | {"dir": out}


def warm_steps(res: dict) -> dict[str, float]:
    """A warm run's steps (events.json's warm_seconds): seconds from QEMU's start to each."""
    k = res["kernels"][0]
    return json.loads((res["dir"] / k["release"] / "events.json").read_text()).get("warm_seconds") or {}


FLOOR_INIT = "#!/bin/busybox sh\n/bin/busybox poweroff -f\n"
#: The kernel command line msiforge used before the boot was tuned (bench's "old defaults").
PLAIN_CMDLINE = "console=ttyS0 loglevel=5 panic=-1"


def floor_argv(kernel_spec: str, icount: bool, tmp: Path, init: str = FLOOR_INIT) -> list[str]:
    """A bare boot of the same kernel, same image and boot path, same machine flags and kernel
    command line as msiforge's own boots, to a busybox init that only powers off."""
    from msiforge import kernels, plan
    from msiforge.board import load_board
    from msiforge.cache import cache_root
    from msiforge.vmtests import initramfs, qemu, snapshot

    board = load_board(None)
    k = kernels.fetch(kernel_spec)
    accel = qemu.Accel("tcg", "bench")
    image, _ = qemu.boot_image(k.vmlinuz, accel, icount, cache_root())
    initrd = initramfs.build_minimal(Path(tempfile.mkdtemp(dir=tmp)) / "floor.cpio", init)
    # msiforge's machine for this kernel has the warm payload's virtio-serial bus: the floor's too.
    port = snapshot.PORT_DEVICE if plan.handover_choice(k).value == snapshot.VIRTIO_SERIAL else []
    return qemu.command(board, accel, image, initrd, qemu.kernel_cmdline(), icount) + port


def floor_seconds(kernel_spec: str, icount: bool, tmp: Path) -> float:
    return timed(floor_argv(kernel_spec, icount, tmp), timeout=300)


def console_times(argv: list[str], marks: list[bytes]) -> tuple[float, list[float | None]]:
    """Run a boot; return its seconds and when each console mark was first seen."""
    start = time.monotonic()
    seen: list[float | None] = [None] * len(marks)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    for line in iter(proc.stdout.readline, b""):
        for i, mark in enumerate(marks):
            if seen[i] is None and mark in line:
                seen[i] = time.monotonic() - start
    proc.wait(timeout=300)
    return time.monotonic() - start, seen


def bench_boot_breakdown(tmp: Path, repeat: int, kernel_spec: str, icount: bool) -> dict:
    """Where the floor boot's time goes, for the old defaults and each change (interleaved runs).

    firmware: QEMU start to the kernel's first line (earlyprintk: firmware, loading the image and,
    for a bzImage, its decompressor); kernel: from there to init; the rest is init powering off
    and QEMU exiting.  earlyprintk only adds a console, the same for every configuration.
    """
    from msiforge import kernels
    from msiforge.vmtests import qemu

    k = kernels.fetch(kernel_spec)
    init = "#!/bin/busybox sh\n/bin/busybox echo msiforge-floor: init\n/bin/busybox poweroff -f\n"
    tuned = floor_argv(kernel_spec, icount, tmp, init)
    image = tuned[tuned.index("-kernel") + 1]

    def variant(bzimage: bool, qboot: bool, cmdline: str) -> list[str]:
        argv = list(tuned)
        if not qboot and "-bios" in argv:
            del argv[argv.index("-bios"):argv.index("-bios") + 2]
        if bzimage:
            argv[argv.index("-kernel") + 1] = str(k.vmlinuz)
        # First, so that the banner is printed before loglevel= takes effect.
        argv[argv.index("-append") + 1] = "earlyprintk=ttyS0 " + cmdline
        return argv

    pvh = image != str(k.vmlinuz)
    configs = {
        "bzImage, SeaBIOS (old defaults)": variant(True, False, PLAIN_CMDLINE),
        f"{'PVH vmlinux' if pvh else 'bzImage'}, SeaBIOS": variant(False, False, PLAIN_CMDLINE),
        f"{'PVH vmlinux' if pvh else 'bzImage'}, qboot": variant(False, True, PLAIN_CMDLINE),
        "+ initcall_blacklist (new defaults)": variant(False, True, qemu.kernel_cmdline()),
    }
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in configs}
    for _ in range(repeat):
        for name, argv in configs.items():
            total, (first, init_at) = console_times(argv, [b"Linux version", b"msiforge-floor: init"])
            if first is None or init_at is None:
                raise SystemExit(f"bench: boot breakdown {name!r}: the guest did not reach init")
            runs[name].append((first, init_at - first, total))
    out = {}
    for name, rs in runs.items():
        first, kern, total = (statistics.median(r[i] for r in rs) for i in range(3))
        out[name] = {"firmware_s": first, "kernel_s": kern, "total_s": total, "runs": rs}
    return out


def bench_floor_and_vng(tmp: Path, repeat: int) -> dict:
    from msiforge import kernels
    from msiforge.cache import cache_root
    from msiforge.vmtests import qemu

    k = kernels.fetch(KERNEL)
    icount, _ = qemu.probe_icount(k.vmlinuz, cache_root() / "probes")
    floor_argv(KERNEL, icount, tmp)  # warm: the PVH vmlinux and its probe are cached before timing
    ours, floor, vng, guest, boot = [], [], [], [], []
    for _ in range(repeat):
        secs, res = msiforge_run(tmp, "--kernel", KERNEL, "--scenario", "deliver", "--cold")
        ours.append(secs)
        guest.append(res["kernels"][0]["seconds"])
        boot.append(res["kernels"][0]["boot_seconds"])
        floor.append(floor_seconds(KERNEL, icount, tmp))
        vng.append(msiforge_run(tmp, "--kernel", KERNEL, "--scenario", "deliver", "--backend", "vng")[0])
    m_ours, m_floor, m_vng = (statistics.median(x) for x in (ours, floor, vng))
    argv = floor_argv(KERNEL, icount, tmp)
    return {
        "floor": {"msiforge_s": m_ours, "floor_s": m_floor, "ratio": m_ours / m_floor, "target": "<= 1.25",
                  "qemu": " ".join(Path(a).name if a.startswith("/") else a for a in argv[1:]),
                  # Of msiforge's run: QEMU start to the guest script's start, QEMU's whole life.
                  "msiforge_boot_s": statistics.median(boot), "msiforge_qemu_s": statistics.median(guest),
                  "runs": {"msiforge": ours, "floor": floor, "msiforge_boot": boot, "msiforge_qemu": guest}},
        "vng": {"msiforge_s": m_ours, "vng_s": m_vng, "speedup": m_vng / m_ours, "target": ">= 3",
                "runs": {"vng": vng}},
        "boot_breakdown": bench_boot_breakdown(tmp, repeat, KERNEL, icount),
    }


#: The template the edit loop changes, one line each time (restored afterwards).
EDITED = REPO / "templates" / "module" / "driver" / "base.c.j2"


def bench_edit_loop(tmp: Path, repeat: int) -> dict:
    """A developer's loop: change one line of the driver template, run; warm and cold, interleaved."""
    from msiforge import kernels
    from msiforge.cache import cache_root
    from msiforge.vmtests import qemu

    k = kernels.fetch(KERNEL)
    icount, _ = qemu.probe_icount(k.vmlinuz, cache_root() / "probes")
    original = EDITED.read_text()
    edits = iter(range(1, 10**6))
    run = time.time_ns()  # each edit new to the module cache, also across bench runs

    def after_edit(*args: str) -> tuple[float, dict]:
        EDITED.write_text(original + f"/* edit {run}.{next(edits)} */\n")
        return msiforge_run(tmp, "--kernel", KERNEL, *args)

    figures = {"warm_deliver": [], "warm_all": [], "cold_deliver": [], "vng_deliver": [], "floor": [],
               "unedited_deliver": []}
    # Of the warm deliver runs: QEMU start to loaded, to built (the modules, paused meanwhile), to payload in.
    steps: dict[str, list[float]] = {"loaded": [], "built": [], "payload": []}
    starts = []
    try:
        after_edit("--scenario", "deliver")  # the snapshot saved (once per kernel and machine) before timing
        for _ in range(repeat):
            for name, args in (("warm_deliver", ["--scenario", "deliver"]), ("warm_all", []),
                               ("cold_deliver", ["--scenario", "deliver", "--cold"]),
                               ("vng_deliver", ["--scenario", "deliver", "--backend", "vng"])):
                secs, res = after_edit(*args)
                figures[name].append(secs)
                starts.append((name, res["kernels"][0].get("start", "")))
                if name == "warm_deliver":
                    for step, at in warm_steps(res).items():
                        steps.setdefault(step, []).append(at)
            secs, res = msiforge_run(tmp, "--kernel", KERNEL, "--scenario", "deliver")  # the same sources again
            figures["unedited_deliver"].append(secs)
            starts.append(("warm_unedited", res["kernels"][0].get("start", "")))
            figures["floor"].append(floor_seconds(KERNEL, icount, tmp))
    finally:
        EDITED.write_text(original)
    bad = [(n, s) for n, s in starts if s != ("resumed" if n.startswith("warm") else "cold")]
    if bad:
        raise SystemExit(f"bench: edit loop: {bad[0][0]} started {bad[0][1]!r}")
    m = {name: statistics.median(v) for name, v in figures.items()}
    return {**{f"{name}_s": v for name, v in m.items()},
            "deliver_ratio": m["warm_deliver"] / m["floor"], "deliver_target": "<= 0.6",
            "all_ratio": m["warm_all"] / m["floor"], "all_target": "<= 0.8",
            "vng_speedup": m["vng_deliver"] / m["warm_deliver"], "vng_target": ">= 8",
            "cold_ratio": m["cold_deliver"] / m["floor"], "cold_target": "<= 1.25",
            "unedited_ratio": m["unedited_deliver"] / m["floor"],
            "warm_steps_s": {k: statistics.median(v) for k, v in steps.items() if v}, "runs": figures}


def bench_matrix(tmp: Path, repeat: int) -> dict:
    specs = [a for s in MATRIX for a in ("--kernel", s)]
    msiforge_run(tmp, *specs, "--jobs", "2")  # warm: downloads, module builds, -icount probes
    serial, parallel = [], []
    for _ in range(repeat):
        serial.append(msiforge_run(tmp, *specs, "--jobs", "1")[0])
        parallel.append(msiforge_run(tmp, *specs, "--jobs", "2")[0])
    s, p = statistics.median(serial), statistics.median(parallel)
    return {"kernels": MATRIX, "serial_s": s, "jobs2_s": p, "speedup": s / p, "target": ">= 1.7",
            "runs": {"serial": serial, "jobs2": parallel}}


def bench_firing(tmp: Path, repeat: int) -> dict:
    out = {}
    # Real-time clocks take 100 ms per DMA: fewer interrupts give the same rate.
    for clock, slots, fires in (("realtime", 16, 4), ("auto", 64, 10)):
        dev = {"name": "ims0", "storage": "ims", "slots": slots, "mask": "source", "groups": [slots]}
        board = board_file(tmp, f"fire-{clock}", devices=[dev], fires=fires, tcg_clock=clock,
                           scenarios=["deliver"])
        rates = []
        for _ in range(repeat):
            _, res = msiforge_run(tmp, str(board), "--kernel", KERNEL)
            secs = res["kernels"][0]["scenarios"][0]["seconds"]
            rates.append(slots * fires / secs)
        out["default (real-time clocks)" if clock == "realtime" else "-icount, DMA-done interrupt"] = {
            "interrupts": slots * fires, "rate_per_s": statistics.median(rates), "runs": rates}
    out["target"] = ">= 200 interrupts/s"
    return out


def bench_builds(tmp: Path, repeat: int) -> dict:
    from msiforge import kernels
    from msiforge.board import load_board
    from msiforge.generator import features, render
    from msiforge.kmod import build as kbuild

    k = kernels.fetch(KERNEL)
    target = render.KernelTarget(k.release, features.probe(k.header_dirs))
    cold, incr = [], []
    for i in range(repeat):
        tree = render.generate(load_board(None), [target], tmp / f"gen{i}")[k.release]
        cold.append(kbuild.build(tree, k.build_dir).seconds)
        c = tree / "msiforge_ims0.c"
        c.write_text(c.read_text().replace("#define EDU_DMA_TIMEOUT_US\t(5 * USEC_PER_SEC)",
                                           "#define EDU_DMA_TIMEOUT_US\t(6 * USEC_PER_SEC)"))
        incr.append(kbuild.build(tree, k.build_dir).seconds)
    out = {"module_cold_s": statistics.median(cold), "module_incremental_s": statistics.median(incr),
           "target": "<= 10 s", "runs": {"cold": cold, "incremental": incr}}
    kb = REPO / "bench" / "kernel_build.py"
    if kb.exists() and os.environ.get("MSIFORGE_BENCH_KERNEL", "1") == "1":
        proc = subprocess.run([sys.executable, str(kb), "--json"], capture_output=True, text=True)
        out["kernel"] = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip().startswith("{") \
            else {"error": (proc.stderr or proc.stdout)[-500:]}
    return out


def bench_generate(tmp: Path, repeat: int) -> dict:
    from msiforge.board import validate
    from msiforge.generator import features, render

    data = {"name": "large", "devices": [{"name": f"dev{i}", "slots": 2048, "groups": [1024, 1024]}
                                         for i in range(16)]}
    board = validate(data, "large.yaml")
    targets = [render.KernelTarget("6.12.0-bench", features.Features(True, False, False))]
    times = []
    for i in range(repeat):
        start = time.monotonic()
        render.generate(board, targets, tmp / f"large{i}")
        times.append(time.monotonic() - start)
    return {"devices": 16, "slots": 2048, "seconds": statistics.median(times), "target": "<= 1 s", "runs": times}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    ap.add_argument("--only", action="append",
                    choices=["edit", "floor", "matrix", "firing", "builds", "generate"])
    args = ap.parse_args()
    os.environ.setdefault("MSIFORGE_CACHE", str(Path.home() / ".cache" / "msiforge"))
    only = set(args.only or ["edit", "floor", "matrix", "firing", "builds", "generate"])
    results: dict = {"machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                 "qemu": sh(["qemu-system-x86_64", "--version"]).stdout.splitlines()[0],
                                 "date": time.strftime("%Y-%m-%d")}, "repeat": args.repeat}
    tmp = Path(tempfile.mkdtemp(prefix="msiforge-bench-"))
    try:
        for name, fn in [("generate", bench_generate), ("builds", bench_builds), ("firing", bench_firing),
                         ("edit", bench_edit_loop), ("floor", bench_floor_and_vng), ("matrix", bench_matrix)]:
            if name in only:
                print(f"bench: {name} ...", file=sys.stderr, flush=True)
                results.update(fn(tmp, args.repeat) if name == "floor" else {name: fn(tmp, args.repeat)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = REPO / "bench" / "results.json"
    if args.only and out.exists():  # a partial run updates the figures it measured
        merged = json.loads(out.read_text())
        merged.update(results)
        results = merged
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"written: {out}")
    return 0


def table(r: dict) -> str:
    rows = [("figure", "measured", "target")]
    if "edit" in r:
        e = r["edit"]
        rows.append(("after a template edit: run --scenario deliver (warm) / bare boot",
                     f"{e['deliver_ratio']:.2f} ({e['warm_deliver_s']:.2f} s / {e['floor_s']:.2f} s)",
                     e["deliver_target"]))
        rows.append(("after a template edit: run, default scenarios (warm) / bare boot",
                     f"{e['all_ratio']:.2f} ({e['warm_all_s']:.2f} s / {e['floor_s']:.2f} s)", e["all_target"]))
        rows.append(("after a template edit: virtme-ng / warm run (deliver)",
                     f"{e['vng_speedup']:.2f}x ({e['vng_deliver_s']:.1f} s / {e['warm_deliver_s']:.2f} s)",
                     e["vng_target"]))
        rows.append(("after a template edit: run --cold --scenario deliver / bare boot",
                     f"{e['cold_ratio']:.2f} ({e['cold_deliver_s']:.2f} s / {e['floor_s']:.2f} s)",
                     e["cold_target"]))
        if "unedited_ratio" in e:
            rows.append(("no edit (modules cached): run --scenario deliver (warm) / bare boot",
                         f"{e['unedited_ratio']:.2f} ({e['unedited_deliver_s']:.2f} s / {e['floor_s']:.2f} s)", ""))
            st = e["warm_steps_s"]
            rows.append(("  of the warm run after an edit: QEMU start to loaded / built / payload in",
                         " / ".join(f"{st[k]:.2f} s" for k in ("loaded", "built", "payload") if k in st), ""))
    if "floor" in r:
        f = r["floor"]
        rows.append(("floor ratio: run --cold --scenario deliver / bare boot",
                     f"{f['ratio']:.2f} ({f['msiforge_s']:.1f} s / {f['floor_s']:.1f} s)", f["target"]))
    if "floor" in r and "msiforge_qemu_s" in r["floor"]:
        f = r["floor"]
        rows.append(("  of the run: QEMU start to guest script / QEMU in all",
                     f"{f['msiforge_boot_s']:.1f} s / {f['msiforge_qemu_s']:.1f} s", ""))
    for name, b in (r.get("boot_breakdown") or {}).items():
        rows.append((f"floor boot, {name}: firmware+image / kernel to init / all",
                     f"{b['firmware_s']:.2f} s / {b['kernel_s']:.2f} s / {b['total_s']:.2f} s", ""))
    if "vng" in r:
        v = r["vng"]
        rows.append(("vs virtme-ng (same check)", f"{v['speedup']:.2f}x ({v['vng_s']:.1f} s / {v['msiforge_s']:.1f} s)",
                     v["target"]))
    if "matrix" in r:
        m = r["matrix"]
        rows.append(("matrix 4 kernels: --jobs 2 vs serial",
                     f"{m['speedup']:.2f}x ({m['serial_s']:.1f} s / {m['jobs2_s']:.1f} s)", m["target"]))
    if "firing" in r:
        for k, v in r["firing"].items():
            if isinstance(v, dict):
                rows.append((f"firing rate, {k}", f"{v['rate_per_s']:.0f} interrupts/s", r["firing"]["target"]))
    if "builds" in r:
        b = r["builds"]
        rows.append(("module build, cold", f"{b['module_cold_s']:.1f} s", b["target"]))
        rows.append(("module build, one-line change", f"{b['module_incremental_s']:.1f} s", b["target"]))
        kb = b.get("kernel") or {}
        if "cold_s" in kb:
            rows.append((f"kernel build {kb['spec']}, cold (no ccache)", f"{kb['cold_s']:.0f} s", "<= 600 s"))
            rows.append((f"kernel build {kb['spec']}, one-line change", f"{kb['incremental_s']:.1f} s", "<= 60 s"))
    if "generate" in r:
        g = r["generate"]
        rows.append(("generate 16 devices x 2048 slots", f"{g['seconds']:.2f} s", g["target"]))
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["| " + " | ".join(row[i].ljust(w[i]) for i in range(3)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w[i] + 2) for i in range(3)) + "|")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
