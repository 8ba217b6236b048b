"""Board configs: load, validate and describe a board YAML file.

A board names the machine (QEMU model, CPUs, memory, IOMMU), the kernels to
test and the devices with device-specific message storage.  Validation is
strict: every string that later reaches C, Kbuild, a shell, QEMU or a path is
checked against a pattern here, and any problem raises ``BoardError`` whose
message names the file, the field and the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import arches
from .errors import BoardError, SpecError
from .generator import scenarios as _scenarios
from .kspec import KernelSpec, parse_spec

DEFAULT_BOARD = "q35-ims"

# The scenarios are files (templates/guest/scenarios/*.sh.j2); their headers say all of this.
#: Scenarios a board may list, in the order they run in the guest.
SCENARIOS = _scenarios.names()
#: Scenarios that move vectors between CPU0 and CPU1.
TWO_CPU_SCENARIOS = _scenarios.two_cpu()
#: What a board runs when it names no scenarios.
DEFAULT_SCENARIOS = _scenarios.defaults()

#: Board arches and the QEMU machines each may use (the first is the default): msiforge/arches.
ARCH_MACHINES = {a.name: a.machines for a in arches.all_arches().values()}
ARCHES = tuple(ARCH_MACHINES)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
DEVICE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
MEMORY_RE = re.compile(r"^(?P<num>[1-9][0-9]{0,5})(?P<unit>[MG])$")

MAX_SLOTS = 2048
MAX_DEVICES = 16
MAX_BOARD_BYTES = 1 << 20
#: First PCI slot used for the board's edu instances (device k sits at 0x10 + k).
FIRST_PCI_SLOT = 0x10

_TOP_KEYS = {
    "name", "description", "arch", "machine", "cpus", "memory", "accel", "iommu",
    "kernels", "devices", "scenarios", "fires", "boot_timeout", "scenario_timeout", "tcg_clock",
    "pci_msi_layout",
}
_DEVICE_KEYS = {"name", "emulation", "storage", "slots", "mask", "update", "groups", "wired_irqs"}
#: Wired interrupts a platform device may list (its device tree node's "interrupts").
MAX_WIRED_IRQS = 8


@dataclass(frozen=True)
class Device:
    """One device with device-specific message storage, backed by one edu instance."""

    name: str
    emulation: str
    storage: str
    slots: int
    mask: str
    update: str
    groups: tuple[int, ...]
    index: int
    #: Wired interrupts of a platform-msi device's device tree node (enumerated, never fired).
    wired_irqs: int = 0

    @property
    def pci_slot(self) -> int:
        """PCI slot (device number on bus 0) of this device's edu instance."""
        return FIRST_PCI_SLOT + self.index

    @property
    def module(self) -> str:
        """Name of the generated kernel module."""
        return f"msiforge_{self.name}"


