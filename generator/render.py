"""Render a board into Kbuild-able module trees, one per kernel.

Each tree holds one driver per device (``msiforge_<dev>.c``), a Kbuild file,
a Makefile for standalone use, the guest test script and ``manifest.json``
(which template produced which file, the kernel's probed features and the
strategy chosen per device).  Output is written to a temporary directory and
renamed into place, so a failed generation leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2

from .. import __version__
from .. import arches, plan
from ..board import Board, Device
from . import cstyle, scenarios
from . import features as feat
from .arch import arch_context

#: A device's driver is rendered from its API's backend, features.BACKENDS[api].template
#: (module/driver/backends/<api>.c.j2), which extends this base.
DRIVER_BASE = "module/driver/base.c.j2"
#: The driver's header: its interface to the test module (part of the driver, in-tree with it).
DRIVER_HEADER = "module/driver/interface.h.j2"
#: The test module of a device: the driver's client and the device model (never in-tree).
TEST_MODULE = "module/harness/test.c.j2"
#: The vfio-platform MSI handler of a platform-msi device, on kernels with that API (never in-tree).
VFIO_MODULE = "module/vfio/handler.c.j2"
#: The user-space half of the vfio-platform scenario, put in a tree with a vfio handler (built by kmod/userprog.py).
VFIO_PROGRAM = "guest/vfio/msiforge-vfio.c"
#: What the edu macros need to know of the handler: it keeps the storage; the edu's DMA is polled.
VFIO_BACKEND = feat.Backend("vfio-platform", stored=True, dma_msi=False, chip_ops=False, own_domain=False,
                            group_ids=False)
GUEST_TEMPLATE = "guest/run.sh.j2"


@dataclass(frozen=True)
class KernelTarget:
    """What the generator needs to know of a kernel."""

    release: str
    features: feat.Features
    patch_series: str | None = None  # the msiforge series the kernel was built with
    in_tree: bool = False  # the drivers are built in the kernel tree (source:...+in-tree)


def target_for(kernel) -> KernelTarget:
    """The generator's view of a fetched or built kernel (``kernels.Kernel``): its probed features."""
    return KernelTarget(kernel.release, feat.probe(kernel.header_dirs), kernel.patch_series,
                        bool(getattr(kernel, "in_tree", ())))


def c_comment(text: str) -> str:
    """Make free text safe inside a C block comment (and on one line)."""
    text = re.sub(r"[^\x20-\x7e]", " ", text)
    return re.sub(r"\*/", "* /", text).replace("/*", "/ *").strip()


def wrap_paragraphs(text: str, width: int = 72) -> str:
    """Wrap each paragraph (blank-line separated) at ``width``, never inside a word or at a hyphen."""
    import textwrap

    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip())]
    return "\n\n".join(textwrap.fill(p, width, break_long_words=False, break_on_hyphens=False)
                       for p in paras if p) + "\n"


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates, kept in the cache (keyed by each template's source checksum)."""
    from ..cache import cache_root
    from ..errors import InputError

    try:
        path = cache_root() / "jinja"
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, InputError):
        return None  # an unwritable cache only costs the compile time
    return jinja2.FileSystemBytecodeCache(str(path))


def environment() -> jinja2.Environment:
    root = Path(str(resources.files("msiforge.templates")))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        bytecode_cache=_bytecode_cache(),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["c_comment"] = c_comment
    env.filters["paragraphs"] = wrap_paragraphs
    env.filters["split_lines"] = lambda text: [line for line in text.split("\n") if line.strip()]
    return env


_LABELS = {"ims": "IMS", "platform-msi": "PLATFORM-MSI", "pci-msi": "PCI-MSI"}


def device_context(board: Board, dev: Device, kernel: KernelTarget, strategy: "plan.DevicePlan") -> dict:
    """Template variables for one device's driver on one kernel, as the plan chose its ``strategy``."""
    backend = feat.BACKENDS[strategy.api]
    arch = arch_context(board)
    label = _LABELS[dev.storage]
    return {
        "version": __version__,
        "template": backend.template,
        "board": board,
        "dev": dev,
        "kernel": {"release": kernel.release, "features": kernel.features},
        "arch": arch,
        "strategy": strategy.strategy,
        "api": strategy.api,
        "backend": backend,
        # Queued updates are pushed at irq_bus_sync_unlock() where the ops are irq_chip callbacks.
        "bus_lock": dev.update == "queued" and backend.chip_ops,
        # The storage is the PCI MSI capability, sent by raising the edu's MSI where the arch needs it.
        "raise_msi": not backend.stored and arch["pci_msi_by_raise"],
        "strategy_why": strategy.why,
        "p": dev.name,
        "P": dev.name.upper(),
        "q": f"{dev.name}_test",
        "Q": f"{dev.name.upper()}_TEST",
        "mod": dev.module,
        "chip_name": f"{label}-{dev.name}",
        "domain_name": f"{label}-{dev.name}",
    }


