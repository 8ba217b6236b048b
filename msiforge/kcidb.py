"""KernelCI's KCIDB report of a run or a bisect (``kcidb.json``, schema v5.3).

One *checkout* per kernel source (a Debian package, a linux-source tree with
a patch series), one *build* per (board, kernel): the board's drivers built
W=1 against that kernel, and *tests* under it:

- ``msiforge.boot``: the boot; its number is the seconds to the guest's init;
- ``msiforge.<scenario>``: each scenario, its number the interrupts the
  handlers counted (when the guest counted them);
- ``msiforge.<scenario>.<device>``: each device's part of it.

Statuses come from the one verdict model (:class:`msiforge.verdict.Verdict`,
its ``kcidb`` field): a wrong driver or kernel is FAIL.  What the schema
calls MISS ("the test didn't run due to a failure in the test harness")
is every scenario that never ran: the modules did not build, the guest's
script never started, QEMU died first.  The boot test itself is ERROR ("the
test didn't complete ..., and the status of the tested code is unknown")
when QEMU ran the kernel but init never started within the time allowed:
under TCG a slow boot is not proof of a broken kernel.  A build that failed
is a build with status FAIL, and its tests MISS.

Ids are origin-prefixed (``msiforge:``) and carry the run's id, so shards
merged from several machines never collide; a checkout's id is the kernel
itself, so the same kernel tested twice is one checkout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .cache import atomic_write
from .results import KernelResult, RunResult
from .verdict import Verdict

ORIGIN = "msiforge"
VERSION = {"major": 5, "minor": 3}
#: Set to the URL under which a CI job publishes the run directory, log URLs point there
#: (e.g. https://ci.example.org/job/42/artifacts/run); by default they are file: URLs.
URL_ENV = "MSIFORGE_ARTIFACTS_URL"


def _id(*parts: str) -> str:
    return f"{ORIGIN}:" + ":".join(parts)


def _url(path: str | Path, run_dir: Path) -> str:
    """A log's URL: under $MSIFORGE_ARTIFACTS_URL when set, else its file: URL."""
    p = Path(path).resolve()
    base = os.environ.get(URL_ENV, "").rstrip("/")
    if base:
        try:
            return f"{base}/{p.relative_to(run_dir.resolve()).as_posix()}"
        except ValueError:
            pass
    return p.as_uri()


def _plans(run_dir: Path) -> dict[tuple[str, str], dict]:
    """(board, release) -> that kernel's plan, from plan.json (a merged run keeps one per board)."""
    out: dict[tuple[str, str], dict] = {}
    for f in [run_dir / "plan.json", *sorted(run_dir.glob("plans/*.json"))]:
        if f.is_file():
            plan = json.loads(f.read_text())
            for k in plan.get("kernels", []):
                out[(plan.get("board", ""), k["release"])] = k
    return out


def boot_status(k: KernelResult) -> str:
    """The KCIDB status of a kernel's boot (see the module's docstring for MISS and ERROR)."""
    v = Verdict(k.verdict)
    if v is Verdict.BUILD_FAILED:
        return "MISS"
    if k.boot_seconds is not None:  # the guest's script started: the kernel booted
        return "PASS"
    if v.kcidb == "FAIL":  # it panicked, oopsed ... before init
        return "FAIL"
    return "ERROR"


def _checkout(k: KernelResult, plan: dict, started: str) -> dict:
    kind = k.spec.split(":", 1)[0]
    tree = {"debian": "debian", "source": "linux-source", "tree": "local-tree"}.get(kind, kind)
    misc = {"spec": k.spec, "release": k.release}
    for key in ("suite", "patch_series"):
        if plan.get(key):
            misc[key] = plan[key]
    co = {"id": _id("checkout", k.release), "origin": ORIGIN, "tree_name": tree,
          "git_commit_name": k.release, "comment": k.spec, "valid": True, "misc": misc}
    if started:
        co["start_time"] = started
    return co


