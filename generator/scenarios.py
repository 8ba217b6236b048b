"""The guest scenarios: one template file each, discovered and described by its header.

Every ``templates/guest/scenarios/<name>.sh.j2`` defines the shell function
``scenario_<name>`` (dashes become underscores) that the guest script
(``templates/guest/run.sh.j2``) runs once per device, and starts with a header
in a Jinja comment, so nothing of it reaches the rendered script::

    {#
    # scenario: affinity
    # order: 40
    # cpus: 2
    # default: yes
    # summary: moving a vector to CPU1: the store follows, interrupts land on CPU1
    #}

One ``# key: value`` line per field, exactly one space after ``#`` and after
the colon, each field at most once, nothing else between ``{#`` and ``#}``:

``scenario`` (required)
    the scenario's name, the file's name without ``.sh.j2``: ``[a-z][a-z0-9-]*``
``order`` (required)
    where it runs among the scenarios of a board: an integer 1..999, unique
``cpus`` (required)
    how many CPUs it needs: 1, or 2 for one that moves vectors between CPU0 and CPU1
``default`` (required)
    ``yes`` if a board that names no scenarios runs it, else ``no``
``summary`` (required)
    one line: what it checks
``flavour`` (optional)
    the kernel flavour it is written for: ``rt`` (PREEMPT_RT)
``devices`` (optional)
    the device storages it is for, space-separated (e.g. ``platform-msi``):
    the guest skips the board's other devices, and a board needs one of them
``arches`` (optional)
    the board arches it can run on, space-separated (e.g. ``arm64``)

A file that breaks any of this is a :class:`ScenarioError` naming the file
and the field.  Adding a scenario is adding a file: the board's validation,
``msiforge run --scenario`` and the command-line help take the list from here.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from ..errors import FieldError

#: Where the scenario files live, in the msiforge.templates package (and in Jinja template names).
PACKAGE = "msiforge.templates"
DIRECTORY = "guest/scenarios"
SUFFIX = ".sh.j2"

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_ORDER_RE = re.compile(r"^[1-9][0-9]{0,2}$")
_FIELD_RE = re.compile(r"^# (?P<key>[a-z]+): (?P<value>\S.*)$")
_REQUIRED = ("scenario", "order", "cpus", "default", "summary")
_OPTIONAL = ("flavour", "devices", "arches")
_FLAVOURS = ("rt",)
#: The device storages (a board device's storage choices, and what a scenario may be for).
STORAGES = ("ims", "platform-msi", "pci-msi")
_MAX_SUMMARY = 200


class ScenarioError(FieldError):
    """A scenario file msiforge cannot use: names the file, the field and the reason."""


@dataclass(frozen=True)
class Scenario:
    """One guest scenario, as its file's header declares it."""

    name: str
    order: int
    cpus: int
    default: bool
    summary: str
    flavour: str | None
    path: str  # the file, for messages: templates/guest/scenarios/<name>.sh.j2
    #: The device storages it is for (None: every device), and the board arches (None: all).
    devices: tuple[str, ...] | None = None
    arches: tuple[str, ...] | None = None

    def applies_to(self, storages) -> bool:
        """Whether a board with devices of these storages has one the scenario is for."""
        return self.devices is None or any(s in self.devices for s in storages)

    @property
    def function(self) -> str:
        """The shell function the guest script calls for this scenario."""
        return "scenario_" + self.name.replace("-", "_")

    @property
    def template(self) -> str:
        """The file's Jinja template name (what run.sh.j2 includes)."""
        return f"{DIRECTORY}/{self.name}{SUFFIX}"