def vfio_module(board: Board, dev: Device, kernel: KernelTarget) -> str | None:
    """The module name of ``dev``'s vfio-platform MSI handler, or None when it has none on ``kernel``
    (not a platform device, or the kernel has no vfio-platform MSI API)."""
    if dev.storage != "platform-msi" or not kernel.features.vfio_platform_msi:
        return None
    return f"{dev.module}_vfio"


def vfio_context(ctx: dict) -> dict:
    """A device's template context for its vfio-platform MSI handler (its own prefix and traits)."""
    dev = ctx["dev"]
    return {**ctx, "q": f"{dev.name}_vfio", "Q": f"{dev.name.upper()}_VFIO", "backend": VFIO_BACKEND,
            "raise_msi": False}


def driver_sources(env: jinja2.Environment, ctx: dict) -> dict[str, tuple[str, str]]:
    """One device's driver, the part that can go in-tree: ``{file name: (template, text)}`` (its .c and .h)."""
    mod = ctx["mod"]
    return {name: (tmpl, cstyle.align_continuations(env.get_template(tmpl).render(ctx)))
            for name, tmpl in ((f"{mod}.c", ctx["template"]), (f"{mod}.h", DRIVER_HEADER))}


#: The DKMS configuration ``msiforge generate --dkms`` adds to each tree.
DKMS_TEMPLATE = "module/dkms.conf.j2"


def _ere_literal(text: str) -> str:
    """``text`` as a POSIX extended regex matching only itself (dkms matches with bash's =~)."""
    return "".join("\\" + c if c in ".[]{}()*+?|^$\\" else c for c in text)


def dkms_conf(env: jinja2.Environment, board: Board, kernel: KernelTarget, devices: list[dict],
              modules: list[str], digest: str) -> str:
    """A tree's dkms.conf: its modules, W=1 like every msiforge build, and the kernels it builds for.

    A tree whose drivers use a patched kernel's API, or go with drivers that
    are in the kernel itself (+in-tree), builds only for that kernel
    (BUILD_EXCLUSIVE_KERNEL); the others for any kernel dkms is asked for.
    """
    patched = [d["name"] for d in devices if d["strategy"] == "patched"]
    why = ""
    if patched:
        why = f"{', '.join(patched)} use(s) the API of the patch series {kernel.patch_series}, in this kernel only"
    elif kernel.in_tree:
        why = "the drivers are in this kernel's tree (+in-tree): the test modules need its copy"
    return env.get_template(DKMS_TEMPLATE).render(
        version=__version__, board=board.name, release=kernel.release, devices=devices, modules=modules,
        package=f"msiforge-{board.name}", package_version=f"{__version__}-{digest[:12]}",
        exclusive=f"^{_ere_literal(kernel.release)}$" if why else "", exclusive_why=why)


def tree_modules(devices: list[dict], in_tree: bool) -> list[str]:
    """The modules a tree builds, per device (its manifest entry): the driver (unless in-tree:
    the kernel's), the test module, and the vfio-platform MSI handler where there is one."""
    return [m for d in devices
            for m in ([] if in_tree else [d["module"]]) + [f"{d['module']}_test"]
            + ([d["vfio_module"]] if "vfio_module" in d else [])]


