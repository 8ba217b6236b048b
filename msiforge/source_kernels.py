"""Kernels built from source: Debian ``linux-source-*`` packages and users' git trees.

``source:6.12`` and ``source:6.1`` unpack Debian's ``linux-source-6.12`` /
``linux-source-6.1`` once into the cache as a *pristine* git tree (one
commit, deterministic).  ``source:6.12+pci-ims`` adds a patch series made by
``generator/patches.py`` on top of it.  ``tree:PATH[@REV]`` builds a user's
kernel git tree: at REV in a shared clone, or without REV in place.

The configuration is the board's fragment (``kconfigs/x86_64-q35.config``,
``kconfigs/arm64-virt.config``) merged onto ``tinyconfig`` with the kernel's
own ``scripts/kconfig/merge_config.sh``; every option of the fragment must
survive ``olddefconfig``, or the build fails naming the ones that did not.
The board's ``arch`` picks the fragment and the toolchain: arm64 kernels are
cross-built with Debian's ``gcc-aarch64-linux-gnu`` (``ARCH=arm64
CROSS_COMPILE=aarch64-linux-gnu-``).

Builds are out of tree (``O=``) in a *build slot* per (source, series,
arch, config): ``<cache>/kbuild/<slot>/{src,o}`` (x86_64 slot names carry no
arch, as before arches existed; others carry it, e.g. ``6.12.117-arm64-<hash>``).  ``src`` is a ``git clone
--shared`` of the source checked out at the commit to build; moving it to
another commit rewrites only the files that differ, so a changed patch
rebuilds incrementally in the same ``o``.  ``state.json`` records the hash of
(source commit, config) of the last complete build and is removed before a
build starts: a killed build is never trusted.  All slots share one ccache
with ``CCACHE_BASEDIR`` set, so a patched kernel reuses the objects of the
unpatched one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import arches, debs, hostprogs, progress
from .cache import atomic_write, cache_root, ensure_entry, locked
from .errors import BuildError, SpecError
from .kernels import Kernel
from .kspec import KernelSpec, parse_spec

#: Debian source package per kernel series.  Each comes from the oldest Debian release
#: that ships it (``SOURCE_RELEASES``): 6.1 and 6.12 from bookworm, 7.2 and 7.3 from
#: trixie (its backports), so source:7.3 is the source of debian:7.3's 7.3.4+deb13.
SOURCE_PACKAGES = {s: f"linux-source-{s}" for s in ("6.1", "6.12", "7.2", "7.3")}
SOURCE_RELEASES = ("bookworm", "trixie", "forky", "sid")
def build_arch(arch: str) -> arches.Arch:
    """How kernels (and modules) of a board ``arch`` are configured and built (SpecError naming the known ones)."""
    try:
        return arches.get(arch)
    except KeyError:
        raise SpecError(f"arch {arch!r}: kernels cannot be built for it "
                        f"(known: {', '.join(arches.names())})") from None


#: The base configuration the fragment is merged onto.
BASE_CONFIG = "tinyconfig"
#: Identity and date of the pristine commit: fixed, so the same package gives the same commit.
PRISTINE_IDENTITY = {"GIT_AUTHOR_NAME": "msiforge", "GIT_AUTHOR_EMAIL": "msiforge@localhost",
                     "GIT_COMMITTER_NAME": "msiforge", "GIT_COMMITTER_EMAIL": "msiforge@localhost",
                     "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"}


@dataclass(frozen=True)
class Source:
    """A pristine kernel source: a git tree with one commit."""

    package: str  # linux-source-6.12
    version: str  # the Debian package version, 6.12.117-1~deb12u1
    kernelversion: str  # `make kernelversion`: 6.12.117
    tree: Path
    commit: str

    @property
    def series(self) -> str:
        return ".".join(self.kernelversion.split(".")[:2])


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    """Run a command; raise BuildError naming ``what`` and the last lines of output on failure."""
    hostprogs.require(cmd[0])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-4:])
        raise BuildError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc


def _git(tree: Path, *args: str, what: str | None = None, env: dict | None = None) -> str:
    return _run(["git", "-C", str(tree), *args], what or f"git {args[0]} in {tree}",
                env=dict(os.environ, **(env or {}))).stdout.strip()


# --------------------------------------------------------------------------- pristine sources

def _unpack(cand: debs.Candidate, tmp: Path) -> None:
    """Download the source package and make ``tmp/tree`` a git tree of it with one commit."""
    package, version = cand.package, cand.version
    deb = debs.download([cand], tmp)[0]
    got = cand.sha256
    debs.unpack(deb, tmp / "deb")
    tarball = next((tmp / "deb" / "usr" / "src").glob("linux-source-*.tar.xz"))
    tree = tmp / "tree"
    tree.mkdir()
    _run(["tar", "-xJf", str(tarball), "-C", str(tree), "--strip-components=1"], f"unpacking {tarball.name}")
    shutil.rmtree(tmp / "deb")
    deb.unlink()
    # Debian's top-level .gitignore ends with "/*" (ignore everything): drop that rule.
    gitignore = tree / ".gitignore"
    lines = gitignore.read_text().splitlines()
    gitignore.write_text("".join(f"{line}\n" for line in lines if line.strip() != "/*"))
    _git(tree, "init", "-q", "-b", "pristine")
    _git(tree, "add", "-A", "-f", ".")
    _git(tree, "commit", "-q", "--no-verify", "-m", f"{package} {version}", env=PRISTINE_IDENTITY)
    kver = _run(["make", "-s", "-C", str(tree), "kernelversion"], "make kernelversion").stdout.strip()
    commit = _git(tree, "rev-parse", "HEAD")
    meta = {"package": package, "version": version, "sha256": got, "kernelversion": kver, "commit": commit}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def source_candidate(package: str) -> debs.Candidate:
    """The newest ``package`` of the oldest Debian release that has it, from msiforge's suite indexes."""
    from . import suites
    from .kernels import version_key

    for release in SOURCE_RELEASES:
        found = [(r, s.name) for s in suites.active() if s.release == release
                 for r in suites.packages(s) if r["Package"] == package]
        if found:
            rec, suite = max(found, key=lambda f: version_key(f[0]["Version"]))
            return debs.Candidate(package, rec["Version"], rec["SHA256"], rec, suite)
    raise SpecError(f"{package}: no Debian suite msiforge indexes has it")