def parse(text: str, path: str) -> Scenario:
    """Parse one scenario file's text; ``path`` names it in errors and gives the expected name."""
    lines = text.split("\n")
    if lines[0] != "{#":
        raise ScenarioError(path, "<header>", "the file must start with a header: a line '{#', "
                            "'# key: value' lines, a line '#}'")
    try:
        end = lines.index("#}")
    except ValueError:
        raise ScenarioError(path, "<header>", "no line '#}' ends the header") from None
    fields: dict[str, str] = {}
    for n, line in enumerate(lines[1:end], start=2):
        m = _FIELD_RE.match(line)
        if m is None:
            raise ScenarioError(path, f"<header line {n}>", f"{line!r} is not '# key: value'")
        key, value = m["key"], m["value"].rstrip()
        if key not in _REQUIRED + _OPTIONAL:
            raise ScenarioError(path, key, f"unknown field (known: {', '.join(_REQUIRED + _OPTIONAL)})")
        if key in fields:
            raise ScenarioError(path, key, f"given twice (header line {n})")
        fields[key] = value
    for key in _REQUIRED:
        if key not in fields:
            raise ScenarioError(path, key, "missing")

    stem = path.rsplit("/", 1)[-1]
    stem = stem[:-len(SUFFIX)] if stem.endswith(SUFFIX) else stem
    name = fields["scenario"]
    if not NAME_RE.match(name):
        raise ScenarioError(path, "scenario", f"{name!r} is not a name matching [a-z][a-z0-9-]{{0,31}}")
    if name != stem:
        raise ScenarioError(path, "scenario", f"{name!r} is not the file's name ({stem!r})")
    if not _ORDER_RE.match(fields["order"]):
        raise ScenarioError(path, "order", f"{fields['order']!r} is not an integer in 1..999")
    if fields["cpus"] not in ("1", "2"):
        raise ScenarioError(path, "cpus", f"{fields['cpus']!r} is not 1 or 2")
    if fields["default"] not in ("yes", "no"):
        raise ScenarioError(path, "default", f"{fields['default']!r} is not yes or no")
    summary = fields["summary"]
    if len(summary) > _MAX_SUMMARY or not summary.isprintable():
        raise ScenarioError(path, "summary", f"must be one printable line of at most {_MAX_SUMMARY} characters")
    flavour = fields.get("flavour")
    if flavour is not None and flavour not in _FLAVOURS:
        raise ScenarioError(path, "flavour", f"{flavour!r} is not one of {', '.join(_FLAVOURS)}")

    devices = None
    if "devices" in fields:
        devices = tuple(fields["devices"].split())
        for d in devices:
            if d not in STORAGES:
                raise ScenarioError(path, "devices", f"{d!r} is not a device storage ({', '.join(STORAGES)})")
    arches = tuple(fields["arches"].split()) if "arches" in fields else None
    scenario = Scenario(name=name, order=int(fields["order"]), cpus=int(fields["cpus"]),
                        default=fields["default"] == "yes", summary=summary, flavour=flavour, path=path,
                        devices=devices, arches=arches)
    body = "\n".join(lines[end + 1:])
    defined = re.findall(r"^(scenario_\w+)\(\) \{", body, re.M)
    if defined != [scenario.function]:
        found = ", ".join(defined) or "none"
        raise ScenarioError(path, "<body>", f"must define exactly one scenario function, "
                            f"{scenario.function}() {{ (found: {found})")
    return scenario


def discover_in(directory: Traversable, display: str) -> tuple[Scenario, ...]:
    """Every ``*.sh.j2`` file of ``directory`` (shown as ``display`` in errors), in run order."""
    found = []
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(SUFFIX):
            continue
        path = f"{display}/{entry.name}"
        try:
            text = entry.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ScenarioError(path, "<file>", f"not UTF-8 text (byte {exc.start})") from None
        found.append(parse(text, path))
    if not found:
        raise ScenarioError(display, "<directory>", f"no scenario files (*{SUFFIX})")
    by_order: dict[int, Scenario] = {}
    for s in found:
        if s.order in by_order:
            raise ScenarioError(s.path, "order", f"{s.order} is also the order of {by_order[s.order].path}")
        by_order[s.order] = s
    return tuple(sorted(found, key=lambda s: s.order))


@functools.cache
def discover() -> tuple[Scenario, ...]:
    """The scenarios msiforge ships, in the order they run in the guest."""
    directory = resources.files(PACKAGE).joinpath(*DIRECTORY.split("/"))
    return discover_in(directory, f"templates/{DIRECTORY}")


def by_name() -> dict[str, Scenario]:
    return {s.name: s for s in discover()}


def names() -> tuple[str, ...]:
    """Every scenario a board may list, in run order."""
    return tuple(s.name for s in discover())


def two_cpu() -> tuple[str, ...]:
    """The scenarios that move vectors between CPU0 and CPU1 (need cpus >= 2)."""
    return tuple(s.name for s in discover() if s.cpus >= 2)


def defaults() -> tuple[str, ...]:
    """What a board runs when it names no scenarios."""
    return tuple(s.name for s in discover() if s.default)


def summaries() -> dict[str, str]:
    """Scenario name -> its one-line summary, in run order."""
    return {s.name: s.summary for s in discover()}
