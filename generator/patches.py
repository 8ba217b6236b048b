"""Kernel patch series from templates, applied to a pristine source and exported with git.

A series lives in ``templates/patches/<name>/``: ``series.yaml`` (the
kernel series it supports, the cover letter's subject and text, the kernel
options its builds need, the patch templates in order) and one Jinja
template per patch.  ``config:`` maps ``CONFIG_X`` to its value for every
build of the series; a patch given as ``{file: ..., config: {...}}`` adds
options from that patch on (those its own Kconfig introduces), so building
each patch in turn (bisecting the series) never asks for an option the tree
does not have yet.  A kernel series whose
code differs around a patch has its own version of that template in
``<name>/<series>/`` (e.g. ``pci-ims/7.3/0004-vtd-ims.patch.j2``), found
before the common one: it extends ``common/<template>`` and replaces only the
blocks whose context differs.  The subject and text may say ``{{ kernel }}``.  A patch template
renders to the commit message (subject line, blank line, body, trailers)
followed by the unified diff, which starts at the first ``diff --git`` line.

Generating a series applies each rendered diff with ``git apply --cached``
to a temporary index of the pristine tree and commits it with ``git
commit-tree`` (no checkout: nothing in the cached tree is rewritten).  The
commits get a fixed date, so the same templates and identity give the same
commits; the tip is kept under ``refs/heads/msiforge/<name>`` so that git
never prunes it.  ``write_series`` exports the commits with ``git
format-patch`` (cover letter with shortlog and diffstat, base commit).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
import yaml

from .. import hostprogs
from ..cache import locked
from ..errors import BuildError, EnvironmentProblem, InputError

#: The date of every generated commit (reproducible commits, reproducible builds).
COMMIT_DATE = "2026-01-01T00:00:00Z"
_IDENTITY_RE = re.compile(r"^(?P<name>[^<>\n]+?)\s*<(?P<email>[^<>\s]+@[^<>\s]+)>$")
_TOTAL = re.compile(r"total: (?P<e>\d+) errors, (?P<w>\d+) warnings, (?:(?P<c>\d+) checks, )?\d+ lines checked")


@dataclass(frozen=True)
class Identity:
    """Who the patches are from and signed off by."""

    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


@dataclass(frozen=True)
class SeriesInfo:
    """A series' description from its ``series.yaml``."""

    name: str
    kernels: tuple[str, ...]  # kernel series it applies to, e.g. ("6.12",)
    subject: str
    blurb: str
    patches: tuple[str, ...]  # template file names, in order
    #: The board arches whose kernels it is for (series.yaml arches:, default x86_64).
    arches: tuple[str, ...] = ("x86_64",)
    #: Kernel options every build of the series needs, and those each patch adds (its Kconfig's).
    config: tuple[tuple[str, str], ...] = ()
    patch_config: tuple[tuple[tuple[str, str], ...], ...] = ()

    def config_upto(self, n: int) -> tuple[tuple[str, str], ...]:
        """The options of a build of the first ``n`` patches (the series' own, then each patch's)."""
        opts = dict(self.config)
        for extra in self.patch_config[:n]:
            opts.update(extra)
        return tuple(opts.items())


@dataclass
class CheckReport:
    """checkpatch's verdict on one patch file."""

    patch: Path
    errors: int
    warnings: int
    checks: int
    output: str


def _templates() -> Path:
    return Path(str(resources.files("msiforge.templates"))) / "patches"


def available() -> list[str]:
    """Names of the series msiforge can generate."""
    root = _templates()
    return sorted(p.name for p in root.iterdir() if (p / "series.yaml").is_file())


def info(name: str) -> SeriesInfo:
    """Load a series' description; an unknown name is an InputError listing the known ones."""
    path = _templates() / name / "series.yaml"
    if not path.is_file():
        raise InputError(f"patch series {name!r}: unknown (known: {', '.join(available())})")
    data = yaml.safe_load(path.read_text())
    files, per_patch = [], []
    for entry in data["patches"]:
        if isinstance(entry, dict):
            files.append(entry["file"])
            per_patch.append(_options(path, f"patches[{entry['file']}].config", entry.get("config", {})))
        else:
            files.append(entry)
            per_patch.append(())
    return SeriesInfo(name=name, kernels=tuple(str(k) for k in data["kernels"]), subject=data["subject"],
                      blurb=data["blurb"].strip(), patches=tuple(files),
                      arches=tuple(data.get("arches", ("x86_64",))),
                      config=_options(path, "config", data.get("config", {})), patch_config=tuple(per_patch))