def kernel_objects(result: RunResult, k: KernelResult, plan: dict) -> tuple[dict, dict, list[dict]]:
    """The checkout, build and tests of one (board, kernel) of ``result``."""
    board = k.board or result.board
    run_dir = result.run_dir
    # A merged shard keeps the id its own run gave it: its kcidb.json and the merge's agree.
    build_id = _id(k.run_id or result.run_id or run_dir.name, board, k.release)
    build_failed = Verdict(k.verdict) is Verdict.BUILD_FAILED
    compiler = (plan.get("compiler") or {}).get("value", "")
    build = {"id": build_id, "checkout_id": _id("checkout", k.release), "origin": ORIGIN,
             "architecture": plan.get("arch", "x86_64"), "config_name": board,
             "comment": f"board {board}: the drivers and test modules, W=1",
             "status": "FAIL" if build_failed else "PASS",
             "misc": {"board": board, "devices": {d["name"]: d["strategy"] for d in plan.get("devices", [])}}}
    if compiler:
        build["compiler"] = compiler
    if result.started:
        build["start_time"] = result.started
    kdir = Path(k.directory) if k.directory else None
    built = sorted((kdir / "modules").glob("*.ko")) if kdir else []
    if built:
        build["output_files"] = [{"name": ko.name, "url": _url(ko, run_dir)} for ko in built]
    if build_failed:
        build["log_excerpt"] = k.detail[:16384]
        if k.build_log:
            build["log_url"] = _url(k.build_log, run_dir)
    env = {"comment": f"QEMU, {result.accel}" + (f"; {k.timing}" if k.timing else ""),
           "misc": {"accel": result.accel, "timing": k.timing, "shard": result.shard}}
    log = {"log_url": _url(k.console_log, run_dir)} if k.console_log else {}
    boot = {"id": f"{build_id}:boot", "build_id": build_id, "origin": ORIGIN, "path": "msiforge.boot",
            "status": boot_status(k), "environment": env, "misc": {"verdict": str(k.verdict)}, **log}
    outputs = [{"name": Path(p).name, "url": _url(p, run_dir)} for p in (k.ktap_log,) if p]
    if kdir and (kdir / "cmdline").is_file():
        outputs.append({"name": "cmdline", "url": _url(kdir / "cmdline", run_dir)})
    if outputs:
        boot["output_files"] = outputs
    if k.boot_seconds is not None:
        boot["number"] = {"value": round(k.boot_seconds, 3), "unit": "s"}
    if k.detail:
        boot["log_excerpt"] = k.detail[:16384]
    tests = [boot]
    for s in k.scenarios:
        v = Verdict(s.status)
        t = {"id": f"{build_id}:{s.name}", "build_id": build_id, "origin": ORIGIN, "path": f"msiforge.{s.name}",
             "status": v.kcidb, "environment": env, "misc": {"verdict": str(v), "diagnostics": s.diagnostics},
             **log}
        if s.seconds is not None:
            t["duration"] = s.seconds
        if s.interrupts and v.kcidb in ("PASS", "FAIL"):
            t["number"] = {"value": sum(s.interrupts.values()), "unit": "interrupts"}
        if s.diagnostics:
            t["log_excerpt"] = "\n".join(s.diagnostics)[:16384]
        tests.append(t)
        for dev, status in s.devices.items():
            st = "PASS" if status == "ok" else (v.kcidb if v.kcidb != "PASS" else "FAIL")
            if v.kcidb == "MISS" or status == "missing":
                st = "MISS"
            d = {"id": f"{build_id}:{s.name}:{dev}", "build_id": build_id, "origin": ORIGIN,
                 "path": f"msiforge.{s.name}.{dev}", "status": st, "misc": {"ktap": status}}
            if dev in s.interrupts:
                d["number"] = {"value": s.interrupts[dev], "unit": "interrupts"}
            tests.append(d)
    return _checkout(k, plan, result.started), build, tests


def from_run(result: RunResult) -> dict:
    """The KCIDB report of a run (or a merged run): every kernel of every board."""
    plans = _plans(result.run_dir)
    checkouts: dict[str, dict] = {}
    builds, tests = [], []
    for k in result.kernels:
        co, build, ts = kernel_objects(result, k, plans.get((k.board or result.board, k.release), {}))
        checkouts.setdefault(co["id"], co)
        builds.append(build)
        tests += ts
    return {"version": dict(VERSION), "checkouts": list(checkouts.values()), "builds": builds, "tests": tests}


def from_bisect(bis, out: Path) -> dict:
    """The KCIDB report of a bisect: each kernel it tried is a build with the scenario's test.

    The step's verdict is the test's status; what it is compared by (the
    verdict, or what ``--watch`` matched) and whether it differs from the
    good kernel are in ``misc``.  The bisect's answer is a test of its own,
    ``msiforge.bisect``, DONE, on the first kernel that differs (or on the
    bad one when none did).
    """
    run = f"bisect-{out.name}"
    checkouts: dict[str, dict] = {}
    builds, tests = [], []
    for st in bis.steps:
        build_id = _id(run, bis.board, st.release)
        checkouts.setdefault(st.release, {"id": _id("checkout", st.release), "origin": ORIGIN,
                                          "tree_name": "debian", "git_commit_name": st.release,
                                          "comment": st.kernel, "valid": True})
        v = Verdict(st.verdict)
        builds.append({"id": build_id, "checkout_id": _id("checkout", st.release), "origin": ORIGIN,
                       "config_name": bis.board, "status": "FAIL" if v is Verdict.BUILD_FAILED else "PASS",
                       "misc": {"board": bis.board}})
        t = {"id": f"{build_id}:{bis.scenario}", "build_id": build_id, "origin": ORIGIN,
             "path": f"msiforge.{bis.scenario}", "status": v.kcidb, "duration": st.seconds,
             "misc": {"verdict": str(v), "observed": st.observed, "differs_from_good": st.differs,
                      "cached": st.cached, "diagnostics": st.diagnostics}}
        if st.log:
            t["log_url"] = _url(st.log, out)
        tests.append(t)
    answer = bis.first_different or (bis.candidates[-1] if bis.candidates else None)
    if answer and any(st.release == answer for st in bis.steps):
        build_id = _id(run, bis.board, answer)
        tests.append({"id": f"{build_id}:bisect", "build_id": build_id, "origin": ORIGIN, "path": "msiforge.bisect",
                      "status": "DONE", "number": {"value": bis.boots, "unit": "boots"},
                      "comment": (f"first kernel whose {bis.scenario} differs from {bis.good}: {answer}"
                                  if bis.first_different else f"no kernel from {bis.good} to {bis.bad} differs"),
                      "misc": {"good": bis.good, "bad": bis.bad, "reference": bis.reference, "watch": bis.watch,
                               "first_different": bis.first_different, "candidates": len(bis.candidates),
                               "seconds": bis.seconds}})
    return {"version": dict(VERSION), "checkouts": list(checkouts.values()), "builds": builds, "tests": tests}


def write(data: dict, path: Path) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")
