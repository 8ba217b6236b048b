"""Bad places and bad specs: one line naming what and why, exit 2, nothing written, no traceback."""

from __future__ import annotations

import os

import pytest

from helpers import MSIFORGE, msiforge


def _one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_unwritable_output_directory_is_one_line(tmp_path):
    proc = msiforge("generate", "-o", "/proc/forbidden", "--kernel", "debian:6.12.117+deb12", cwd=tmp_path)
    assert proc.returncode == 2
    assert _one_line(proc).startswith("msiforge: error: output directory /proc/forbidden: its parent /proc: "
                                      "cannot be created or written (")


def test_unwritable_cache_is_one_line_and_writes_no_run_directory(tmp_path):
    import subprocess

    env = dict(os.environ, MSIFORGE_CACHE="/proc/nope")
    proc = subprocess.run([*MSIFORGE, "run", "--scenario", "deliver"], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert _one_line(proc).startswith("msiforge: error: cache directory (MSIFORGE_CACHE) /proc/nope: "
                                      "cannot be created or written (")
    assert not (tmp_path / "runs").exists()


def test_a_bad_snapshot_count_is_one_line_before_the_run_directory_exists(tmp_path):
    import subprocess

    env = dict(os.environ, MSIFORGE_SNAPSHOTS_KEPT="many")
    proc = subprocess.run([*MSIFORGE, "run", "--scenario", "deliver", "--kernel", "debian:6.12.117+deb12"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert _one_line(proc) == "msiforge: error: MSIFORGE_SNAPSHOTS_KEPT: 'many' is not a whole number of at least 1"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("spec,message", [
    ("source:5.10", "source:5.10: no Debian source package for that series (supported: source:6.1, source:6.12, source:7.2, source:7.3)"),
    ("tree:/nonexistent", "kernel spec 'tree:/nonexistent': /nonexistent is not a kernel source tree"),
])
def test_bad_kernel_specs_fail_before_the_run_directory_exists(tmp_path, spec, message):
    proc = msiforge("run", "--kernel", spec, cwd=tmp_path)
    assert proc.returncode == 2
    assert _one_line(proc) == f"msiforge: error: {message}"
    assert "run directory" not in proc.stdout + proc.stderr
    assert not (tmp_path / "runs").exists()


def test_bisect_good_newer_than_bad_is_one_line(tmp_path):
    proc = msiforge("bisect", "--scenario", "deliver", "--good", "debian:6.12.111", "--bad", "debian:6.1.0-55",
                    "--kernels", "debian:6.1.0-55,debian:6.12.111", "--out", str(tmp_path / "b"))
    assert proc.returncode == 2
    assert _one_line(proc) == ("msiforge: error: --good debian:6.12.111 (6.12.111+deb13-amd64) must be older "
                               "than --bad debian:6.1.0-55 (6.1.0-55-amd64)")
    assert not (tmp_path / "b").exists()


def test_scenario_help_lists_every_scenario():
    from msiforge.board import SCENARIOS

    for command in ("run", "bisect"):
        proc = msiforge(command, "--help")
        assert proc.returncode == 0
        text = " ".join(proc.stdout.split())  # argparse wraps lines
        missing = [s for s in SCENARIOS if s not in text]
        assert missing == [], f"{command} --help does not name {missing}"


def test_vng_refuses_a_7x_debian_kernel_before_writing_anything(tmp_path):
    """virtme-ng needs virtio/9p, which 7.x Debian kernels ship in linux-modules: one line, exit 2."""
    proc = msiforge("run", "--backend", "vng", "--kernel", "debian:7.3", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert _one_line(proc).startswith("msiforge: error: --backend vng: kernel debian:7.3 (7.3.4+deb13-amd64) "
                                      "has its virtio and 9p drivers in linux-modules")
    assert not (tmp_path / "run").exists()


def test_a_closed_pipe_is_not_a_traceback():
    """`msiforge kernels list --json | head -1`: the reader goes away; msiforge exits 1 without a traceback."""
    import subprocess

    from helpers import MSIFORGE

    proc = subprocess.Popen([*MSIFORGE, "kernels", "list", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before msiforge has read the index (about a second): its first write fails
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err
