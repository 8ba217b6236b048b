"""Per-architecture data for the driver template.

Architecture differences live here as data, not as copies of the template
or tests of the architecture's name: each arch's record (msiforge/arches/<arch>.py)
holds its row of values and flags and names its macro file,
templates/module/driver/arch/<arch>.c.j2 (the C code that differs).  ``arch_context`` adds what
follows from the board.
"""

from .. import arches

#: Board arch -> the driver template's data for it (each arch's record, msiforge/arches, holds it).
ARCHES: dict[str, dict] = {name: rec.c for name, rec in arches.all_arches().items()}


def its_events(slots: int) -> int:
    """ITS events for one DeviceID shared by ``slots`` slots: a power of two, at least 32."""
    events = 32
    for _ in range(16):
        if events < slots:
            events *= 2
    return events


def arch_context(board) -> dict:
    """The template's ``arch``: the board arch's row, plus what follows from the board.

    With an ITS (arm64), every device of the board that stores messages sends
    them from the one DeviceID: ``its_slots`` counts their slots and
    ``its_events`` sizes the ITS device for them.
    """
    arch = dict(ARCHES[board.arch])
    if "its_device_id" in arch:
        arch["its_slots"] = sum(d.slots for d in board.devices if d.storage != "pci-msi")
        arch["its_events"] = its_events(arch["its_slots"])
    return arch