@dataclass(frozen=True)
class Board:
    """A validated board config."""

    path: str
    name: str
    description: str
    arch: str
    machine: str
    cpus: int
    memory_mib: int
    accel: str
    iommu: str
    kernels: tuple[KernelSpec, ...]
    devices: tuple[Device, ...]
    scenarios: tuple[str, ...]
    fires: int
    boot_timeout: int
    scenario_timeout: int
    tcg_clock: str = "auto"
    pci_msi_layout: str = "per-device"
    raw: dict = field(repr=False, compare=False, default_factory=dict)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1}, column {mark.column + 1})", mark
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path, display: str) -> Any:
    """Read a YAML document with clean errors for missing, unreadable or malformed files."""
    if not path.exists():
        raise BoardError(display, "<file>", "no such file")
    if path.is_dir():
        raise BoardError(display, "<file>", "is a directory, expected a YAML file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BoardError(display, "<file>", f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_BOARD_BYTES:
        raise BoardError(display, "<file>", f"larger than {MAX_BOARD_BYTES} bytes")
    if b"\0" in data:
        raise BoardError(display, "<file>", "binary file (contains NUL bytes), expected YAML text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BoardError(display, "<file>", f"not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - strict SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = (exc.problem or exc.context or "invalid YAML").split(" (line ")[0]
        raise BoardError(display, "<yaml>", f"{problem} at {where}") from None
    except yaml.YAMLError as exc:
        raise BoardError(display, "<yaml>", str(exc).replace("\n", " ")) from None


class _Checker:
    """Field-by-field validation helpers that raise BoardError with the field path."""

    def __init__(self, display: str):
        self.display = display

    def fail(self, fieldname: str, reason: str) -> None:
        raise BoardError(self.display, fieldname, reason)

    def mapping(self, value: Any, fieldname: str, allowed: set[str]) -> dict:
        where = fieldname or "<document>"  # the top level has no field name of its own
        if not isinstance(value, dict):
            self.fail(where, f"must be a mapping, got {_typename(value)}")
        for key in value:
            if not isinstance(key, str):
                self.fail(where, f"keys must be strings, got {key!r}")
            if key not in allowed:
                self.fail(_join(fieldname, key), f"unknown field (known: {', '.join(sorted(allowed))})")
        return value

    def string(self, value: Any, fieldname: str, pattern: re.Pattern | None = None, what: str = "") -> str:
        if not isinstance(value, str):
            self.fail(fieldname, f"must be a string, got {_typename(value)}")
        if pattern is not None and not pattern.match(value):
            self.fail(fieldname, f"{value!r} is not {what or 'valid'}")
        return value

    def choice(self, value: Any, fieldname: str, choices: tuple[str, ...]) -> str:
        if not isinstance(value, str):
            self.fail(fieldname, f"must be one of {', '.join(choices)}, got {_typename(value)}")
        if value not in choices:
            self.fail(fieldname, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def integer(self, value: Any, fieldname: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(fieldname, f"must be an integer in {lo}..{hi}, got {_typename(value)}")
        if not lo <= value <= hi:
            self.fail(fieldname, f"must be in {lo}..{hi}, got {value}")
        return value

    def sequence(self, value: Any, fieldname: str, lo: int, hi: int) -> list:
        if not isinstance(value, list):
            self.fail(fieldname, f"must be a list, got {_typename(value)}")
        if not lo <= len(value) <= hi:
            self.fail(fieldname, f"must have {lo}..{hi} entries, got {len(value)}")
        return value


def _typename(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _memory_mib(check: _Checker, value: Any) -> int:
    text = check.string(value, "memory", MEMORY_RE, "a size like 512M or 1G")
    m = MEMORY_RE.match(text)
    assert m is not None
    mib = int(m["num"]) * (1024 if m["unit"] == "G" else 1)
    if not 256 <= mib <= 16384:
        check.fail("memory", f"must be between 256M and 16G, got {text}")
    return mib


def scenario_mismatch(name: str, devices, arch: str) -> str | None:
    """Why scenario ``name`` cannot run on a board of ``arch`` with ``devices`` (its header's
    ``arches`` and ``devices``), or None."""
    s = _scenarios.by_name()[name]
    if s.arches is not None and arch not in s.arches:
        return f"'{name}' runs on {' or '.join(s.arches)} boards, not {arch}"
    if s.applies_to(d.storage for d in devices):
        return None
    return f"'{name}' is for {' or '.join(s.devices or ())} devices; the board has none"


def _device(check: _Checker, value: Any, index: int) -> Device:
    where = f"devices[{index}]"
    check.mapping(value, where, _DEVICE_KEYS)
    if "name" not in value:
        check.fail(f"{where}.name", "missing (a C identifier like ims0)")
    name = check.string(value["name"], f"{where}.name", DEVICE_NAME_RE,
                        "a C identifier matching [a-z][a-z0-9_]{0,15}")
    emulation = check.choice(value.get("emulation", "edu"), f"{where}.emulation", ("edu",))
    storage = check.choice(value.get("storage", "ims"), f"{where}.storage", _scenarios.STORAGES)
    default_slots = 1 if storage == "pci-msi" else 32
    slots = check.integer(value.get("slots", default_slots), f"{where}.slots", 1, MAX_SLOTS)
    if storage == "pci-msi" and slots != 1:
        check.fail(f"{where}.slots", "storage pci-msi uses the edu's MSI capability, which holds exactly 1 message")
    mask = check.choice(value.get("mask", "source"), f"{where}.mask", ("source", "parent", "none"))
    update = check.choice(value.get("update", "direct"), f"{where}.update", ("direct", "queued"))
    if storage == "pci-msi" and update == "queued":
        check.fail(f"{where}.update", "storage pci-msi is written by the PCI/MSI core, it cannot be queued")
    groups_raw = check.sequence(value.get("groups", [slots]), f"{where}.groups", 1, MAX_SLOTS)
    groups = tuple(check.integer(g, f"{where}.groups[{i}]", 1, MAX_SLOTS) for i, g in enumerate(groups_raw))
    if sum(groups) > slots:
        check.fail(f"{where}.groups", f"group sizes add up to {sum(groups)}, more than the {slots} slots")
    wired = check.integer(value.get("wired_irqs", 0), f"{where}.wired_irqs", 0, MAX_WIRED_IRQS)
    if wired and storage != "platform-msi":
        check.fail(f"{where}.wired_irqs", "only a platform-msi device is a platform device, with wired "
                   f"interrupts in the device tree (this one is {storage})")
    return Device(name=name, emulation=emulation, storage=storage, slots=slots, mask=mask,
                  update=update, groups=groups, index=index, wired_irqs=wired)


def validate(data: Any, display: str) -> Board:
    """Validate a parsed YAML document as a board; ``display`` names the file in errors."""
    check = _Checker(display)
    if data is None:
        check.fail("<file>", "empty board file")
    if not isinstance(data, dict):
        check.fail("<board>", f"must be a mapping of fields (name, devices, ...), got {_typename(data)}")
    check.mapping(data, "", _TOP_KEYS)
    if "name" not in data:
        check.fail("name", "missing")
    name = check.string(data["name"], "name", NAME_RE, "a board name matching [a-z0-9][a-z0-9-]{0,31}")
    description = check.string(data.get("description", ""), "description")
    if len(description) > 4096:
        check.fail("description", "longer than 4096 characters")
    arch = check.choice(data.get("arch", "x86_64"), "arch", ARCHES)
    machine = check.choice(data.get("machine", ARCH_MACHINES[arch][0]), "machine", ARCH_MACHINES[arch])
    cpus = check.integer(data.get("cpus", 2), "cpus", 1, 8)
    memory_mib = _memory_mib(check, data.get("memory", "1G"))
    accel = check.choice(data.get("accel", "auto"), "accel", ("auto", "kvm", "tcg"))
    iommu = check.choice(data.get("iommu", "intel-ir" if arch == "x86_64" else "none"), "iommu",
                         ("none", "intel-ir"))
    if iommu == "intel-ir" and machine != "q35":
        check.fail("iommu", "intel-ir needs machine: q35")
    if "kvm" not in arches.get(arch).accels:
        # The host is x86_64: another arch's guest is emulated (TCG); "auto" can only mean that.
        if accel == "kvm":
            check.fail("accel", f"an {arch} guest cannot run under KVM on this x86_64 host (use tcg or auto)")
        accel = "tcg"

    kernels_raw = check.sequence(data.get("kernels", ["debian:6.12"]), "kernels", 1, 64)
    kernels = []
    for i, text in enumerate(kernels_raw):
        try:
            kernels.append(parse_spec(text))
        except SpecError as exc:
            check.fail(f"kernels[{i}]", str(exc))

    if "devices" not in data:
        check.fail("devices", "missing (at least one device)")
    devices_raw = check.sequence(data["devices"], "devices", 1, MAX_DEVICES)
    devices = tuple(_device(check, d, i) for i, d in enumerate(devices_raw))
    rec = arches.get(arch)
    for i, dev in enumerate(devices):
        if dev.storage not in rec.storages:
            check.fail(f"devices[{i}].storage", f"{dev.storage} cannot work on arch {arch}: {rec.storage_refusal}")
        if dev.wired_irqs and not rec.device_tree:
            check.fail(f"devices[{i}].wired_irqs", f"arch {arch} boards have no device tree of msiforge's "
                       "to describe wired interrupts in")
    seen: set[str] = set()
    for i, dev in enumerate(devices):
        if dev.name in seen:
            check.fail(f"devices[{i}].name", f"duplicate device name {dev.name!r}")
        seen.add(dev.name)

    scen_raw = check.sequence(data.get("scenarios", list(DEFAULT_SCENARIOS)), "scenarios", 1, len(SCENARIOS))
    scenarios = []
    for i, s in enumerate(scen_raw):
        s = check.choice(s, f"scenarios[{i}]", SCENARIOS)
        if s in scenarios:
            check.fail(f"scenarios[{i}]", f"duplicate scenario {s!r}")
        scenarios.append(s)
    for needs_two in TWO_CPU_SCENARIOS:
        if needs_two in scenarios and cpus < 2:
            check.fail("scenarios", f"'{needs_two}' moves vectors between CPU0 and CPU1 and needs cpus >= 2")
    for i, s in enumerate(scen_raw):
        why = scenario_mismatch(s, devices, arch)
        if why:
            check.fail(f"scenarios[{i}]", why)

    fires = check.integer(data.get("fires", 3), "fires", 1, 1000)
    boot_timeout = check.integer(data.get("boot_timeout", 120), "boot_timeout", 5, 3600)
    scenario_timeout = check.integer(data.get("scenario_timeout", 900), "scenario_timeout", 5, 36000)
    tcg_clock = check.choice(data.get("tcg_clock", "auto"), "tcg_clock", ("auto", "realtime"))
    layout = check.choice(data.get("pci_msi_layout", "per-device"), "pci_msi_layout", ("global", "per-device"))

    return Board(path=display, name=name, description=description, arch=arch, machine=machine, cpus=cpus,
                 memory_mib=memory_mib, accel=accel, iommu=iommu, kernels=tuple(kernels), devices=devices,
                 scenarios=tuple(s for s in SCENARIOS if s in scenarios), fires=fires,
                 boot_timeout=boot_timeout, scenario_timeout=scenario_timeout, tcg_clock=tcg_clock,
                 pci_msi_layout=layout, raw=data)


def shipped_board_file(name: str) -> Path | None:
    """The YAML file of a board shipped with msiforge, or None when there is no such board."""
    shipped = resources.files("msiforge.boards").joinpath(f"{name}.yaml")
    return Path(str(shipped)) if shipped.is_file() else None


def board_file(board: Board) -> Path | None:
    """The file a board was read from: the one given, or the built-in board's."""
    path = Path(board.path)
    return path if path.is_file() else shipped_board_file(board.name)


def board_source(ref: str | None) -> Path:
    """The file a board reference names: a path, or a built-in board's file (``None``: ``q35-ims``)."""
    ref = ref or DEFAULT_BOARD
    path = Path(ref)
    if not path.exists() and NAME_RE.match(ref) and (shipped := shipped_board_file(ref)) is not None:
        return shipped
    return path


def load_board(ref: str | None) -> Board:
    """Load a board by path, or by the name of a board shipped with msiforge.

    ``None`` means the default board ``q35-ims``.
    """
    ref = ref or DEFAULT_BOARD
    path = board_source(ref)
    display = ref if path == Path(ref) else f"{ref} (built-in board)"
    return validate(read_yaml(path, display), display)
