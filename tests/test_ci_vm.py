"""msiforge in CI, for real: shards merged back, reproducer bundles rerun elsewhere, dkms builds.

The kernels are the ones the bisect tests already fetch (shared through the cache).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers import msiforge

#: Four kernels from two suites and two series (the bisect tests' ladder: already in the cache).
MATRIX = ["debian:6.12.107+deb12", "debian:6.12.117+deb12", "debian:6.12.118", "debian:7.3.4"]
SCENARIOS = ["--scenario", "deliver", "--scenario", "mask"]


def _kcidb(path: Path) -> dict:
    from kcidb_io.schema import LATEST

    data = json.loads(path.read_text())
    LATEST.validate(data)
    return data


def _verdicts(run: Path) -> list[tuple]:
    """What must agree between runs: per kernel its verdict, each scenario's, and the interrupts counted."""
    res = json.loads((run / "results.json").read_text())
    return [(k["board"], k["release"], k["verdict"],
             tuple((s["name"], s["status"], tuple(sorted(s["interrupts"].items()))) for s in k["scenarios"]))
            for k in res["kernels"]]


@pytest.mark.vm
@pytest.mark.build
def test_a_four_kernel_matrix_in_two_shards_merges_to_the_same_result_as_run_whole(tmp_path):
    spec = ",".join(MATRIX)
    whole = msiforge("run", "--kernel", spec, *SCENARIOS, "--jobs", "1", "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stdout + whole.stderr
    for k in (1, 2):
        shard = msiforge("run", "--kernel", spec, *SCENARIOS, "--jobs", "1", "--shard", f"{k}/2",
                         "--out", str(tmp_path / f"s{k}"))
        assert shard.returncode == 0, shard.stdout + shard.stderr
        assert f"shard {k}/2" in shard.stdout
        assert len(json.loads((tmp_path / f"s{k}" / "results.json").read_text())["kernels"]) == 2
    merged = msiforge("merge", str(tmp_path / "s2"), str(tmp_path / "s1"), "--out", str(tmp_path / "m"))
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert _verdicts(tmp_path / "m") == _verdicts(tmp_path / "whole")
    rows = _verdicts(tmp_path / "whole")
    assert [r[1] for r in rows] == ["6.12.107+deb12-amd64", "6.12.117+deb12-amd64", "6.12.118+deb13-amd64",
                                    "7.3.4+deb13-amd64"]
    # The guest counted every interrupt deliver sent: 32 + 8 slots x 3 fires on this board.
    assert all(dict(r[3][0][2]) == {"ims0": 96, "pmsi0": 24} for r in rows), rows
    for run in ("whole", "s1", "s2", "m"):
        data = _kcidb(tmp_path / run / "kcidb.json")
        assert {t["status"] for t in data["tests"]} == {"PASS"}
    merged_k = _kcidb(tmp_path / "m" / "kcidb.json")
    assert len(merged_k["builds"]) == 4 and len(merged_k["checkouts"]) == 4
    deliver = [t for t in merged_k["tests"] if t["path"] == "msiforge.deliver"]
    assert [t["number"] for t in deliver] == [{"value": 120, "unit": "interrupts"}] * 4
    assert "results.ktap" in merged.stdout and (tmp_path / "m" / "report.html").is_file()


@pytest.mark.vm
@pytest.mark.build
def test_a_reproducer_bundle_of_an_oops_reproduces_it_from_a_fresh_directory(tmp_path):
    run = tmp_path / "run"
    proc = msiforge("run", "--kernel", "debian:6.12.117+deb12", "--scenario", "deliver", "--guest-fault", "oops",
                    "--out", str(run))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert json.loads((run / "results.json").read_text())["kernels"][0]["verdict"] == "oops"
    bundle = tmp_path / "oops.tar.gz"
    proc = msiforge("repro", str(run), "-o", str(bundle))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with tarfile.open(bundle) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers()}
    # Unpacked as a user would (Debian 12's Python 3.11.2 has no tarfile extraction filters).
    fresh = tmp_path / "elsewhere"
    fresh.mkdir()
    subprocess.run(["tar", "-xzf", str(bundle), "-C", str(fresh)], check=True)
    assert {"board.yaml", "kernel.json", "config", "cmdline", "console.log", "expected.json", "repro.sh",
            "gen/run.sh", "gen/msiforge_ims0.c", "gen/msiforge_ims0_test.c"} <= names
    top = next(fresh.iterdir())
    facts = json.loads((top / "kernel.json").read_text())
    assert facts["exact_spec"] == "debian:6.12.117+deb12" and facts["release"] == "6.12.117+deb12-amd64"
    assert facts["packages_sha256"] and all(len(v) == 64 for v in facts["packages_sha256"].values())
    assert "CONFIG_PCI_MSI=y" in (top / "config").read_text()
    # Another directory, nothing of the run but the bundle: the same verdict again.
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(tmp_path),
           "MSIFORGE": str(Path(sys.executable).parent / "msiforge")}
    proc = subprocess.run(["sh", "./repro.sh"], cwd=top, capture_output=True, text=True, timeout=900,
                          env={**env, "MSIFORGE_CACHE": _cache()})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The oops is the kernel's verdict; deliver itself passed, both times.
    assert "repro: reproduced: 6.12.117+deb12-amd64 oops (deliver pass)" in proc.stdout
    # A rerun with another verdict says so, exit 1.
    expected = json.loads((top / "expected.json").read_text())
    expected["verdict"] = "pass"
    (top / "other.json").write_text(json.dumps(expected))
    proc = msiforge("repro", str(top / "rerun"), "--check", str(top / "other.json"))
    assert proc.returncode == 1 and "NOT reproduced" in proc.stdout