def pristine(series: str) -> Source:
    """The pristine source of a kernel series (``6.12`` or ``6.1``), unpacked on first use."""
    package = SOURCE_PACKAGES.get(series)
    if package is None:
        raise SpecError(f"source:{series}: no Debian source package for that series "
                        f"(supported: {', '.join(f'source:{s}' for s in SOURCE_PACKAGES)})")
    cand = source_candidate(package)
    version = cand.version
    entry = cache_root() / "sources" / f"{package}_{version.replace('~', '_')}"
    if not (entry / ".complete").exists():
        with progress.step(f"fetch and unpack {package} {version}"):
            ensure_entry(entry, lambda tmp: _unpack(cand, tmp))
    meta = json.loads((entry / "meta.json").read_text())
    return Source(package=package, version=version, kernelversion=meta["kernelversion"],
                  tree=entry / "tree", commit=meta["commit"])


# --------------------------------------------------------------------------- configuration

def config_fragment(arch: str = "x86_64") -> str:
    """The configuration fragment text of a board arch (what ``msiforge kernels config`` shows)."""
    return build_arch(arch).fragment.read_text()


def _fragment_options(text: str) -> dict[str, str]:
    """CONFIG_X -> value ("n" for '# CONFIG_X is not set') of a fragment."""
    opts = {}
    for line in text.splitlines():
        m = re.match(r"^(CONFIG_\w+)=(.*)$", line) or re.match(r"^# (CONFIG_\w+) is not set$", line)
        if m:
            opts[m[1]] = m[2] if m.lastindex == 2 else "n"
    return opts


