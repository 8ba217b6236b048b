"""msiforge run --watch: the edit loop reruns on a change of the board or a template.

The loop's logic runs with a given run function; one real watch (two boots,
the second after an edit of the board) runs end to end.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from msiforge import watch
from msiforge.errors import BoardError

from helpers import MSIFORGE, REPO, write_board


def test_snapshots_see_rewrites_additions_and_removals(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("1")
    before = watch.snapshot([a, b])
    assert watch.changed(before, watch.snapshot([a, b])) == []
    a.write_text("22")
    b.write_text("new")
    assert watch.changed(before, watch.snapshot([a, b])) == [a, b]
    a.unlink()
    assert watch.snapshot([a])[a] is None


def test_the_loop_reruns_after_each_change_and_survives_a_bad_board(tmp_path):
    f = tmp_path / "board.yaml"
    f.write_text("v1")
    statuses = iter([1, "bad", 0])
    ran = []

    def run_once(n):
        ran.append(n)
        s = next(statuses)
        if s == "bad":
            raise BoardError("board.yaml", "fires", "not an integer")
        return s

    edits = iter(["v2", "v3!"])

    def sleep(_):  # the user edits the board while the loop waits
        f.write_text(next(edits))

    assert watch.loop(run_once, lambda: [f], runs=3, sleep=sleep) == 0
    assert ran == [1, 2, 3]


def test_templates_are_watched():
    files = watch.template_files()
    assert any(p.name == "base.c.j2" for p in files) and any(p.name == "run.sh.j2" for p in files)
    assert all(p.is_file() for p in files)


@pytest.mark.vm
@pytest.mark.build
def test_run_watch_reruns_when_the_board_changes(tmp_path):
    """Two real runs: the second after the board's fires went from 2 to 4; each prints its table."""
    import yaml

    data = yaml.safe_load((REPO / "boards" / "q35-ims.yaml").read_text())
    data.update(fires=2, scenarios=["deliver"], kernels=["debian:6.12"])
    path = write_board(tmp_path, data)
    out = tmp_path / "runs"
    proc = subprocess.Popen([*MSIFORGE, "run", str(path), "--watch", "--watch-runs", "2", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 600
        while not (out / "run-1" / "results.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.2)
        # The watcher took its snapshot before the first run: this edit makes the second.
        data["fires"] = 4
        path.write_text(yaml.safe_dump(data))
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert output.count("msiforge run: board q35-ims") == 2, output
    assert re.search(r"changed: \S*board\.yaml", output), output
    for n, fires in ((1, 2), (2, 4)):
        (k,) = json.loads((out / f"run-{n}" / "results.json").read_text())["kernels"]
        ktap = (out / f"run-{n}" / k["release"] / "ktap.txt").read_text()
        assert f"x {fires} fires delivered" in ktap