def _options(path: Path, field: str, options: dict) -> tuple[tuple[str, str], ...]:
    """A ``config:`` mapping as (CONFIG_X, value) pairs; a malformed one is a BuildError naming it."""
    out = []
    for key, value in (options or {}).items():
        if not re.fullmatch(r"CONFIG_[A-Z0-9_]+", str(key)) or not re.fullmatch(r"[ymn]|\d+|\".*\"", str(value)):
            raise BuildError(f"{path}: {field}: {key}: {value!r} is not CONFIG_X: y|m|n|number|\"string\"")
        out.append((str(key), str(value)))
    return tuple(out)


def parse_identity(text: str) -> Identity:
    """Parse 'Name <email>' or raise InputError."""
    m = _IDENTITY_RE.match(text.strip())
    if not m:
        raise InputError(f"identity {text!r}: expected 'Full Name <user@example.org>'")
    return Identity(m["name"], m["email"])


def default_identity() -> Identity:
    """$MSIFORGE_IDENTITY, else git's user.name / user.email, else msiforge's own."""
    env = os.environ.get("MSIFORGE_IDENTITY")
    if env:
        return parse_identity(env)

    def conf(key: str) -> str:
        proc = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True, check=False)
        return proc.stdout.strip()

    name, email = conf("user.name"), conf("user.email")
    return Identity(name, email) if name and email else Identity("msiforge", "msiforge@localhost")


def check_supported(name: str, kernel_series: str, arch: str | None = None) -> SeriesInfo:
    """The series' info, or a one-line InputError if it does not apply to ``kernel_series``
    (or, given, to a board ``arch``)."""
    si = info(name)
    if kernel_series not in si.kernels:
        want = ", ".join(f"source:{k}+{name}" for k in si.kernels)
        raise InputError(f"patch series {name!r} does not support kernel {kernel_series} (use {want})")
    if arch is not None and arch not in si.arches:
        raise InputError(f"patch series {name!r} is for {', '.join(si.arches)} boards, not {arch}")
    return si


def kernel_series(kernelversion: str) -> str:
    """``7.3.4`` -> ``7.3``."""
    return ".".join(kernelversion.split(".")[:2])


def cover_text(si: SeriesInfo, kernelversion: str) -> tuple[str, str]:
    """The cover letter's subject and text for a kernel (``{{ kernel }}`` is its series)."""
    series = kernel_series(kernelversion)
    return (jinja2.Template(si.subject).render(kernel=series), jinja2.Template(si.blurb).render(kernel=series))


def render(name: str, identity: Identity, kernelversion: str) -> list[tuple[str, str]]:
    """Render a series' patches to (commit message, diff) pairs, each from the kernel series' own
    version of the template when it has one."""
    si = info(name)
    root = _templates() / name
    # A series' own version may extend the common one ("common/NAME") and replace its blocks.
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(root / kernel_series(kernelversion))),
                                  jinja2.FileSystemLoader(str(root)),
                                  jinja2.PrefixLoader({"common": jinja2.FileSystemLoader(str(root))})])
    env = jinja2.Environment(loader=loader,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    out = []
    for tmpl in si.patches:
        text = env.get_template(tmpl).render(identity=identity, kernelversion=kernelversion, series=si)
        msg, sep, diff = text.partition("\ndiff --git ")
        if not sep:
            raise BuildError(f"template {name}/{tmpl}: renders no 'diff --git' section")
        out.append((msg.strip() + "\n", "diff --git " + diff))
    return out


def _git(repo: Path, *args: str, env: dict | None = None, what: str = "") -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False,
                          env=dict(os.environ, **(env or {})))
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise BuildError(f"{what or 'git ' + args[0]} failed: {tail}")
    return proc.stdout.strip()


def ref(name: str) -> str:
    """The branch that keeps a generated series in the source repository."""
    return f"msiforge/{name}"


