"""bench/common.py: a run folder is run once, reused when finished with the same flags, resumed when
interrupted, refused when it holds another command's run. A stand-in program (a few lines of Python)
takes train.py's place, so each test takes a fraction of a second."""
import contextlib
import json
import os
import platform
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))  # appended: top-level modules come first
import common  # noqa: E402

# Like train.py: makes --out, checkpoints, then writes results.json; with --crash it stops after its first
# checkpoint unless resumed. Every call is logged to calls.jsonl beside the run folder.
FAKE = r"""
import json, sys
from pathlib import Path
argv = sys.argv[1:]
out = Path(argv[argv.index("--out") + 1])
with open(out.parent / "calls.jsonl", "a") as f:
    f.write(json.dumps(argv) + "\n")
out.mkdir(exist_ok="--resume" in argv)
print("training", " ".join(argv))
(out / "checkpoint").mkdir(exist_ok=True)
(out / "checkpoint" / "state.pt").write_text("")
if "--crash" in argv and "--resume" not in argv:
    sys.exit(3)
(out / "results.json").write_text(json.dumps({"argv": argv}))
"""
PROGRAM = [sys.executable, "-c", FAKE]


def calls(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_fresh_run_writes_the_marker_and_the_log(tmp_path):
    out, log = tmp_path / "run", tmp_path / "run.log"
    assert common.run_train(out, ["--seed", "0"], log=log, program=PROGRAM) == out
    assert calls(tmp_path) == [["--seed", "0", "--out", str(out)]]
    assert json.loads(common.marker_path(out).read_text()) == ["--seed", "0"]
    assert common.marker_path(out) == tmp_path / "run.cmd.json" and not list(tmp_path.glob("*.tmp"))
    assert (out / "results.json").exists()
    assert log.read_text() == f"training --seed 0 --out {out}\n"


def test_finished_run_with_the_same_flags_is_reused(tmp_path):
    out = tmp_path / "run"
    common.run_train(out, ["--seed", "0"], program=PROGRAM)
    before = (out / "results.json").stat().st_mtime_ns
    common.run_train(out, ["--seed", "0"], program=PROGRAM)
    assert len(calls(tmp_path)) == 1 and (out / "results.json").stat().st_mtime_ns == before


def test_interrupted_run_is_resumed(tmp_path):
    out, log = tmp_path / "run", tmp_path / "run.log"
    with pytest.raises(SystemExit, match=f"{out}: the run failed \\(exit 3\\); see {log}"):
        common.run_train(out, ["--crash"], log=log, program=PROGRAM)
    assert not (out / "results.json").exists()
    common.run_train(out, ["--crash"], log=log, program=PROGRAM)
    assert calls(tmp_path)[-1] == ["--crash", "--out", str(out), "--resume"]
    assert (out / "results.json").exists()
    assert len(log.read_text().splitlines()) == 2  # appended: the interrupted run's output is kept


def test_run_stopped_before_its_first_checkpoint_starts_afresh(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    common.marker_path(out).write_text(json.dumps(["--seed", "0"]))
    common.run_train(out, ["--seed", "0"], program=PROGRAM)
    assert calls(tmp_path) == [["--seed", "0", "--out", str(out)]]  # no --resume
    assert not (out / "config.json").exists()


@pytest.mark.parametrize("flags", [["--seed", "0"], ["--seed", "0", "--crash"]], ids=["finished", "interrupted"])
def test_another_commands_run_is_refused(tmp_path, flags):
    out = tmp_path / "run"
    with contextlib.suppress(SystemExit):  # --crash: stops after its first checkpoint
        common.run_train(out, flags, program=PROGRAM)
    assert (out / "results.json").exists() == ("--crash" not in flags)
    with pytest.raises(SystemExit) as e:
        common.run_train(out, ["--seed", "1"], program=PROGRAM)
    message = str(e.value)
    assert str(out) in message and "another command" in message and "--seed 1" in message
    assert len(calls(tmp_path)) == 1  # nothing ran, nothing changed
    assert json.loads(common.marker_path(out).read_text()) == flags


def test_folder_without_a_marker_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("{}")
    with pytest.raises(SystemExit, match=f"{out}: holds files but no run.cmd.json"):
        common.run_train(out, ["--seed", "0"], program=PROGRAM)
    assert calls(tmp_path) == [] and (out / "results.json").read_text() == "{}"


def test_run_that_writes_no_results_fails(tmp_path):
    with pytest.raises(SystemExit, match="without writing results.json"):
        common.run_train(tmp_path / "run", ["--seed", "0"], program=[sys.executable, "-c", "pass"])


def test_machine_names_architecture_cpu_and_cores():
    m = common.machine()
    assert m.startswith(platform.machine() + ", ") and m.endswith(f", {os.cpu_count()} cores")