def _cache() -> str:
    from msiforge.cache import cache_root

    return str(cache_root())


def _dkms(*args: str, tree: Path) -> subprocess.CompletedProcess:
    dkms = shutil.which("dkms")
    assert dkms, "dkms: make test's set-up installs it (hostprogs tests_only)"
    for d in ("src", "dkms", "inst"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    where = ["--sourcetree", str(tree / "src"), "--dkmstree", str(tree / "dkms"), "--installtree", str(tree / "inst")]
    return subprocess.run([dkms, *args, *where], capture_output=True, text=True, timeout=900)


def _dkms_conf(tree: Path) -> dict[str, str]:
    out = {}
    for line in tree.joinpath("dkms.conf").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v.strip('"')
    return out


@pytest.mark.build
def test_dkms_builds_the_generated_tree_against_debian_6_12_headers(tmp_path):
    """The real dkms (Debian's), its trees kept in tmp_path: nothing under /var/lib/dkms or /lib/modules."""
    from msiforge import kernels

    spec = "debian:6.12.117+deb12"  # a debian:6.12 kernel built with the host's gcc-12, as dkms runs here
    proc = msiforge("generate", "--dkms", "--kernel", spec, "-o", str(tmp_path / "gen"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    k = kernels.fetch(spec)
    tree = tmp_path / "gen" / k.release
    conf = _dkms_conf(tree)
    name, version = conf["PACKAGE_NAME"], conf["PACKAGE_VERSION"]
    assert name == "msiforge-q35-ims" and "BUILD_EXCLUSIVE_KERNEL" not in conf
    assert sorted(v for key, v in conf.items() if key.startswith("BUILT_MODULE_NAME")) == [
        "msiforge_ims0", "msiforge_ims0_test", "msiforge_pmsi0", "msiforge_pmsi0_test"]
    (tmp_path / "dk" / "src").mkdir(parents=True)
    shutil.copytree(tree, tmp_path / "dk" / "src" / f"{name}-{version}")
    add = _dkms("add", "-m", name, "-v", version, tree=tmp_path / "dk")
    assert add.returncode == 0, add.stdout + add.stderr
    build = _dkms("build", "-m", name, "-v", version, "-k", k.release, "--kernelsourcedir", str(k.build_dir),
                  tree=tmp_path / "dk")
    assert build.returncode == 0, build.stdout + build.stderr
    built = sorted(p.name for p in (tmp_path / "dk" / "dkms" / name / version / k.release).rglob("*.ko"))
    assert built == ["msiforge_ims0.ko", "msiforge_ims0_test.ko", "msiforge_pmsi0.ko", "msiforge_pmsi0_test.ko"]
    log = next((tmp_path / "dk" / "dkms" / name / version / k.release).rglob("make.log")).read_text()
    assert " W=1 modules" in build.stdout and "CC [M]" in log and "warning:" not in log


@pytest.mark.build
@pytest.mark.source_kernels("source:6.12+pci-ims")
def test_dkms_builds_a_patched_kernels_tree_for_that_kernel_only(tmp_path):
    import re

    from msiforge import kernels

    proc = msiforge("generate", "--dkms", "--kernel", "source:6.12+pci-ims", "-o", str(tmp_path / "gen"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tree = next((tmp_path / "gen").iterdir())
    conf = _dkms_conf(tree)
    release = tree.name  # 6.12.117-msiforge-<hash of the series>
    assert "-msiforge-" in release and conf["BUILD_EXCLUSIVE_KERNEL"] == "^" + release.replace(".", "\\.") + "$"
    assert re.fullmatch(conf["BUILD_EXCLUSIVE_KERNEL"], release)
    assert "ims0: patched (pci-ims)" in tree.joinpath("dkms.conf").read_text()
    name, version = conf["PACKAGE_NAME"], conf["PACKAGE_VERSION"]
    (tmp_path / "dk" / "src").mkdir(parents=True)
    shutil.copytree(tree, tmp_path / "dk" / "src" / f"{name}-{version}")
    assert _dkms("add", "-m", name, "-v", version, tree=tmp_path / "dk").returncode == 0
    other = kernels.fetch("debian:6.12.117+deb12")
    build = _dkms("build", "-m", name, "-v", version, "-k", other.release, "--kernelsourcedir",
                  str(other.build_dir), tree=tmp_path / "dk")
    assert build.returncode != 0 and "BUILD_EXCLUSIVE directive which does not match" in build.stdout + build.stderr
