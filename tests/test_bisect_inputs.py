"""What bisect hands to git and what its verdict cache is keyed on (no boots: the runner is faked here;
tests/test_bisect.py boots the real thing)."""

from __future__ import annotations

import subprocess

import pytest

from msiforge import bisect, runner
from msiforge import kernels as kern
from msiforge.board import load_board
from msiforge.generator import render
from msiforge.results import KernelResult, RunResult, ScenarioResult

from helpers import REPO, default_board, write_board


def test_git_bisect_run_command_finds_a_relative_board_from_the_kernel_tree(tmp_path, monkeypatch):
    """`git bisect run` runs in the kernel tree: a board given relative to the user's directory must still load."""
    user, tree = tmp_path / "user", tmp_path / "linux"
    user.mkdir()
    tree.mkdir()
    write_board(user, default_board(), "my-board.yaml")
    monkeypatch.chdir(user)
    cmd = bisect.bisect_run_command(load_board("my-board.yaml"), "deliver", tree)
    assert cmd[cmd.index("--board") + 1] == str(user / "my-board.yaml")
    # Run it where git bisect runs it: the board loads, and it is the (empty) tree that cannot be tested.
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    assert proc.returncode == 125
    assert "no such file" not in proc.stderr
    assert f"{tree} is not a kernel source tree" in proc.stderr


def test_a_built_in_board_is_passed_by_name():
    cmd = bisect.bisect_run_command(load_board("q35-ims"), "mask", REPO)
    assert cmd[cmd.index("--board") + 1] == "q35-ims"


@pytest.fixture
def fake_runs(monkeypatch, fetched_kernels):
    """runner.run replaced by a recorder that passes (the real boot is tests/test_bisect.py's)."""
    calls = []

    def run(board, specs, scenarios, out, **kw):
        calls.append((board.name, specs, scenarios))
        k = KernelResult(spec=specs[0], release="r", verdict="pass", console_log="log")
        k.scenarios = [ScenarioResult(name=scenarios[0], status="pass")]
        return RunResult(board=board.name, run_dir=out, accel="TCG", kernels=[k])

    monkeypatch.setattr(runner, "run", run)
    return calls


def _changed_guest_template(monkeypatch):
    """The guest script template as a developer's fix would change it (one more comment line)."""
    import jinja2

    original = render.environment

    def environment():
        env = original()
        source = env.loader.get_source(env, render.GUEST_TEMPLATE)[0]
        env.loader = jinja2.ChoiceLoader([jinja2.DictLoader({render.GUEST_TEMPLATE: source + "# fixed\n"}),
                                          env.loader])
        return env

    monkeypatch.setattr(render, "environment", environment)


def test_verdicts_are_keyed_on_what_was_tested(tmp_path, fake_runs, monkeypatch):
    """Same tree, kernel, board and scenario: cached.  A changed template: tested again."""
    data = default_board()
    data["description"] = f"verdict key test {tmp_path}"  # a board of its own: nothing cached yet
    board = load_board(str(write_board(tmp_path, data)))
    k = kern.resolve("debian:6.12.117+deb12")
    first = bisect.verdict(board, k, "deliver", tmp_path / "o1")
    again = bisect.verdict(board, k, "deliver", tmp_path / "o2")
    assert (first[0], first[2], again[0], again[2]) == ("pass", False, "pass", True)
    assert len(fake_runs) == 1
    key = bisect.verdict_key(board, k, "deliver")
    assert bisect.verdict_key(board, k, "mask") != key
    assert bisect.verdict_key(board, kern.resolve("debian:6.1.0-56"), "deliver") != key

    _changed_guest_template(monkeypatch)
    assert bisect.verdict_key(board, k, "deliver") != key
    fixed = bisect.verdict(board, k, "deliver", tmp_path / "o3")
    assert fixed[2] is False and len(fake_runs) == 2


