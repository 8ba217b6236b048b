"""The distribution: one import name (msiforge), with its templates, boards and kernel config fragments."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from helpers import REPO


def test_wheel_holds_everything_under_msiforge(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info into the source tree.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "runs", "*.egg-info",
                                                            "__pycache__", ".pytest_cache", ".hypothesis"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "-w", str(tmp_path), str(src)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    wheel, = tmp_path.glob("msiforge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"msiforge"}  # no bare top-level "generator", "vmtests", ...
    for needed in ["msiforge/kconfigs/x86_64-q35.config", "msiforge/boards/q35-ims.yaml",
                   "msiforge/templates/module/driver/base.c.j2",
                   "msiforge/templates/module/driver/backends/pci-ims.c.j2",
                   "msiforge/templates/module/driver/interface.h.j2", "msiforge/templates/module/harness/test.c.j2",
                   "msiforge/templates/patches/in-tree/commit.txt.j2",
                   "msiforge/templates/module/driver/arch/arm64.c.j2", "msiforge/templates/guest/run.sh.j2",
                   "msiforge/templates/guest/scenarios/deliver.sh.j2",
                   "msiforge/templates/patches/pci-ims/series.yaml", "msiforge/kmod/fault/msiforge_fault.c",
                   "msiforge/templates/guest/vfio/msiforge-vfio.c", "msiforge/templates/module/vfio/handler.c.j2",
                   "msiforge/templates/patches/vfio-platform-msi/series.yaml",
                   "msiforge/generator/render.py", "msiforge/vmtests/qemu.py"]:
        assert needed in names, needed
