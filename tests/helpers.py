"""Helpers shared by the tests: the CLI as a user runs it, board files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
MSIFORGE = [sys.executable, "-m", "msiforge.cli"]
#: The two Debian series every generated driver must build on.
KERNELS = ["debian:6.1.0-56", "debian:6.12.117+deb12"]


def msiforge(*args: str, cwd: Path | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the msiforge CLI as a user would, capturing its output."""
    return subprocess.run([*MSIFORGE, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          check=False)


def needs_kernel(spec: str, arch: str = "x86_64", slow: bool = False) -> list:
    """The marks of a test (or param) that needs source kernel ``spec`` built for ``arch`` (conftest.py
    builds it in the background and runs the test last); ``slow``: make test-all only."""
    import pytest

    return [*([pytest.mark.slow] if slow else []), pytest.mark.source_kernels(f"{spec}@{arch}")]


def default_board() -> dict:
    return yaml.safe_load((REPO / "boards" / "q35-ims.yaml").read_text())


def write_board(tmp_path: Path, data: dict, name: str = "board.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