def missing_options(fragment: str, config: str) -> list[str]:
    """Options of ``fragment`` whose value in the final ``config`` differs, as 'CONFIG_X=want (got)'."""
    have = _fragment_options(config)
    out = []
    for name, want in _fragment_options(fragment).items():
        got = have.get(name, "n")
        if got != want:
            out.append(f"{name}={want} (got {got})")
    return out


def _compilers(arch: str) -> tuple[str, str]:
    """CC= and HOSTCC= of a kernel build: through ccache when it is installed (a notice when not)."""
    ba = build_arch(arch)
    hostprogs.require(ba.cc)
    hostprogs.require("gcc")
    launcher = "ccache " if hostprogs.optional("ccache") else ""
    return f"CC={launcher}{ba.cc}", f"HOSTCC={launcher}gcc"


def _make_cmd(src: Path, obj: Path, localversion: str, *targets: str, arch: str = "x86_64") -> list[str]:
    jobs = os.cpu_count() or 1
    ba = build_arch(arch)
    return ["nice", "-n", "19", "make", "-s", f"-j{jobs}", "-C", str(src), f"O={obj}", *ba.make_vars,
            *_compilers(arch), f"LOCALVERSION={localversion}", *targets]


def _make_env() -> dict:
    ccache = cache_root() / "ccache"
    ccache.mkdir(parents=True, exist_ok=True)
    return dict(os.environ, LC_ALL="C", CCACHE_DIR=str(ccache), CCACHE_BASEDIR=str(cache_root()),
                CCACHE_MAXSIZE=os.environ.get("CCACHE_MAXSIZE", "10G"), KBUILD_BUILD_TIMESTAMP="msiforge",
                KBUILD_BUILD_USER="msiforge", KBUILD_BUILD_HOST="msiforge")


def extra_fragment(options: tuple[tuple[str, str], ...]) -> str:
    """A config fragment of ``options`` (the in-tree drivers'), "" for none."""
    return "".join(f"{k}={v}\n" for k, v in options)


def debug_fragment() -> str:
    """The debug fragment's text (lockdep, KASAN, kmemleak, ...)."""
    from importlib import resources

    return resources.files("msiforge.kconfigs").joinpath("debug.config").read_text()


def configure(src: Path, obj: Path, localversion: str = "", arch: str = "x86_64",
              extra: tuple[tuple[str, str], ...] = (), debug: bool = False) -> None:
    """Write ``obj/.config``: the fragment (and ``extra`` options, the debug fragment) merged onto
    tinyconfig, checked option by option."""
    env = _make_env()
    fragments = [str(build_arch(arch).fragment)]
    if debug:
        (obj / "msiforge-debug.config").write_text(debug_fragment())
        fragments.append(str(obj / "msiforge-debug.config"))
    if extra:
        (obj / "msiforge-options.config").write_text(extra_fragment(extra))
        fragments.append(str(obj / "msiforge-options.config"))
    _run(_make_cmd(src, obj, localversion, BASE_CONFIG, arch=arch), f"make {BASE_CONFIG}", env=env)
    merge = src / "scripts" / "kconfig" / "merge_config.sh"
    # merge_config.sh runs make itself: ARCH and CROSS_COMPILE reach it through the environment.
    menv = dict(env, **dict(v.split("=", 1) for v in build_arch(arch).make_vars))
    _run(["sh", str(merge), "-m", "-O", str(obj), str(obj / ".config"), *fragments],
         "merge_config.sh", cwd=src, env=menv)
    _run(_make_cmd(src, obj, localversion, "olddefconfig", arch=arch), "make olddefconfig", env=env)
    check_config(obj, arch, extra, debug)