def render_tree(env: jinja2.Environment, board: Board, kernel: KernelTarget, dest: Path,
                kplan=None, dkms: bool = False) -> dict:
    """Render one kernel's module tree into ``dest`` as its plan says; return its manifest.

    ``kplan`` (``plan.KernelPlan``) is the kernel's plan; without one it is
    made from the kernel's features (the generate-only path: no boot part).
    The manifest carries the plan, so the tree says what was decided and why.
    """
    from . import intree

    kplan = kplan or plan.kernel_plan(board, kernel.release, kernel.release, kernel.features, kernel.patch_series)
    dest.mkdir(parents=True)
    files: dict[str, str] = {}
    devices = []
    for dev in board.devices:
        ctx = device_context(board, dev, kernel, kplan.device(dev.name))
        for name, (tmpl, text) in driver_sources(env, ctx).items():
            # In-tree drivers are the kernel's; the test module needs only their header.
            if kernel.in_tree and name.endswith(".c"):
                continue
            (dest / name).write_text(text)
            files[name] = tmpl
        name = f"{dev.module}_test.c"
        (dest / name).write_text(cstyle.align_continuations(env.get_template(TEST_MODULE).render(ctx)))
        files[name] = TEST_MODULE
        vfio = vfio_module(board, dev, kernel)
        if vfio:
            (dest / f"{vfio}.c").write_text(cstyle.align_continuations(
                env.get_template(VFIO_MODULE).render(vfio_context(ctx))))
            files[f"{vfio}.c"] = VFIO_MODULE
        devices.append({"name": dev.name, "module": dev.module, "strategy": ctx["strategy"],
                        "api": ctx["api"], "why": ctx["strategy_why"],
                        "chip": ctx["chip_name"], "domain": ctx["domain_name"],
                        **({"vfio_module": vfio} if vfio else {}),
                        **({"in_tree": f"{intree.DIR}/{dev.module}.c"} if kernel.in_tree else {})})
    if any("vfio_module" in d for d in devices):
        name = VFIO_PROGRAM.rsplit("/", 1)[-1]
        (dest / name).write_bytes((Path(str(resources.files("msiforge.templates"))) / VFIO_PROGRAM).read_bytes())
        files[name] = VFIO_PROGRAM
    # In-tree drivers are the kernel's; the test modules and vfio handlers are built here.
    objs = " ".join(f"{m}.o" for m in tree_modules(devices, kernel.in_tree))
    (dest / "Kbuild").write_text(f"# SPDX-License-Identifier: GPL-2.0\n# Generated by msiforge {__version__}\n"
                                 f"obj-m += {objs}\n")
    (dest / "Makefile").write_text(
        "# SPDX-License-Identifier: GPL-2.0\n"
        f"# Generated by msiforge {__version__}: make KDIR=/path/to/kernel/build\n"
        "KDIR ?= /lib/modules/$(shell uname -r)/build\n\n"
        "all:\n\t$(MAKE) -C $(KDIR) M=$(CURDIR) W=1 modules\n\n"
        "clean:\n\t$(MAKE) -C $(KDIR) M=$(CURDIR) clean\n"
    )
    if dkms:
        digest = tree_digest(dest)
        modules = tree_modules(devices, kernel.in_tree)
        (dest / "dkms.conf").write_text(dkms_conf(env, board, kernel, devices, modules, digest))
        files["dkms.conf"] = DKMS_TEMPLATE
    guest = env.get_template(GUEST_TEMPLATE).render(
        version=__version__, board=board, devices=devices, kernel={"release": kernel.release},
        guest_iommu=arches.get(board.arch).guest_iommu, arch=arch_context(board),
        scenario_info=scenarios.by_name())
    (dest / "run.sh").write_text(guest)
    os.chmod(dest / "run.sh", 0o755)
    files["run.sh"] = GUEST_TEMPLATE
    manifest = {
        "plan": dataclasses.asdict(kplan),
        "msiforge": __version__,
        "board": board.name,
        "kernel": kernel.release,
        "features": kernel.features.to_json(),
        "devices": devices,
        "files": files,
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def tree_digest(tree: Path) -> str:
    """SHA256 of a rendered tree: every file's relative path and content (what a verdict was tested on)."""
    h = hashlib.sha256()
    for f in sorted(p for p in tree.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(tree)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def generate(board: Board, kernels: list[KernelTarget], out: Path, the_plan=None,
             dkms: bool = False) -> dict[str, Path]:
    """Render one tree per kernel under ``out/<release>``, replacing ``out`` atomically.

    ``the_plan`` (``plan.Plan``) is the run's plan, boot part included; it
    goes into each tree's manifest.  ``dkms``: each tree gets a dkms.conf.
    Returns release -> tree path.
    """
    from ..cache import usable_dir

    env = environment()
    out = out.resolve()
    usable_dir(out.parent, f"output directory {out}: its parent")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for k in kernels:
            render_tree(env, board, k, tmp / k.release, the_plan.kernel(k.release) if the_plan else None, dkms)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.rename(out, old / "x")
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {k.release: out / k.release for k in kernels}


def add_tree(board: Board, kernel: KernelTarget, out: Path, the_plan=None) -> Path:
    """Render one kernel's tree into ``out/<release>`` beside trees already there (a matrix adds
    each kernel's tree as that kernel arrives); the tree appears whole or not at all."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kernel.release}.", dir=out))
    try:
        render_tree(environment(), board, kernel, tmp / "tree",
                    the_plan.kernel(kernel.release) if the_plan else None, False)
        dest = out / kernel.release
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp / "tree", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
