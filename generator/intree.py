"""A board's own drivers as in-tree patches: the user a kernel API series needs.

Upstream removed PCI/IMS in 6.10 for want of an in-tree user.  A
``source:X.Y[+SERIES]+in-tree`` kernel ends with one commit that adds the
board's drivers to ``drivers/misc/msiforge/``: per device, its driver
(``<module>.c`` and the interface header ``<module>.h``, rendered exactly as
out of tree), its Kconfig entry and its Makefile line; the directory's
Kconfig and Makefile are hooked into ``drivers/misc/``, and MAINTAINERS gets
an entry (checkpatch asks for one when files are added).  The test modules never go in-tree: they are built out
of tree against the kernel and use the driver's exported interface.

The drivers are rendered for the tree they go into: its headers are probed
at the commit they go on (``features.probe_with`` reading ``git show``), and
the plan picks each device's API from them, as for any kernel.  Commits are
made like the series' (``patches.py``): a temporary index, ``git
commit-tree``, the fixed date, nothing checked out.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from .. import plan
from ..board import Board, Device
from ..cache import locked
from . import features as feat
from . import render
from .patches import Identity, _git, commit_env, default_identity

#: Where the board's drivers go.
DIR = "drivers/misc/msiforge"
TEMPLATES = "patches/in-tree"


def config_symbol(dev: Device) -> str:
    """The Kconfig symbol of a device's in-tree driver (without CONFIG_)."""
    return f"MSIFORGE_{dev.name.upper()}"


def config_options(board: Board) -> dict[str, str]:
    """The kernel configuration that builds every device's in-tree driver as a module."""
    return {f"CONFIG_{config_symbol(d)}": "m" for d in board.devices}


def module_path(dev: Device) -> str:
    """The in-tree driver module of a device, relative to the kernel's build directory."""
    return f"{DIR}/{dev.module}.ko"


def _show(repo: Path, commit: str, rel: str) -> str | None:
    proc = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{rel}"], capture_output=True,
                          text=True, errors="replace", check=False)
    return proc.stdout if proc.returncode == 0 else None


def probe_commit(repo: Path, commit: str) -> feat.Features:
    """The generator's feature probes on the headers of a commit (no checkout)."""
    return feat.probe_with(lambda rel: _show(repo, commit, rel), f"commit {commit[:12]} of {repo}")


def driver_contexts(board: Board, features: feat.Features, kernelversion: str,
                    patch_series: str | None) -> list[dict]:
    """Each device's driver context for a tree with ``features`` (what render.py renders)."""
    target = render.KernelTarget(kernelversion, features, patch_series)
    kplan = plan.kernel_plan(board, kernelversion, kernelversion, features, patch_series)
    return [render.device_context(board, dev, target, kplan.device(dev.name)) for dev in board.devices]


def _hook(text: str, line: str, before: str | None) -> str:
    """``text`` with ``line`` added before its last ``before`` line (or at the end)."""
    lines = text.rstrip("\n").split("\n")
    if before is None:
        return "\n".join(lines + [line]) + "\n"
    idx = max(i for i, ln in enumerate(lines) if ln.strip() == before)
    return "\n".join(lines[:idx] + [line] + lines[idx:]) + "\n"


def _maintainers(text: str, entry: str) -> str:
    """MAINTAINERS with ``entry`` (a section) inserted where its title sorts among the sections'."""
    lines = text.split("\n")
    title = entry.split("\n", 1)[0]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Maintainers List"))
    for i in range(start, len(lines) - 1):
        is_title = lines[i] and not lines[i][0].isspace() and lines[i + 1][:3] in ("M:\t", "L:\t", "S:\t", "R:\t")
        if is_title and lines[i].upper() > title.upper() and i > 0 and lines[i - 1] == "":
            return "\n".join(lines[:i] + entry.rstrip("\n").split("\n") + [""] + lines[i:])
    return text.rstrip("\n") + "\n\n" + entry


def add_drivers(repo: Path, base: str, board: Board, kernelversion: str, patch_series: str | None,
                identity: Identity | None = None) -> str:
    """Commit the board's drivers on ``base`` (one commit for all of them); return the new tip.

    The tip is kept under ``refs/heads/msiforge/in-tree/<board>`` so that git never prunes it.
    """
    identity = identity or default_identity()
    env = render.environment()
    features = probe_commit(repo, base)
    contexts = driver_contexts(board, features, kernelversion, patch_series)
    depends = contexts[0]["arch"]["kconfig_depends"] if contexts else ""
    people = commit_env(identity)
    with locked(repo.parent / ".in-tree.lock"), tempfile.TemporaryDirectory(prefix="msiforge-in-tree-") as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo, "read-tree", base, env=index)
        kconfig = ("# SPDX-License-Identifier: GPL-2.0-only\n#\n"
                   f"# The drivers of the msiforge board {board.name}'s devices\n#\n")
        makefile = "# SPDX-License-Identifier: GPL-2.0\n"
        files: dict[str, str] = {}
        for ctx in contexts:
            files.update((f"{DIR}/{name}", text) for name, (_, text) in render.driver_sources(env, ctx).items())
            kconfig += env.get_template(f"{TEMPLATES}/Kconfig.j2").render(
                ctx, config=config_symbol(ctx["dev"]), depends=depends)
            makefile += f"obj-$(CONFIG_{config_symbol(ctx['dev'])})\t+= {ctx['mod']}.o\n"
        files[f"{DIR}/Kconfig"] = kconfig
        files[f"{DIR}/Makefile"] = makefile
        files["drivers/misc/Kconfig"] = _hook(_show(repo, base, "drivers/misc/Kconfig") or "",
                                              f'source "{DIR}/Kconfig"', "endmenu")
        files["drivers/misc/Makefile"] = _hook(_show(repo, base, "drivers/misc/Makefile") or "",
                                               "obj-y\t\t\t\t+= msiforge/", None)
        files["MAINTAINERS"] = _maintainers(_show(repo, base, "MAINTAINERS") or "",
                                            env.get_template(f"{TEMPLATES}/maintainers.j2").render(identity=identity))
        for path, text in files.items():
            blob = subprocess.run(["git", "-C", str(repo), "hash-object", "-w", "--stdin"], input=text,
                                  capture_output=True, text=True, check=True).stdout.strip()
            _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=index)
        tree = _git(repo, "write-tree", env=index)
        msg = env.get_template(f"{TEMPLATES}/commit.txt.j2").render(board=board, identity=identity,
                                                                      devices=contexts)
        msgfile = Path(tmp) / "msg"
        msgfile.write_text(msg.strip() + "\n")
        tip = _git(repo, "commit-tree", tree, "-p", base, "-F", str(msgfile), env={**index, **people})
        _git(repo, "update-ref", f"refs/heads/msiforge/in-tree/{board.name}", tip)
    return tip