def commit_env(identity: Identity) -> dict[str, str]:
    """git's environment for a generated commit: author and committer ``identity``, the fixed date."""
    return {"GIT_AUTHOR_NAME": identity.name, "GIT_AUTHOR_EMAIL": identity.email,
            "GIT_COMMITTER_NAME": identity.name, "GIT_COMMITTER_EMAIL": identity.email,
            "GIT_AUTHOR_DATE": COMMIT_DATE, "GIT_COMMITTER_DATE": COMMIT_DATE}


def series_commit(source, name: str, identity: Identity | None = None) -> str:
    """Generate series ``name`` on ``source`` (a ``source_kernels.Source``); return the tip commit."""
    si = check_supported(name, source.series)
    identity = identity or default_identity()
    people = commit_env(identity)
    repo = source.tree
    with locked(repo.parent / f".{name}.lock"), tempfile.TemporaryDirectory(prefix="msiforge-series-") as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo, "read-tree", source.commit, env=index)
        parent = source.commit
        for (msg, diff), tmpl in zip(render(name, identity, source.kernelversion), si.patches):
            patch = Path(tmp) / "patch.diff"
            patch.write_text(diff)
            _git(repo, "apply", "--cached", "--recount", "--whitespace=nowarn", str(patch), env=index,
                 what=f"applying {name}/{tmpl} to {source.package} {source.version}")
            tree = _git(repo, "write-tree", env=index)
            msgfile = Path(tmp) / "msg"
            msgfile.write_text(msg)
            parent = _git(repo, "commit-tree", tree, "-p", parent, "-F", str(msgfile), env={**index, **people})
        _git(repo, "update-ref", f"refs/heads/{ref(name)}", parent)
    return parent


def write_series(source, name: str, out: Path, identity: Identity | None = None, board=None) -> list[Path]:
    """Write the series as ``git format-patch`` files (cover letter first) into ``out``.

    With a ``board``, the series ends with the patch that adds the board's
    drivers in-tree (``intree.py``): the users of the API it adds.
    """
    from . import intree

    si = info(name)
    identity = identity or default_identity()
    tip = series_commit(source, name, identity)
    if board is not None:
        tip = intree.add_drivers(source.tree, tip, board, source.kernelversion, name, identity)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.patch"):
        old.unlink()
    # The cover letter is from the committer: given here, so no git user.name/email is needed.
    _git(source.tree, "format-patch", "-q", "--cover-letter", f"--base={source.commit}", "--thread=shallow",
         "-o", str(out), f"{source.commit}..{tip}",
         env={"GIT_COMMITTER_DATE": COMMIT_DATE, "GIT_COMMITTER_NAME": identity.name,
              "GIT_COMMITTER_EMAIL": identity.email}, what="git format-patch")
    patches = sorted(out.glob("*.patch"))
    cover = patches[0]
    subject, blurb = cover_text(si, source.kernelversion)
    if board is not None:
        blurb += (f"\n\nThe last patch adds the drivers of the msiforge board {board.name}'s devices in\n"
                  "drivers/misc/msiforge/: the in-tree users of the interface.")
    text = cover.read_text().replace("*** SUBJECT HERE ***", subject, 1)
    cover.write_text(text.replace("*** BLURB HERE ***", blurb, 1))
    return patches


def checkpatch(source, patch: Path) -> CheckReport:
    """Run the source's own ``scripts/checkpatch.pl --strict`` on one patch file."""
    script = source.tree / "scripts" / "checkpatch.pl"
    # Its SPDX check runs scripts/spdxcheck.py with the python3 on PATH: this one, which has ply and git.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([hostprogs.require("perl"), str(script), "--strict", "--show-types", str(patch)],
                          cwd=source.tree, capture_output=True, text=True, check=False, env=env)
    m = _TOTAL.search(proc.stdout)
    if not m:
        raise EnvironmentProblem(f"checkpatch.pl gave no summary for {patch.name}: {proc.stdout[-300:]}")
    return CheckReport(patch=patch, errors=int(m["e"]), warnings=int(m["w"]), checks=int(m["c"] or 0),
                       output=proc.stdout)