def check_config(obj: Path, arch: str = "x86_64", extra: tuple[tuple[str, str], ...] = (),
                 debug: bool = False) -> None:
    """Fail loudly naming every fragment option that did not survive into ``obj/.config``."""
    config = (obj / ".config").read_text()
    lost = missing_options(debug_fragment(), config) if debug else []
    if lost:
        raise BuildError("debug.config: options lost by olddefconfig (unmet dependencies?): " + ", ".join(lost))
    lost = missing_options(config_fragment(arch), config)
    if lost:
        raise BuildError(f"{build_arch(arch).fragment.name}: options lost by olddefconfig (unmet dependencies?): "
                         + ", ".join(lost))
    lost = missing_options(extra_fragment(extra), config)
    if lost:
        raise BuildError("the patch series' or the in-tree drivers' options were lost by olddefconfig "
                         "(their Kconfig 'depends on' is not met): " + ", ".join(lost))


# --------------------------------------------------------------------------- building

@dataclass(frozen=True)
class Target:
    """What to build: a git repository, the commit, and where to build it."""

    spec: str
    repo: Path  # git repository holding ``commit``
    commit: str | None  # None: the working tree of ``repo`` as it is (tree:PATH)
    slot: str  # build slot name
    series: str  # kernel series, e.g. 6.12 (its pristine source, for series_targets)
    patch_series: str | None = None  # the msiforge patch series on top, if any
    arch: str = "x86_64"  # the board arch it is built for
    #: Options beyond the fragment: the patch series' (series.yaml config:) and, with +in-tree
    #: (the board's drivers are the last commit), the drivers'; and the drivers' modules (under O=).
    config: tuple[tuple[str, str], ...] = ()
    in_tree: tuple[str, ...] = ()
    #: +debug: kconfigs/debug.config merged after the board's fragment (a slot of its own).
    debug: bool = False


def _source_target(spec: KernelSpec, board=None) -> Target:
    from .generator import intree, patches

    if spec.patch_series:  # a one-line error before anything is downloaded
        patches.check_supported(spec.patch_series, f"{spec.major}.{spec.minor}")
    if spec.in_tree and board is None:
        raise SpecError(f"kernel spec {spec.text!r}: +in-tree builds a board's drivers in the tree; "
                        "give it with a board (msiforge run BOARD --kernel ...)")
    src = pristine(f"{spec.major}.{spec.minor}")
    commit, slot = src.commit, src.kernelversion
    if spec.patch_series:
        commit = patches.series_commit(src, spec.patch_series)
        slot += f"+{spec.patch_series}"
    config, in_tree = (), ()
    if spec.patch_series:
        si = patches.info(spec.patch_series)
        config = si.config_upto(len(si.patches))
    if spec.in_tree:
        # The slot of the kernel without them: Kbuild rebuilds only what the drivers' options and
        # files touch (a minute, where a slot of its own would compile the whole kernel again).
        commit = intree.add_drivers(src.tree, commit, board, src.kernelversion, spec.patch_series)
        config = merge_options(config, tuple(intree.config_options(board).items()))
        in_tree = tuple(intree.module_path(d) for d in board.devices)
    if spec.debug:
        # Instrumentation changes every object: a debug kernel never shares a slot with a plain one.
        slot += "+debug"
    return Target(spec=spec.text, repo=src.tree, commit=commit, slot=slot, series=src.series,
                  patch_series=spec.patch_series, config=config, in_tree=in_tree, debug=spec.debug)


