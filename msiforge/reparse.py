"""`msiforge parse RUN_DIR`: re-derive every verdict of a saved run, offline.

A run directory holds, per kernel, ``console.log`` and ``events.json`` (what
the console saw: how the boot ended, when each step arrived).  The verdicts
come from :func:`msiforge.verdict.decide` on those two files, exactly as
during the run, so a changed verdict rule can be checked against old runs
and a run copied from another machine reads the same here.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import InputError
from .results import KernelResult, RunResult
from .verdict import Events, decide, read_log

EVENTS = "events.json"


def kernel_dirs(run_dir: Path) -> list[Path]:
    """The kernel directories of a run (or the one kernel directory given)."""
    if (run_dir / EVENTS).is_file():
        return [run_dir]
    found = sorted(p.parent for p in run_dir.glob(f"*/{EVENTS}"))
    if not found:
        if not run_dir.is_dir():
            raise InputError(f"{run_dir}: no such run directory")
        raise InputError(f"{run_dir}: no {EVENTS} in it or in its kernel directories: not a msiforge run directory")
    return found


def kernel_result(kdir: Path, events: Events, spec: str, timing: str = "",
                  lines: list[str] | None = None, board: str = "") -> KernelResult:
    """One kernel's result, decided from its directory's console.log (or its ``lines``, once read) and ``events``."""
    log = kdir / "console.log"
    decision = decide(read_log(log) if lines is None else lines, events)
    build_log = kdir / "build" / "build.log"
    failed = events.ending == "build-failed"
    return KernelResult(spec=spec, release=kdir.name, verdict=decision.verdict, detail=decision.detail,
                        timing=timing, boot_seconds=events.boot_seconds, seconds=events.seconds,
                        console_log=str(log) if log.is_file() and not failed else "",
                        ktap_log=str(kdir / "ktap.txt") if (kdir / "ktap.txt").is_file() else "",
                        scenarios=decision.scenarios, board=board,
                        build_log=str(build_log) if failed and build_log.is_file() else "",
                        directory=str(kdir), start=events.start)


def reparse(run_dir: Path) -> tuple[RunResult, list[str]]:
    """The run's results re-derived from its logs, and how they differ from its results.json."""
    saved = {}
    board, accel, data = run_dir.name, "as recorded", {}
    if (run_dir / "results.json").is_file():
        data = json.loads((run_dir / "results.json").read_text())
        board, accel = data.get("board", board), data.get("accel", accel)
        saved = {k["release"]: k for k in data.get("kernels", [])}
    result = RunResult(board=board, run_dir=run_dir, accel=accel, run_id=data.get("run_id", ""),
                       started=data.get("started", ""), shard=data.get("shard", ""),
                       matrix=data.get("matrix", []), merged_from=data.get("merged_from", []),
                       fault=data.get("fault", ""))
    differences = []
    if data.get("kernels") and all("dir" in k for k in data["kernels"]):
        # Each kernel's directory is recorded (<board>/<release> in a merge of several boards).
        entries = [(run_dir / k["dir"], k) for k in data["kernels"]]
        missing = [str(d) for d, _ in entries if not (d / EVENTS).is_file()]
        if missing:
            raise InputError(f"{run_dir}/results.json: no {EVENTS} in {missing[0]}")
    else:
        order = list(saved)
        dirs = sorted(kernel_dirs(run_dir),
                      key=lambda d: (order.index(d.name) if d.name in order else len(order), d.name))
        entries = [(d, saved.get(d.name, {})) for d in dirs]  # the run's order when it has a results.json
    for kdir, old in entries:
        try:
            events = Events.load(kdir / EVENTS)
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"{kdir / EVENTS}: {exc}") from None
        k = kernel_result(kdir, events, old.get("spec", kdir.name), old.get("timing", ""),
                          board=old.get("board", board))
        k.run_id = old.get("run_id", "")
        result.kernels.append(k)
        if old and old.get("verdict") != k.verdict:
            differences.append(f"{kdir.name}: results.json says {old.get('verdict')}, the log says {k.verdict}")
        for s, o in zip(k.scenarios, old.get("scenarios", [])):
            if o.get("status") != s.status:
                differences.append(f"{kdir.name} {s.name}: results.json says {o.get('status')}, "
                                   f"the log says {s.status}")
    return result, differences


def kernel_rows(result: RunResult, run_dir: Path) -> list[str]:
    """A Markdown table of the run, one row per kernel: what it is, how its modules were built, the verdict."""
    plans = {}
    if (run_dir / "plan.json").is_file():
        plans = {k["release"]: k for k in json.loads((run_dir / "plan.json").read_text()).get("kernels", [])}
    rows = ["| kernel | release | suite | compiler | strategy | boot | verdict |", "|---|---|---|---|---|---|---|"]
    for k in result.kernels:
        p = plans.get(k.release, {})
        compiler = (p.get("compiler") or {}).get("value", "")
        strategy = ", ".join(f"{d['name']} {d['strategy']}" for d in p.get("devices", []))
        boot = f"{k.boot_seconds:.1f} s" if k.boot_seconds else "-"
        rows.append(f"| `{k.spec}` | {k.release} | {p.get('suite', '')} | {compiler} | "
                    f"{strategy} | {boot} | {k.verdict} |")
    return rows
