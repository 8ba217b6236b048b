"""msiforge's own apt state per Debian suite: the host's apt is never touched; expired indexes warn."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from helpers import MSIFORGE, msiforge
from msiforge import suites


def _snapshot(top: Path) -> dict[str, tuple]:
    """Every file under ``top``: size, mtime and (for small files) content hash."""
    out = {}
    for p in sorted(top.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if st.st_size < 1 << 20 else ""
            out[str(p)] = (st.st_size, st.st_mtime_ns, digest)
    return out


def test_host_apt_untouched_by_updates_lists_and_fetches():
    """/etc/apt and the host's lists are the same after refreshing every suite and listing the kernels."""
    before = {top: _snapshot(Path(top)) for top in ("/etc/apt", "/var/lib/apt/lists")}
    proc = msiforge("kernels", "update")
    assert proc.returncode == 0, proc.stderr
    assert f"updated {len(suites.SUITES)} suites" in proc.stdout
    listed = msiforge("kernels", "list", "--flavour", "amd64")
    assert listed.returncode == 0, listed.stderr
    for release in ("6.1.0-56-amd64", "6.12.117+deb12-amd64", "7.3.4+deb13-amd64", "7.3-amd64"):
        assert release in listed.stdout
    after = {top: _snapshot(Path(top)) for top in ("/etc/apt", "/var/lib/apt/lists")}
    assert after == before


def test_private_apt_config_reads_nothing_of_the_hosts():
    """APT_CONFIG points apt at the suite's own etc/ and state: none of /etc/apt/apt.conf.d applies."""
    suite = suites.get("experimental")
    env = suites.apt_env(suite)
    dump = subprocess.run(["apt-config", "dump"], env=env, capture_output=True, text=True, check=True).stdout
    d = str(suites.state_dir(suite))
    assert f'Dir::Etc "{d}/etc/";' in dump
    assert f'Dir::State::status "{d}/state/status";' in dump
    # Every file apt reads comes from there: no configured path is the host's /etc/apt or its state.
    paths = [line for line in dump.splitlines() if '"/etc/apt' in line or '"/var/lib/apt' in line]
    assert paths == []
    # And what the host's apt.conf.d sets (hooks, cache settings, on this machine) is not there.
    host = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, check=True).stdout
    # (A pkgcache setting counts only where the host changes apt's default, as Debian's docker images do.)
    host_only = [line for line in host.splitlines()
                 if "Invoke" in line or ("Dir::Cache::pkgcache" in line and '"pkgcache.bin"' not in line)]
    assert not [line for line in host_only if line in dump.splitlines()]
    # Its sources: the mirror's suite only, checked with the Debian archive keyring.
    src = (suites.state_dir(suite) / "etc/sources.list.d/msiforge.sources").read_text()
    assert "Suites: experimental\n" in src and f"Signed-By: {suites.KEYRING}\n" in src


def _hosts_main_mirror() -> str:
    """The host's main archive URL, read here independently: one-line sources.list or deb822 .sources."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in (f for f in files if f.is_file()):
        text = f.read_text()
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            if not m[2].endswith("-security"):
                return m[1]
        for stanza in text.split("\n\n"):
            uri = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            names = re.search(r"^Suites:(.*)$", stanza, re.M)
            if uri and names and not all(n.endswith("-security") for n in names[1].split()):
                return uri[1]
    raise AssertionError("the host's apt sources name no mirror")


def test_mirror_is_the_hosts_and_can_be_overridden(monkeypatch):
    assert suites.mirrors()["debian"] == _hosts_main_mirror().rstrip("/")
    monkeypatch.setenv("MSIFORGE_MIRROR", "http://mirror.example/debian/")
    assert suites.mirrors() == {"debian": "http://mirror.example/debian",
                                "debian-security": "http://mirror.example/debian-security"}


def test_expired_index_is_used_with_a_visible_warning():
    """sid's Release on this mirror is past its Valid-Until: listed with a mark, used with a warning."""
    if suites.expired(suites.get("sid")) is None:
        pytest.fail("sid's index is valid on this mirror: the expired-index path needs another expired suite")
    listed = msiforge("kernels", "list", "--suite", "sid", "--flavour", "amd64")
    assert "sid *" in listed.stdout and "* an expired index" in listed.stdout
    proc = msiforge("kernels", "toolchain", "debian:7.2@sid")
    assert proc.returncode == 0, proc.stderr
    when = suites.expired(suites.get("sid"))
    assert f"msiforge: warning: the sid index on the mirror expired on {when:%Y-%m-%d}" in proc.stderr
    assert "x86_64-linux-gnu-gcc-16" in proc.stdout and "builds in: build root" in proc.stdout


def test_an_unreachable_mirror_is_one_line(tmp_path):
    """No lists yet and the mirror does not answer: one line naming the suite, exit 1, no traceback."""
    import os

    env = dict(os.environ, MSIFORGE_CACHE=str(tmp_path / "cache"), MSIFORGE_MIRROR="http://127.0.0.1:9/debian",
               MSIFORGE_SUITES="experimental")
    proc = subprocess.run([*MSIFORGE, "kernels", "list"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("msiforge:")]
    assert lines == [lines[0]] and lines[0].startswith("msiforge: error: apt-get update of suite experimental "
                                                       "failed: "), proc.stderr
    assert "Traceback" not in proc.stderr