def merge_options(*parts: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Option lists merged in order (a later value wins)."""
    out: dict[str, str] = {}
    for part in parts:
        out.update(part)
    return tuple(out.items())


def check_spec(spec: KernelSpec) -> None:
    """A one-line SpecError for a source: series without a Debian package or a tree: that is no kernel tree.

    Nothing is fetched or built: this runs before a run writes anything.
    """
    if spec.kind == "source":
        series = f"{spec.major}.{spec.minor}"
        if series not in SOURCE_PACKAGES:
            raise SpecError(f"source:{series}: no Debian source package for that series "
                            f"(supported: {', '.join(f'source:{s}' for s in SOURCE_PACKAGES)})")
    elif spec.kind == "tree":
        _tree_path(spec)


def _tree_path(spec: KernelSpec) -> Path:
    path = Path(os.path.expanduser(spec.path or "")).resolve()
    if not (path / "Makefile").is_file() or not (path / "Kconfig").is_file():
        raise SpecError(f"kernel spec {spec.text!r}: {path} is not a kernel source tree")
    return path


def _tree_target(spec: KernelSpec) -> Target:
    path = _tree_path(spec)
    if spec.rev:
        commit = _run(["git", "-C", str(path), "rev-parse", "--verify", "--quiet", f"{spec.rev}^{{commit}}"],
                      f"kernel spec {spec.text!r}: git rev-parse {spec.rev}").stdout.strip()
    else:
        commit = None
    kver = _run(["make", "-s", "-C", str(path), "kernelversion"], f"make kernelversion in {path}").stdout.strip()
    tag = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return Target(spec=spec.text, repo=path, commit=commit, slot=f"tree-{path.name}-{tag}",
                  series=".".join(kver.split(".")[:2]))


def target(spec: str | KernelSpec, arch: str = "x86_64", board=None) -> Target:
    """Resolve a ``source:`` or ``tree:`` spec to what to build for a board ``arch``.

    The source is fetched if needed.  ``board`` is needed by ``+in-tree``
    specs: its drivers are the last commit.
    """
    import dataclasses

    spec = parse_spec(spec) if isinstance(spec, str) else spec
    build_arch(arch)
    if spec.kind == "source":
        return dataclasses.replace(_source_target(spec, board), arch=arch)
    if spec.kind == "tree":
        return dataclasses.replace(_tree_target(spec), arch=arch)
    raise SpecError(f"kernel spec {spec.text!r}: not a source: or tree: kernel")


def _checkout(tgt: Target, src: Path) -> None:
    """Make ``src`` a shared clone of the target repository at the target commit."""
    if not (src / ".git").exists():
        # --shared: the target repository's objects (and commits added to it later) are visible here.
        _git(src.parent, "clone", "-q", "--shared", "--no-checkout", str(tgt.repo), src.name)
    # Only the files that differ from the current checkout are rewritten (incremental rebuilds).
    _git(src, "checkout", "-q", "-f", "--detach", str(tgt.commit), what=f"git checkout {tgt.commit}")


def _key(tgt: Target, src: Path) -> str:
    h = hashlib.sha256()
    if tgt.commit:
        h.update(tgt.commit.encode())
    else:  # a working tree: its HEAD and every uncommitted change
        h.update(_git(src, "rev-parse", "HEAD").encode())
        h.update(_git(src, "diff", "HEAD").encode())
        h.update(_git(src, "status", "--porcelain", "--untracked-files=no").encode())
    h.update(BASE_CONFIG.encode() + b"\0" + config_fragment(tgt.arch).encode())
    if tgt.config:  # keys of kernels without extra options predate them (and must not change)
        h.update(b"\0in-tree=" + extra_fragment(tgt.config).encode())
    if tgt.arch != "x86_64":  # x86_64 keys predate arches (and must not change)
        h.update(b"\0arch=" + tgt.arch.encode())
    if tgt.debug:
        h.update(b"\0debug=" + debug_fragment().encode())
    return h.hexdigest()


def build(spec: str | KernelSpec, arch: str = "x86_64", board=None) -> Kernel:
    """Build (or reuse) the kernel of a ``source:`` / ``tree:`` spec for a board ``arch``.

    Returns it like a Debian kernel.  ``board``: for ``+in-tree`` specs.
    """
    return build_target(target(spec, arch, board))


def series_targets(spec: str | KernelSpec, arch: str = "x86_64", board=None) -> list[Target]:
    """One target per patch of a ``source:X.Y+SERIES`` spec, in order (bisecting the series).

    They share the spec's build slot, so building them one after another is
    incremental.  ``board``: for ``+in-tree`` specs (its drivers are the last patch).
    """
    from .generator import intree, patches

    tgt = target(spec, arch, board)
    commits = _git(tgt.repo, "rev-list", "--reverse", f"{pristine(tgt.series).commit}..{tgt.commit}").split()
    n = len(commits)
    si = patches.info(tgt.patch_series) if tgt.patch_series else None
    drivers = tuple(intree.config_options(board).items()) if tgt.in_tree else ()

    def config(i: int) -> tuple[tuple[str, str], ...]:
        # The series' options as of patch i; the in-tree drivers are the last commit: theirs go with it only.
        return merge_options(si.config_upto(i) if si else (), drivers if i == n else ())

    return [Target(spec=f"{tgt.spec} (patch {i}/{n})", repo=tgt.repo, commit=c, slot=tgt.slot,
                   series=tgt.series, patch_series=tgt.patch_series, arch=tgt.arch,
                   config=config(i), in_tree=tgt.in_tree if i == n else (),
                   debug=tgt.debug)
            for i, c in enumerate(commits, 1)]


def build_target(tgt: Target) -> Kernel:
    """Build (or reuse) one target in its slot."""
    ba = build_arch(tgt.arch)
    config_hash = hashlib.sha256(config_fragment(tgt.arch).encode()).hexdigest()[:10]
    slot = cache_root() / "kbuild" / f"{tgt.slot}{ba.slot_tag}-{config_hash}"
    if tgt.config:  # the slot is the fragment's; the configuration also has the drivers' options
        config_hash += "-" + hashlib.sha256(extra_fragment(tgt.config).encode()).hexdigest()[:8]
    if tgt.debug:
        config_hash += "-debug-" + hashlib.sha256(debug_fragment().encode()).hexdigest()[:8]
    slot.mkdir(parents=True, exist_ok=True)
    with locked(slot.with_name(slot.name + ".lock")):
        src = slot / "src" if tgt.commit else tgt.repo
        if tgt.commit:
            _checkout(tgt, src)
        key = _key(tgt, src)
        obj = slot / "o"
        state_file = slot / "state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        localversion = f"-msiforge-{key[:8]}"
        if state.get("key") != key or not (obj / ba.image).exists():
            state_file.unlink(missing_ok=True)
            obj.mkdir(exist_ok=True)
            if state.get("config") != config_hash or not (obj / ".config").exists():
                with progress.step(f"configure {tgt.spec} ({BASE_CONFIG} + {ba.fragment.name})"):
                    configure(src, obj, localversion, tgt.arch, tgt.config, tgt.debug)
            cross = f", {tgt.arch}" if ba.make_vars else ""
            cached = ", ccache" if hostprogs.which("ccache") else ", no ccache"
            with progress.step(f"build kernel {tgt.spec} (nice{cached}{cross})"):
                _run(_make_cmd(src, obj, localversion, "all", arch=tgt.arch),
                     f"kernel build of {tgt.spec} (O={obj})", env=_make_env())
            check_config(obj, tgt.arch, tgt.config, tgt.debug)
            release = _run(_make_cmd(src, obj, localversion, "kernelrelease", arch=tgt.arch),
                           "make kernelrelease", env=_make_env()).stdout.strip()
            state = {"key": key, "config": config_hash, "release": release, "spec": tgt.spec,
                     "commit": tgt.commit}
            atomic_write(state_file, json.dumps(state, indent=2) + "\n")
    return Kernel(spec=tgt.spec, release=state["release"], vmlinuz=obj / ba.image,
                  build_dir=obj, header_dirs=[src, obj],
                  patch_series=tgt.patch_series, arch=tgt.arch,
                  in_tree=tuple(obj / m for m in tgt.in_tree))
