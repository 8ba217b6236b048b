"""The msiforge command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import __version__, patches_cli
from .board import DEFAULT_SCENARIOS, SCENARIOS
from .errors import InputError, MsiforgeError
from .vmtests.initramfs import FAULTS

EPILOG = """\
A board (YAML) names the machine, its interrupt hierarchy and devices with
device-specific message storage.  msiforge generates a kernel module per
device implementing the msi_storage ops, builds it against each kernel, boots
the kernel in QEMU with one edu device per board device, and checks every
interrupt the devices send by DMA to their stored messages.

Examples:
  msiforge run                                   # default board q35-ims on debian:6.12
  msiforge run --kernel debian:6.1.0-56 --kernel debian:6.12
  msiforge run boards/q35-ims.yaml --scenario deliver --out /tmp/r1
  msiforge generate -o /tmp/gen --kernel debian:6.12
  msiforge plan virt-its --kernel source:6.12        # what a run would do, and why
  msiforge parse runs/20261201-142233-q35-ims         # re-derive a saved run's verdicts
  msiforge kernels list
"""


def _add_board(p: argparse.ArgumentParser) -> None:
    """Every command takes its board the same way: BOARD, or --board BOARD."""
    p.add_argument("board", nargs="?", default=None,
                   help="board YAML file, or the name of a built-in board (default: q35-ims); "
                        "--board BOARD says the same")
    p.add_argument("--board", dest="board_opt", metavar="BOARD", help=argparse.SUPPRESS)


class _KernelList(argparse.Action):
    """--kernel SPEC, repeatable; a value may also list specs separated by commas."""

    def __call__(self, parser, namespace, values, option_string=None):
        specs = list(getattr(namespace, self.dest, None) or [])
        specs += [v.strip() for v in values.split(",") if v.strip()]
        setattr(namespace, self.dest, specs)


def _add_kernels(p: argparse.ArgumentParser, what: str = "default: the board's kernels") -> None:
    """Every command takes its kernels the same way: --kernel SPEC, repeatable (or SPEC,SPEC)."""
    p.add_argument("--kernel", "-k", "--kernels", action=_KernelList, metavar="SPEC", dest="kernels",
                   help="kernel spec, repeatable or comma-separated (debian:6.12, debian:6.12.117, "
                        f"debian:6.1.0-56, debian:6.1-rt, source:6.12, source:6.12+pci-ims, tree:PATH); {what}")


def board_arg(args: argparse.Namespace) -> str | None:
    """The board a command was given, positionally or with --board (one line if both, and they differ)."""
    pos, opt = getattr(args, "board", None), getattr(args, "board_opt", None)
    if pos and opt and pos != opt:
        raise InputError(f"two boards given: {pos} and --board {opt}")
    return pos or opt


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="msiforge", description="Generate, build, boot and test MSI / IMS "
                                 "interrupt drivers on many kernels, without the hardware.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"msiforge {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="generate, fetch, build, boot and run the scenarios",
                       description="Generate the drivers, fetch and build for each kernel, boot each kernel in "
                       "QEMU and run the scenarios.  Prints a kernel x scenario table and writes results.json, "
                       "junit.xml, KTAP and console logs into the run directory.  Exit status 0 only if "
                       "everything passed, 1 if something failed, 2 for bad input.")
    _add_board(p)
    _add_kernels(p)
    p.add_argument("--scenario", "-s", action="append", metavar="S", dest="scenarios",
                   help=f"run only these scenarios ({', '.join(SCENARIOS)}); repeatable "
                        f"(default: the board's, usually {', '.join(DEFAULT_SCENARIOS)})")
    p.add_argument("--out", "-o", type=Path, metavar="DIR",
                   help="run directory (default: a new directory under runs/)")
    p.add_argument("--backend", choices=["qemu", "vng"], default="qemu",
                   help="qemu: boot with msiforge's own minimal initramfs (default, fastest); "
                        "vng: boot through virtme-ng with the host's root filesystem")
    p.add_argument("--jobs", "-j", type=int, metavar="N",
                   help="build and boot N kernels at once (default: one per CPU core)")
    p.add_argument("--guest-fault", choices=sorted(FAULTS), metavar="FAULT",
                   help="test msiforge itself: make the guest misbehave (" + ", ".join(sorted(FAULTS)) + ")")
    p.add_argument("--shard", metavar="K/N",
                   help="run only the K-th of N slices of the kernels (every N-th from the K-th), for a matrix "
                        "spread over CI jobs; msiforge merge joins the run directories")
    p.add_argument("--cold", action="store_true",
                   help="boot every kernel.  By default an x86 guest under TCG starts warm: the first run of "
                        "a kernel and machine saves the booted guest (init running, no msiforge module loaded) "
                        "in the cache on the way, later runs resume it and hand it the modules and the script "
                        "over a virtio-serial port added to it (over its console where the kernel lacks the "
                        "port's drivers); a changed kernel, QEMU or machine saves a new one")
    p.add_argument("--watch", action="store_true",
                   help="an edit loop: run, then run again each time the board file or a template changes, "
                        "printing the table each time (with --out DIR, run N goes to DIR/run-N); a board that "
                        "no longer validates is one line and the watch goes on; Ctrl-C ends it with the last "
                        "run's exit status")
    p.add_argument("--watch-runs", type=int, metavar="N", help=argparse.SUPPRESS)  # tests: stop after N runs

    p = sub.add_parser("merge", help="join run directories (the shards of a matrix) into one",
                       description="Re-derive each run directory from its logs, copy its kernels into OUT and write "
                       "one run's reports there: the table, results.json, junit.xml, results.ktap, kcidb.json and "
                       "report.html.  Kernels keep the matrix's order.  A kernel in two inputs, or a shard of a "
                       "matrix missing, is an error.  Exit status 0 if everything passed, 1 if something failed, "
                       "2 for bad input.")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories (msiforge run --out)")
    p.add_argument("--out", "-o", type=Path, metavar="OUT", required=True, help="the merged run directory (new)")

    p = sub.add_parser("repro", help="pack one kernel of a run into a bundle that reruns it elsewhere",
                       description="Write FILE.tar.gz with what reproduces one kernel's verdict: the board, the "
                       "exact kernel (spec, release, package SHA256s, .config, compiler), the generated sources, the "
                       "QEMU command line, the console log, the expected verdicts and repro.sh, which reruns that "
                       "kernel's boot and scenarios with msiforge and exits 0 when the verdict is the same, 1 when "
                       "it is not, 2 when it cannot rerun.  Without --kernel: the run's failing kernel.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (msiforge run --out)")
    p.add_argument("--kernel", "-k", metavar="RELEASE", help="the kernel (release or spec) to bundle")
    p.add_argument("--out", "-o", type=Path, metavar="FILE.tar.gz", help="the bundle to write")
    p.add_argument("--check", type=Path, metavar="EXPECTED.json",
                   help="what repro.sh runs: compare RUN_DIR (the rerun) with a bundle's expected.json")

    p = sub.add_parser("mutants", help="mutation testing: do the scenarios catch real driver bugs?",
                       description="Apply each mutant (templates/module/mutants/*.yaml: a plausible bug as one "
                       "substitution in a device's rendered driver or test module) after a passing baseline of its "
                       "board and kernel, build it W=1, boot it and run the scenarios: the ones that fail killed it.  "
                       "Prints mutant -> killed by / survived / did not build and writes mutants.json.  Exit status 0 "
                       "when every mutant that built was killed, 1 when one survived (a scenario to strengthen), "
                       "2 for bad input.")
    p.add_argument("--only", action="append", metavar="NAME", help="run only this shipped mutant; repeatable")
    p.add_argument("--file", action="append", type=Path, metavar="FILE.yaml",
                   help="also run a mutant of your own (same format); repeatable")
    p.add_argument("--out", "-o", type=Path, metavar="DIR", help="output directory (default: under runs/)")

    p = sub.add_parser("bisect", help="find the first kernel whose verdict differs from the good one",
                       description="Order the Debian kernels from --good to --bad, boot the good one for the "
                       "reference verdict of one scenario, then binary-search with real boots for the first kernel "
                       "whose verdict differs.  Verdicts are cached per (kernel, board, scenario, rendered "
                       "drivers and guest script): a repeated bisect boots nothing, a changed template boots again.  Writes bisect.json, "
                       "kcidb.json and report.html.  Exit status 0 when a "
                       "kernel that differs was found, 1 when none differs, 2 for bad input.")
    _add_board(p)
    p.add_argument("--scenario", "-s", required=True, choices=SCENARIOS, metavar="S",
                   help=f"the scenario whose verdict is compared ({', '.join(SCENARIOS)})")
    p.add_argument("--good", metavar="SPEC", help="the kernel known good (e.g. debian:6.1.0-47)")
    p.add_argument("--bad", metavar="SPEC", help="the kernel known to behave differently")
    p.add_argument("--series", metavar="SPEC",
                   help="instead of --good/--bad: bisect a generated patch series, e.g. source:6.12+pci-ims, "
                        "with git bisect run (pristine source good, series tip bad)")
    _add_kernels(p, "the kernels to bisect over, instead of the package index between --good and --bad")
    p.add_argument("--watch", metavar="REGEX",
                   help="compare what the scenario saw instead of its verdict: every match of REGEX in its KTAP "
                        "diagnostics (the first capture group, if any), e.g. --scenario domain-layout "
                        "--watch 'slots: \\S+ -> (\\S+)' for the parent domain of each driver's domain")
    p.add_argument("--out", "-o", type=Path, metavar="DIR", help="output directory (default: under runs/)")

    p = sub.add_parser("bisect-run", help="for `git bisect run`: test the kernel tree as checked out",
                       description="Run inside a kernel git tree as `git bisect run msiforge bisect-run B "
                       "--scenario S` (B: the board, as in every command; --board B says the same): build the tree with the board's kernel config, build the generated module, "
                       "boot, run the scenario.  Exit 0 good, 1 bad (the scenario failed, or the guest panicked, "
                       "oopsed or warned), 125 when it cannot say (kernel or module build failure, boot hang, "
                       "QEMU died, bad input); never above 127.")
    _add_board(p)
    p.add_argument("--scenario", "-s", required=True)
    p.add_argument("--tree", type=Path, default=Path("."), help="the kernel tree (default: the current directory)")
    p.add_argument("--out", "-o", type=Path, metavar="DIR",
                   help="run directory (default: a new directory under the system's temporary directory)")
    p.add_argument("--guest-fault", choices=sorted(FAULTS), metavar="FAULT",
                   help="test msiforge itself: make the guest misbehave")

    p = sub.add_parser("generate", help="render the drivers and guest script for each kernel",
                       description="Render one Kbuild-able module tree per kernel under DIR/<release>: one "
                       "driver per device, Kbuild, Makefile, the guest script and manifest.json.")
    _add_board(p)
    _add_kernels(p)
    p.add_argument("--out", "-o", type=Path, metavar="DIR", required=True, help="output directory")
    p.add_argument("--dkms", action="store_true",
                   help="add a dkms.conf to each tree (dkms add DIR/<release>; dkms build -m msiforge-BOARD ...); "
                        "a tree that needs its patched or +in-tree kernel builds only for it "
                        "(BUILD_EXCLUSIVE_KERNEL)")

    p = sub.add_parser("plan", help="print what a run would do on each kernel, and why",
                       description="Fetch (or build) each kernel, probe its headers and the machine, and print the "
                       "plan a run would execute: per device the driver strategy and why, the accelerator and why, "
                       "the clock mode, the boot image and kernel command line, whether the guest starts warm "
                       "(from a snapshot) or cold, the scenarios.  Nothing is generated or booted (the probe boots "
                       "are cached).")
    _add_board(p)
    _add_kernels(p)
    p.add_argument("--backend", choices=["qemu", "vng"], default="qemu", help="the backend to plan for")
    p.add_argument("--cold", action="store_true", help="plan for msiforge run --cold")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")

    p = sub.add_parser("parse", help="re-derive the verdicts of a saved run from its logs, offline",
                       description="Read each kernel's console.log and events.json in RUN_DIR (a run directory, "
                       "or one kernel's directory in it) and decide every verdict again, exactly as during the run: "
                       "the same table, and a note of any verdict that differs from the run's results.json.  Exit "
                       "status 0 if everything passed, 1 if something failed, 2 for a directory that is not a run.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (msiforge run --out)")
    p.add_argument("--json", action="store_true", help="print the re-derived results as JSON instead of a table")
    p.add_argument("--by-kernel", action="store_true",
                   help="one Markdown row per kernel: suite, compiler, each device's strategy, boot time, verdict "
                        "(from the run's plan.json; for matrices such as --kernel debian:all)")

    p = sub.add_parser("validate", help="check a board file and print what it describes")
    _add_board(p)

    p = sub.add_parser("kernels", help="list, fetch or inspect Debian kernels; configure or build source kernels",
                       description="Debian kernels come from every suite msiforge indexes (bookworm, "
                                   "bookworm-security, bookworm-backports, trixie, trixie-security, "
                                   "trixie-backports, forky, sid, experimental), each through msiforge's own apt "
                                   "state in its cache; the host's apt sources are never read or changed.")
    ksub = p.add_subparsers(dest="kcommand", metavar="ACTION")
    kl = ksub.add_parser("list", help="kernels the suites offer: release, spec, suite, headers, compiler, cached")
    kl.add_argument("--series", help="only this series, e.g. 7.3")
    kl.add_argument("--suite", help="only this suite, e.g. trixie-backports")
    kl.add_argument("--flavour", choices=["amd64", "rt-amd64", "cloud-amd64"], help="only this flavour")
    kl.add_argument("--all", action="store_true", dest="everything",
                    help="also kernels the archive keeps without headers (signed images only: not usable)")
    kl.add_argument("--json", action="store_true", help="print the kernels as JSON (one object per kernel)")
    kf = ksub.add_parser("fetch", help="download and extract a kernel and its headers into the cache")
    kf.add_argument("specs", nargs="+", metavar="SPEC")
    kt = ksub.add_parser("toolchain", help="which compiler builds a kernel's modules, and where (host or build root)",
                         description="Reads the kernel's compiler from its headers (CONFIG_CC_VERSION_TEXT) and "
                                     "says where modules for it are built: on the host when it has that compiler "
                                     "and can run the kernel's Kbuild tools, else in a cached Debian build root "
                                     "(mmdebstrap) of the suite that has it. --make creates the build root now.")
    kt.add_argument("specs", nargs="+", metavar="SPEC")
    kt.add_argument("--make", action="store_true", help="create the build root if it does not exist yet")
    ku = ksub.add_parser("update", help="refresh every suite's package lists now (they are refreshed daily)")
    ku.set_defaults(kcommand="update")
    patches_cli.register_kernels(ksub)
    patches_cli.register(sub)
    return ap


def cmd_run(args: argparse.Namespace) -> int:
    from . import runner
    from .board import load_board

    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs {args.jobs}: must be 1 or more")
    shard = runner.parse_shard(args.shard) if args.shard else None

    def run_once(n: int | None = None) -> int:
        board = load_board(board_arg(args))
        out = args.out / f"run-{n}" if n is not None and args.out is not None else args.out
        result = runner.run(board, args.kernels, args.scenarios, out, fault=args.guest_fault,
                            backend=args.backend, jobs=args.jobs, shard=shard, cold=args.cold)
        print_table(result)
        return 0 if result.passed else 1

    if not args.watch:
        return run_once()
    from . import watch
    from .board import board_source

    # The file the board names (read, not parsed: a board being edited may not validate).
    return watch.loop(run_once, lambda: [board_source(board_arg(args)), *watch.template_files()],
                      runs=args.watch_runs)


def cmd_repro(args: argparse.Namespace) -> int:
    from . import repro

    if args.check:
        code, why = repro.check(args.check, args.run_dir)
        print(why)
        return code
    if args.out is None:
        raise InputError("repro: --out FILE.tar.gz is required (or --check EXPECTED.json)")
    path = repro.bundle(args.run_dir, args.kernel, args.out)
    print(f"reproducer: {path} (tar xzf it anywhere; run ./repro.sh inside)")
    return 0


def cmd_mutants(args: argparse.Namespace) -> int:
    import datetime

    from . import mutants

    chosen = mutants.select(args.only) if args.only or not args.file else []
    for f in args.file or []:
        if not f.is_file():
            raise InputError(f"--file {f}: no such file")
        chosen.append(mutants.parse(f.read_text(), str(f)))
    out = args.out or Path("runs") / f"{datetime.datetime.now():%Y%m%d-%H%M%S}-mutants"
    outcomes = mutants.run(chosen, out)
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 160
    table = Table(title=f"msiforge mutants: {len(outcomes)} mutant(s)")
    for col in ("mutant", "bug", "outcome", "killed by", "time"):
        table.add_column(col)
    colour = {"killed": "green", "survived": "red", "did-not-build": "yellow", "baseline-failed": "red"}
    for o in outcomes:
        table.add_row(o.name, o.summary, f"[{colour[o.status]}]{o.status}[/]", ", ".join(o.killed_by),
                      f"{o.seconds:.1f} s")
    console.print(table)
    for o in outcomes:
        if o.status != "killed":
            console.print(f"  {o.name}: {o.status}: {o.detail}", markup=False)
    counts = {s: sum(o.status == s for o in outcomes) for s in colour}
    console.print(f"{counts['killed']} killed, {counts['survived']} survived, {counts['did-not-build']} did not "
                  f"build, {counts['baseline-failed']} with a failing baseline; {out / 'mutants.json'}", markup=False)
    return 0 if not counts["survived"] and not counts["baseline-failed"] else 1


def cmd_merge(args: argparse.Namespace) -> int:
    from . import merge

    result = merge.merge(args.run_dirs, args.out)
    print_table(result, title=f"msiforge merge: {len(args.run_dirs)} run(s) into {args.out}")
    return 0 if result.passed else 1


def print_table(result, title: str | None = None, files: bool = True) -> None:
    """The kernel x scenario table of a run, then each failure's diagnostics and log."""
    out = Console(highlight=False, soft_wrap=True)
    if not out.is_terminal:
        out.width = 160  # logs and pipes: keep kernel names and paths on one line
    scen = result.scenario_names  # a merge of boards with other scenarios: a column each, "-" where not run
    table = Table(title=title or f"msiforge run: board {result.board}, {result.accel}"
                  + (f", shard {result.shard}" if result.shard else ""))
    several = len(result.boards) > 1
    if several:
        table.add_column("board")
    table.add_column("kernel")
    for s in scen:
        table.add_column(s)
    table.add_column("verdict")
    table.add_column("boot")
    for k in result.kernels:
        by_name = {s.name: s for s in k.scenarios}
        cells = [f"[{'green' if by_name[n].passed else 'red'}]{by_name[n].status}[/]" if n in by_name else "-"
                 for n in scen]
        verdict = f"[green]{k.verdict}[/]" if k.passed else f"[red]{k.verdict}[/]"
        boot = f"{k.boot_seconds:.1f} s" if k.boot_seconds is not None else "-"
        table.add_row(*([k.board] if several else []), f"{k.spec} ({k.release})", *cells, verdict, boot)
    out.print(table)
    for k in result.kernels:
        for s in k.scenarios:
            for d in s.diagnostics if not s.passed else []:
                out.print(f"  {k.release} {s.name}: {d}", markup=False)
        if k.detail:
            out.print(f"  {k.release}: {k.verdict}: {k.detail}", markup=False)
        if not k.passed and k.console_log:
            out.print(f"  console log: {k.console_log}", markup=False)
    if files:
        d = result.run_dir
        out.print(f"results: {d}/results.json, {d}/junit.xml, {d}/results.ktap, {d}/kcidb.json, "
                  f"{d}/report.html", markup=False)
    out.print("PASSED" if result.passed else "FAILED", style="bold green" if result.passed else "bold red")