def test_bisect_candidates_span_the_suites_in_version_order():
    """--good debian:6.1.0-47 --bad debian:7.3.4: bookworm's 6.1, both 6.12 lines, sid's 7.2 and the 7.3 rc,
    one flavour, oldest first."""
    cands = bisect.candidates("debian:6.1.0-47", "debian:7.3.4")
    releases = [k.release for k in cands]
    assert releases[0] == "6.1.0-47-amd64" and releases[-1].startswith("7.3.4+deb13")
    assert all(r.endswith("-amd64") and "-rt-" not in r and "cloud" not in r for r in releases)
    assert {k.suite for k in cands} >= {"bookworm", "bookworm-security", "trixie-security", "trixie-backports",
                                        "sid", "experimental"}
    assert cands == sorted(cands)
    assert releases.index("7.2.13+deb14-amd64") < releases.index("7.3-amd64") < releases.index("7.3.4+deb13-amd64")
    assert len(cands) == len(kern.expand("debian:6.1.0-47..7.3.4"))


def test_watch_compares_what_the_scenario_saw():
    """--watch: the matches (capture group) in the diagnostics, deduplicated in order; the verdict otherwise."""
    diags = ["ims0: PCI/MSI irq 24: per-device IR-PCI-MSI-0000:00:03.0 domain ; slots: IMS-ims0 -> INTEL-IR-0-13",
             "pmsi0: PCI/MSI irq 25: per-device ... ; slots: PLATFORM-MSI-pmsi0 -> INTEL-IR-0-13"]
    watch = bisect.compile_watch(r"slots: \S+ -> (\S+)")
    assert bisect.observe("pass", diags, watch) == "INTEL-IR-0-13"
    assert bisect.observe("pass", [d.replace("-13", "-12") for d in diags], watch) == "INTEL-IR-0-12"
    assert bisect.observe("pass", diags, bisect.compile_watch(r"IMS-\w+")) == "IMS-ims0"
    assert bisect.observe("fail", [], watch) == "nothing matched (fail)"
    assert bisect.observe("pass", diags, None) == "pass"


def test_watch_that_is_no_regex_is_one_line_error():
    with pytest.raises(Exception, match=r"--watch '\(': not a regular expression"):
        bisect.compile_watch("(")


def test_bisect_with_watch_finds_the_first_kernel_that_saw_something_else(tmp_path, monkeypatch):
    """The binary search on what was seen (the runner faked: test_bisect.py boots real kernels)."""
    ladder = ["debian:6.12.117+deb12", "debian:6.12.118", "debian:7.2.13", "debian:7.3-rc7", "debian:7.3.4"]
    seen = {"6.12": "INTEL-IR-0-13", "7.": "INTEL-IR-0-12"}
    available = kern.index()
    ks = [kern.resolve(s, available) for s in ladder]
    monkeypatch.setattr(bisect, "candidates", lambda good, bad, explicit=None: ks)

    def fake_verdict(board, k, scenario, out):
        parent = next(v for prefix, v in seen.items() if k.release.startswith(prefix))
        return "pass", 1.0, False, "log", [f"ims0: ... ; slots: IMS-ims0 -> {parent}"]

    monkeypatch.setattr(bisect, "verdict", fake_verdict)
    res = bisect.bisect(load_board(None), "domain-layout", ladder[0], ladder[-1], tmp_path,
                        watch=r"slots: \S+ -> (\S+)")
    assert res.reference == "INTEL-IR-0-13"
    assert res.first_different == ks[2].release  # the first 7.x kernel
    assert all(s.verdict == "pass" for s in res.steps)  # no verdict changed: what was seen did
    plain = bisect.bisect(load_board(None), "domain-layout", ladder[0], ladder[-1], tmp_path / "plain")
    assert plain.first_different is None


@pytest.mark.parametrize("n", range(2, 40))
@pytest.mark.parametrize("where", ["second", "middle", "bad"])
def test_boots_never_exceed_the_bound(n, where, tmp_path, monkeypatch):
    """Wherever the first different kernel lies among n candidates, the search stays within max_boots."""
    ks = [kern.make_kernel(f"6.1.0-{i}", "amd64") for i in range(1, n + 1)]
    first = {"second": 1, "middle": n // 2 or 1, "bad": n - 1}[where]
    monkeypatch.setattr(bisect, "candidates", lambda good, bad, explicit=None: ks)
    monkeypatch.setattr(bisect, "verdict", lambda board, k, scenario, out:
                        ("fail" if ks.index(k) >= first else "pass", 1.0, False, "log", []))
    res = bisect.bisect(load_board(None), "deliver", "debian:6.1.0-1", "debian:6.1.0-2", tmp_path)
    assert res.first_different == ks[first].release
    assert res.boots <= res.max_boots, (n, where, res.boots, res.max_boots)
