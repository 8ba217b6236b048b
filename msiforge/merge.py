"""`msiforge merge DIR... -o OUT`: run directories (a sharded matrix's pieces) back into one.

Each input is re-derived from its own logs (as ``msiforge parse`` does), its
kernel directories are copied into OUT (``OUT/<release>``, or
``OUT/<board>/<release>`` when the inputs hold several boards), and OUT gets
every report of one run: results.json, junit.xml, results.ktap, kcidb.json,
report.html.  Kernels keep the order of the matrix the shards were cut from
(``results.json``'s ``matrix``); a kernel found in two inputs is an error, as
is a shard missing from a matrix (a merge that says "passed" must have seen
every kernel).  OUT is written in a temporary directory and renamed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from . import reparse, reports
from .errors import InputError
from .results import RunResult, new_run_id


def _load(d: Path) -> RunResult:
    if not (d / "results.json").is_file():
        raise InputError(f"{d}: no results.json: not a msiforge run directory")
    return reparse.reparse(d)[0]


def _check_complete(inputs: list[RunResult]) -> None:
    """Every shard of each sharded board's matrix is there (same N, K = 1..N)."""
    by_board: dict[str, list[str]] = {}
    for r in inputs:
        if r.shard:
            by_board.setdefault(r.board, []).append(r.shard)
    for board, shards in by_board.items():
        n = {s.split("/")[1] for s in shards}
        if len(n) != 1:
            raise InputError(f"board {board}: shards of different matrices ({', '.join(sorted(shards))})")
        total = int(n.pop())
        have = sorted(int(s.split("/")[0]) for s in shards)
        gone = sorted(set(range(1, total + 1)) - set(have))
        if gone:
            raise InputError(f"board {board}: shard(s) {', '.join(f'{k}/{total}' for k in gone)} missing "
                             f"from the merge (given: {', '.join(sorted(shards))})")


def merge(dirs: list[Path], out: Path) -> RunResult:
    """Merge the run directories ``dirs`` into ``out`` (which must not exist yet)."""
    if not dirs:
        raise InputError("merge: no run directories given")
    if out.exists():
        raise InputError(f"--out {out}: exists already (merge writes a new directory)")
    inputs = [_load(d) for d in dirs]
    _check_complete(inputs)
    boards = list(dict.fromkeys(k.board or r.board for r in inputs for k in r.kernels))
    nested = len(boards) > 1
    seen: dict[tuple[str, str], Path] = {}
    order = {}
    for r in inputs:
        for i, spec in enumerate(r.matrix):
            order.setdefault((r.board, spec), i)
    rows = []
    for r, src in zip(inputs, dirs):
        for k in r.kernels:
            board = k.board or r.board
            key = (board, k.release)
            if key in seen:
                raise InputError(f"board {board} kernel {k.release}: in both {seen[key]} and {src}")
            seen[key] = src
            rows.append((boards.index(board), order.get((board, k.spec), len(order)), k, r))
    rows.sort(key=lambda x: (x[0], x[1]))
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        kernels, plans = [], {}
        for _, _, k, r in rows:
            board = k.board or r.board
            rel = f"{board}/{k.release}" if nested else k.release
            # The guest's initramfs and modules are big and rebuilt on any rerun: not copied.
            shutil.copytree(k.directory, tmp / rel, symlinks=True,
                            ignore=shutil.ignore_patterns("initramfs.cpio", "modules"))
            kernels.append({"dir": rel, "board": board, "run_id": k.run_id or r.run_id, "spec": k.spec,
                            "release": k.release,
                            "verdict": k.verdict, "timing": k.timing,
                            "scenarios": [{"name": s.name, "status": s.status} for s in k.scenarios]})
            plan_file = r.run_dir / "plan.json"
            if plan_file.is_file():
                plan = json.loads(plan_file.read_text())
                keep = plans.setdefault(board, {**plan, "kernels": []})
                keep["kernels"] += [p for p in plan.get("kernels", []) if p["release"] == k.release]
        (tmp / "plans").mkdir()
        for board, plan in plans.items():
            (tmp / "plans" / f"{board}.json").write_text(json.dumps(plan, indent=2) + "\n")
        if len(plans) == 1:
            (tmp / "plan.json").write_text(json.dumps(next(iter(plans.values())), indent=2) + "\n")
        header = {"board": ", ".join(boards), "accel": " | ".join(dict.fromkeys(r.accel for r in inputs)),
                  "run_id": new_run_id(), "started": min((r.started for r in inputs if r.started), default=""),
                  "merged_from": [str(d.resolve()) for d in dirs], "kernels": kernels}
        (tmp / "results.json").write_text(json.dumps(header, indent=2) + "\n")
        first, _ = reparse.reparse(tmp)
        reports.write_all(first, ci=False)  # complete before the rename ...
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result, _ = reparse.reparse(out)
    reports.write_all(result)  # ... and its paths are OUT's after it
    return result
