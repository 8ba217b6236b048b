"""Command-line verbs for kernel patch series and source kernels.

``msiforge patches --kernel SPEC --series NAME -o DIR`` writes a series (cover
letter first) and runs checkpatch on each patch; ``msiforge kernels config
SPEC`` shows the configuration fragment a source kernel is built with;
``msiforge kernels build SPEC`` builds a ``source:`` / ``tree:`` kernel.
``cli.py`` wires them in with ``register(subparsers)`` and ``handle(args)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import progress
from .errors import InputError
from .kspec import parse_spec


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``patches`` verb to msiforge's subcommands."""
    p = subparsers.add_parser(
        "patches", help="write a generated kernel patch series (git format-patch, checkpatch)",
        description="Generate patch series NAME for a source kernel from msiforge's templates, apply it to the "
        "pristine git tree of that exact source, and write it with git format-patch (cover letter, diffstat) "
        "into DIR.  Each patch is checked with the kernel's scripts/checkpatch.pl --strict.")
    p.add_argument("--kernel", "-k", required=True, metavar="SPEC", help="source kernel, e.g. source:6.12")
    p.add_argument("--series", required=True, metavar="NAME", help="patch series, e.g. pci-ims")
    p.add_argument("--out", "-o", required=True, type=Path, metavar="DIR", help="output directory")
    p.add_argument("--identity", metavar="'NAME <EMAIL>'",
                   help="From / Signed-off-by (default: $MSIFORGE_IDENTITY, else git's user.name/user.email)")
    p.add_argument("board", nargs="?", metavar="BOARD",
                   help="end the series with a patch that adds this board's drivers in-tree "
                   "(drivers/misc/msiforge/: source, header, Kconfig entry, Makefile line; not the test "
                   "modules), the users of the API the series adds; a board YAML file or a built-in name")


def register_kernels(ksub: argparse._SubParsersAction) -> None:
    """Add ``config`` and ``build`` under ``msiforge kernels``."""
    from . import arches

    kc = ksub.add_parser("config", help="show the configuration fragment a source: / tree: kernel is built with")
    kc.add_argument("spec", metavar="SPEC")
    kb = ksub.add_parser("build", help="build a source: / tree: kernel into the cache (O= dir, ccache)")
    kb.add_argument("spec", metavar="SPEC")
    for k in (kc, kb):
        k.add_argument("--arch", choices=list(arches.names()), default="x86_64",
                       help="the board arch to build for (arm64: cross-built; default x86_64)")


def handle(args: argparse.Namespace) -> int:
    """Run ``patches`` or ``kernels config|build``; return the exit status."""
    from . import source_kernels

    if args.command == "patches":
        return _patches(args)
    if args.kcommand == "config":
        spec = parse_spec(args.spec)
        if spec.kind == "debian":
            raise InputError(f"kernel spec {spec.text!r}: Debian kernels come with their own configuration")
        print(f"# {source_kernels.build_arch(args.arch).fragment} (merged onto {source_kernels.BASE_CONFIG})")
        print(source_kernels.config_fragment(args.arch), end="")
        return 0
    if args.kcommand == "build":
        k = source_kernels.build(args.spec, args.arch)
        progress.info(f"{k.spec}: {k.release}\n  vmlinuz   {k.vmlinuz}\n  build dir {k.build_dir}")
        return 0
    raise InputError(f"unknown command {args.command} {args.kcommand}")


def _patches(args: argparse.Namespace) -> int:
    from . import source_kernels
    from .generator import patches

    spec = parse_spec(args.kernel)
    if spec.kind != "source" or spec.patch_series:
        raise InputError(f"--kernel {args.kernel!r}: expected a plain source kernel, e.g. source:6.12")
    patches.check_supported(args.series, f"{spec.major}.{spec.minor}")
    identity = patches.parse_identity(args.identity) if args.identity else None
    board = None
    if args.board:
        from .board import load_board

        board = load_board(args.board)
    src = source_kernels.pristine(f"{spec.major}.{spec.minor}")
    drivers = f" + the drivers of {board.name}" if board else ""
    with progress.step(f"generate {args.series}{drivers} for {src.package} {src.version}"):
        files = patches.write_series(src, args.series, args.out, identity, board)
    bad = 0
    for f in files[1:]:
        r = patches.checkpatch(src, f)
        bad += r.errors + r.warnings
        progress.info(f"{f}: checkpatch --strict: {r.errors} errors, {r.warnings} warnings, {r.checks} checks")
    progress.info(f"cover letter: {files[0]}")
    return 1 if bad else 0