def cmd_plan(args: argparse.Namespace) -> int:
    import json

    from . import plan, runner
    from .board import load_board
    from .cache import cache_root
    from .vmtests import backends, qemu

    board, specs = runner.select(load_board(board_arg(args)), args.kernels, None)
    backends.get(args.backend).check(board, None)
    available = runner.check_specs(specs, board.arch)
    kernels = [runner.obtain(s, available, board.arch, board) for s in specs]
    accel = qemu.choose_accel(board.accel, kernels[0].vmlinuz, cache_root() / "probes")
    the_plan = plan.make(board, kernels, accel, args.backend, None, cache_root(), args.cold)
    if args.json:
        print(json.dumps(the_plan.to_json(), indent=2))
    else:
        print("\n".join(plan.describe(the_plan)))
    return 0


def cmd_parse(args: argparse.Namespace) -> int:
    import json

    from . import reparse

    result, differences = reparse.reparse(args.run_dir)
    if args.by_kernel:
        print("\n".join(reparse.kernel_rows(result, args.run_dir)))
    elif args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_table(result, title=f"msiforge parse: {args.run_dir}", files=False)
    for d in differences:
        print(f"msiforge parse: {d}", file=sys.stderr)
    return 0 if result.passed else 1


def cmd_bisect(args: argparse.Namespace) -> int:
    import datetime

    from . import bisect as bis
    from .board import load_board

    board = load_board(board_arg(args))
    explicit = args.kernels or None
    out = args.out or Path("runs") / f"{datetime.datetime.now():%Y%m%d-%H%M%S}-bisect-{args.scenario}"
    if args.series:
        first, report = bis.bisect_series(board, args.scenario, args.series, out.resolve())
        (out / "git-bisect.log").write_text(report)
        print(report)
        print(f"git bisect log: {out / 'git-bisect.log'}")
        return 0 if first else 1
    if not (args.good and args.bad):
        raise InputError("bisect needs --good and --bad (or --series)")
    result = bis.bisect(board, args.scenario, args.good, args.bad, out, explicit, args.watch)
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 160
    table = Table(title=f"msiforge bisect: {args.scenario} on board {board.name}, "
                        f"{len(result.candidates)} kernels from {args.good} to {args.bad}")
    cols = ("step", "kernel", "verdict", *(("seen",) if args.watch else ()), "vs good", "time", "log")
    for col in cols:
        table.add_column(col)
    for i, st in enumerate(result.steps, 1):
        mark = "[red]differs[/]" if st.differs else "[green]same[/]"
        when = "cached" if st.cached else f"{st.seconds:.1f} s"
        seen = (st.observed,) if args.watch else ()
        table.add_row(str(i), f"{st.kernel} ({st.release})", st.verdict, *seen, mark, when, st.log)
    console.print(table)
    console.print(f"steps: {len(result.steps)}, boots: {result.boots} (bound {result.max_boots}), "
                  f"time: {result.seconds:.1f} s; bisect.json: {out / 'bisect.json'}, kcidb.json, report.html",
                  markup=False)
    if result.first_different:
        found = next(st for st in result.steps if st.release == result.first_different)
        console.print(f"first kernel that differs from {args.good} ({result.reference}): "
                      f"{result.first_different} ({found.observed})", markup=False)
        return 0
    what = "what the good kernel's scenario saw" if args.watch else "the good verdict"
    console.print(f"no kernel from {args.good} to {args.bad} differs from {what}", markup=False)
    return 1


def cmd_bisect_run(args: argparse.Namespace) -> int:
    """Never lets an error escape as an exit status git bisect would take for "bad"."""
    import tempfile

    from . import bisect as bis
    from .board import load_board

    try:
        board = load_board(board_arg(args))
        out = args.out or Path(tempfile.mkdtemp(prefix="msiforge-bisect-run-"))
        code, why = bis.bisect_run(board, args.scenario, args.tree.resolve(), out, args.guest_fault)
    except MsiforgeError as exc:
        code, why = bis.SKIP, f"skip (125): cannot test: {exc}"
    except Exception as exc:  # noqa: BLE001 - an internal error must not pass for "bad"
        code, why = bis.SKIP, f"skip (125): internal error: {type(exc).__name__}: {exc}"
    print(f"msiforge bisect-run: {why}", file=sys.stderr)
    return code


def cmd_generate(args: argparse.Namespace) -> int:
    from . import runner
    from .board import load_board
    from .generator import render

    from .cache import cache_root, usable_dir

    board, specs = runner.select(load_board(board_arg(args)), args.kernels, None)
    available = runner.check_specs(specs, board.arch)
    out = args.out.resolve()
    usable_dir(out.parent, f"output directory {out}: its parent")  # before anything is fetched
    cache_root()
    kernels = [runner.obtain(s, available, board.arch, board) for s in specs]
    targets = [render.target_for(k) for k in kernels]
    trees = render.generate(board, targets, args.out, dkms=args.dkms)
    for release, tree in trees.items():
        print(f"{release}: {tree}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .board import load_board

    b = load_board(board_arg(args))
    print(f"{b.path}: board {b.name}: {b.machine} {b.arch}, {b.cpus} CPU, {b.memory_mib} MiB, "
          f"iommu {b.iommu}, accel {b.accel}")
    print(f"  kernels: {', '.join(k.text for k in b.kernels)}")
    for d in b.devices:
        print(f"  device {d.name}: {d.emulation} at 00:{d.pci_slot:02x}.0, {d.storage}, {d.slots} slot(s), "
              f"mask {d.mask}, update {d.update}, groups {list(d.groups)}"
              + (f", {d.wired_irqs} wired IRQ(s)" if d.wired_irqs else ""))
    print(f"  scenarios: {', '.join(b.scenarios)} (fires {b.fires})")
    return 0


def cmd_kernels(args: argparse.Namespace) -> int:
    from . import kernels as kern

    if args.kcommand in ("config", "build"):
        return patches_cli.handle(args)
    if args.kcommand in ("fetch", "toolchain"):
        available = kern.index()
        specs = kern.expand_specs(args.specs, available)
        for s in specs:
            kern.resolve(s, available)
        for s in specs:
            k = kern.fetch(s, available)
            if args.kcommand == "fetch":
                print(f"{s}: {k.release}  vmlinuz {k.vmlinuz}  build {k.build_dir}")
            else:
                _print_toolchain(s, k, args.make)
        return 0
    if args.kcommand == "update":
        from . import suites

        for suite in suites.active():
            suites.update(suite, force=True)
            suites.warn_if_expired(suite)
        print(f"updated {len(suites.active())} suites: {', '.join(s.name for s in suites.active())}")
        return 0
    if args.kcommand != "list":
        parser().parse_args(["kernels", "--help"])
    return _list_kernels(args)


def _print_toolchain(spec: str, k, make: bool) -> None:
    tc = k.toolchain
    print(f"{spec}: {k.release} ({k.suite})")
    print(f"  compiler: {tc.compiler.text} (CONFIG_CC_VERSION_TEXT)")
    if tc.pahole:
        print(f"  pahole:   {tc.pahole_text} (CONFIG_PAHOLE_VERSION {tc.pahole})")
    print(f"  Kbuild tools need glibc {tc.glibc[0]}.{tc.glibc[1]}")
    if tc.on_host:
        print(f"  builds on: the host ({tc.why})")
        return
    if make:
        tc.ensure_root()
    state = "made" if (tc.root_entry / ".complete").exists() else "not made yet: the first build makes it"
    print(f"  builds in: build root {tc.suite} ({tc.why})")
    print(f"  root:      {tc.root_entry} ({state})")
    print(f"  packages:  {' '.join(tc.packages)}")
    if tc.installed():
        print("  installed: " + ", ".join(f"{p} {v}" for p, v in tc.installed().items()))


def _list_kernels(args: argparse.Namespace) -> int:
    from . import kernels as kern
    from . import suites

    cached = kern.cached_releases()
    table = Table(title="Debian kernels (spec: debian:<series>, debian:<abi>, debian:<series>-rc<N>, -rt|-cloud, "
                        "@<suite>, A..B, all)")
    for col in ("release", "spec", "series", "flavour", "suite", "headers", "compiler", "cached"):
        table.add_column(col)
    shown, stale = 0, False
    picked = [k for k in kern.index(all_kernels=args.everything)
              if (not args.series or k.series == args.series) and (not args.suite or k.suite == args.suite)
              and (not args.flavour or k.flavour == args.flavour)]
    if args.json:
        import json

        print(json.dumps([{"release": k.release, "spec": k.spec if k.usable else None, "series": k.series,
                           "flavour": k.flavour, "suite": k.suite, "version": k.version, "usable": k.usable,
                           "headers": k.headers, "compiler": k.compiler, "cached": k.release in cached,
                           "expired_index": suites.expired(suites.get(k.suite)) is not None} for k in picked],
                         indent=2))
        return 0
    for k in picked:
        shown += 1
        expired = suites.expired(suites.get(k.suite)) is not None
        stale |= expired
        suite = k.suite + (" *" if expired else "")
        headers = "yes" if k.usable else ("no (signed image only)" if not k.headers else "no unsigned image")
        table.add_row(k.release, k.spec if k.usable else "", k.series, k.flavour, suite, headers,
                      k.compiler, "yes" if k.release in cached else "")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    note = "; * an expired index (used anyway: the mirror stopped refreshing that suite)" if stale else ""
    print(f"{shown} kernels{note}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: handled like Ctrl-C (exit 128 + the signal's number)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, _frame) -> None:
    """Kill the running guests first (their threads then return), then unwind like Ctrl-C."""
    import signal

    from .vmtests import console

    console.kill_all()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _handle_signals() -> None:
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        # An inherited "ignore" stays (a background job's SIGINT, nohup's SIGHUP).
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _on_signal)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line and exit status 2 (input) or 1.

    Ctrl-C, SIGTERM and SIGHUP kill every guest at once and exit 130, 143 or
    129; a guest also dies if msiforge is killed outright (PR_SET_PDEATHSIG).
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        # Usage errors exit 2, which `git bisect run` would take for "bad".
        if "bisect-run" in argv and exc.code not in (0, None):
            raise SystemExit(125) from None
        raise
    handlers = {"run": cmd_run, "bisect": cmd_bisect, "bisect-run": cmd_bisect_run, "patches": patches_cli.handle, "generate": cmd_generate, "validate": cmd_validate, "parse": cmd_parse, "plan": cmd_plan,
                "kernels": cmd_kernels, "merge": cmd_merge, "mutants": cmd_mutants,
                "repro": cmd_repro}
    if args.command is None:
        parser().print_help()
        return 2
    _handle_signals()
    try:
        return handlers[args.command](args)
    except MsiforgeError as exc:
        print(f"msiforge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated as exc:
        import signal

        print(f"msiforge: terminated by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("msiforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (msiforge kernels list | head): no traceback, and none at exit either.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1 if args.command != "bisect-run" else 125


if __name__ == "__main__":
    sys.exit(main())
