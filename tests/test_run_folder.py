"""The run folder's life (issue 26): --out checked before anything is written, a failed start taken over by a
plain rerun, one process per folder (run.lock), Ctrl-C and SIGTERM that stop cleanly with one line naming what is
saved and the command that continues (and that command's run equals an uninterrupted one), one line for every
bad --out, the last line naming the folder, --method base writing no checkpoint or model, --no-keep-checkpoint.
Each dead end is a sequence of commands that now ends in a finished run."""
import fcntl
import json
import os
import shlex
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import atomic
import train
from test_parallel import assert_same_training
from test_train import REPO, main_error, train_command, untimed

SMALL = ["--preset", "smoke", "--n1", "8", "--n-eval", "4", "--p2-steps", "1"]  # a finished run in seconds
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0", OMP_NUM_THREADS="1")

# A --reward that is the math verifier, and that sends this run a signal at its Nth call (STOP_AT_CALL, counted
# in STOP_COUNTER across its worker processes): a real SIGINT or SIGTERM at a known stage. The smoke preset's
# calls: 1-16 the base evaluation, 17-80 Phase 1's samples, 81-96 the SRT evaluation, 97-108 Phase 2's steps
# (4 each), 109-124 the final evaluation. Once past N it never signals again, so a rerun runs through.
STOPPER = '''
import fcntl, os, signal
from verify import check_math

def reward(response, example):
    at, path = int(os.environ.get("STOP_AT_CALL", "0")), os.environ.get("STOP_COUNTER")
    if at and path:
        with open(path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            n = len(f.read()) + 1
            f.write("x")
        if n == at:
            os.kill(os.getppid(), getattr(signal, os.environ.get("STOP_SIGNAL", "SIGINT")))
    return check_math(response, example.answer)
'''


def cli(args, env=None) -> subprocess.CompletedProcess:
    """train.py in a subprocess, every run of a comparison with the same environment (threads included)."""
    return subprocess.run(train_command(args), cwd=REPO, env=env or ENV, capture_output=True, text=True, timeout=600)


def finished(out: Path) -> dict:
    """The results of the finished run in out, after checking it is one."""
    assert (out / "model" / "model.safetensors").is_file()
    return json.loads((out / "results.json").read_text())


def data_rows(out: Path) -> int:
    return sum('"phase": "data"' in line for line in (out / "metrics.jsonl").read_text().splitlines())


def same_run(a: Path, b: Path) -> None:
    """b ended with the weights, results and logs of a, bit for bit on CPU (timings aside)."""
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ra, rb = finished(a), finished(b)
    assert ra["eval"].keys() == rb["eval"].keys() and ra["generations"] == rb["generations"]
    assert all(ra["eval"][s]["avg@k"] == rb["eval"][s]["avg@k"] for s in ra["eval"])
    for name in ("metrics.jsonl", "samples.jsonl"):
        assert untimed((a / name).read_text()) == untimed((b / name).read_text()), name


def command_of(message: str, after: str = "") -> list[str]:
    """The arguments of the command a message names after `after` (python train.py ARGS, up to a ';' or the
    end; the script's path as seen from the working directory)."""
    head = "python " + shlex.quote(os.path.relpath(REPO / "train.py")) + " "
    text = message.split(after, 1)[1] if after else message
    text = text[text.index(head) + len(head):]
    return shlex.split(text.split(";")[0])


def run_command(line: str, env=None) -> subprocess.CompletedProcess:
    """The command at the end of a stop's line, run as the user would."""
    return cli(command_of(line), env)


# ---------------------------------------------------------------------------------------------- dead ends

def test_a_bad_model_writes_nothing_and_the_fixed_command_finishes(tmp_path, capsys):
    out = tmp_path / "run"
    message = main_error([*SMALL, "--out", str(out), "--model", "no-such-org/no-such-model"])
    assert "--model no-such-org/no-such-model" in message
    assert not out.exists()  # checked before anything is written
    train.main([*SMALL, "--out", str(out)])
    finished(out)
    assert data_rows(out) == 1
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == \
        f"Run folder {out}: results.json, model/, metrics.jsonl, samples.jsonl, checkpoint/"


def bad_data(tmp_path: Path, monkeypatch) -> dict:
    """Flags that fail on the data, each before anything is written (the last one used to fail after the base
    evaluation, with the folder already there)."""
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                           for i in range(3)))
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"prompt": "What is 1 + 1?", "solution": "2"}) + "\n")
    return {"not cached offline": ["--dataset", "gsm8k"], "a code set for math": ["--dataset", "mbpp"],
            "too few rows": ["--dataset", str(few)], "--eval-extra's fields": ["--eval-extra", str(wrong)]}


def test_each_bad_dataset_writes_nothing_and_the_fixed_command_finishes(tmp_path, monkeypatch):
    for what, flags in bad_data(tmp_path, monkeypatch).items():
        out = tmp_path / what.replace(" ", "-").strip("-")
        main_error([*SMALL, "--out", str(out), *flags])
        assert not out.exists(), what
    train.main([*SMALL, "--out", str(out)])  # the last one, fixed, in the same folder
    finished(out)


def test_a_failed_start_of_the_old_code_is_taken_over(tmp_path, capsys):
    """What a failed start left before this change (run_config.json, the data row; no checkpoint), and a stray
    temporary file of a killed write: a plain rerun takes the folder over and says so."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "run_config.json").write_text("{}")
    (out / "metrics.jsonl").write_text('{"phase": "data"}\n')
    (out / "results.json.tmp123").write_text("")
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "state.pt.tmp456").write_bytes(b"")
    train.main([*SMALL, "--out", str(out)])
    finished(out)
    assert data_rows(out) == 1  # the old rows are gone, not appended to
    assert not list(out.glob("*.tmp*")) and not list((out / "checkpoint").glob("*.tmp*"))
    printed = capsys.readouterr().out
    assert f"--out {out}: the run there stopped before its first checkpoint; starting over in it" in printed


def test_a_second_demo_in_the_default_folder(tmp_path, monkeypatch, capsys):
    """The default --out holds the first run: the second (another --seed) is refused with a command that runs
    it in a new folder, and that command finishes."""
    monkeypatch.chdir(tmp_path)
    small = ["--n1", "8", "--n-eval", "4", "--p2-steps", "1", "--preset", "smoke"]
    train.main(small)
    first = finished(tmp_path / "runs" / "smoke")
    message = main_error([*small, "--seed", "1"])
    assert message.startswith("--out runs/smoke holds a finished run") and "\n" not in message
    command = command_of(message, "Run in a new folder:")
    assert command == [*small, "--seed", "1", "--out", "runs/smoke-2"]
    capsys.readouterr()
    train.main(command)
    assert finished(tmp_path / "runs" / "smoke-2")["seed"] == 1 and first["seed"] == 0
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("Run folder runs/smoke-2: results.json, model/")


def test_a_folder_with_a_run_is_refused_and_each_named_command_works(tmp_path):
    out = tmp_path / "run"
    train.main([*SMALL, "--out", str(out), "--no-keep-checkpoint"])
    assert not (out / "checkpoint").exists()  # dropped at the end; results.json and model/ stay
    before = (out / "results.json").read_text()
    (out / "notes.txt").write_text("mine")
    message = main_error([*SMALL, "--out", str(out), "--seed", "2"])
    assert "holds a finished run" in message and (out / "results.json").read_text() == before
    assert "--resume" in main_error([*SMALL, "--out", str(out), "--resume"])  # no checkpoint to continue
    # TRL's spelling of the overwrite flag, as the message's command has it in ours
    assert command_of(message, "replace that run:") == [*SMALL, "--out", str(out), "--seed", "2",
                                                         "--overwrite-output-dir"]
    train.main([*SMALL, "--out", str(out), "--seed", "2", "--overwrite_output_dir"])
    assert finished(out)["seed"] == 2 and data_rows(out) == 1
    assert (out / "notes.txt").read_text() == "mine"  # files that are not the run's stay
    assert not json.loads((out / "run_config.json").read_text())["overwrite_output_dir"]  # --config it safely


def test_files_that_are_no_run_are_never_touched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "model").mkdir()
    (out / "notes.txt").write_text("mine")
    for flags in ([], ["--overwrite-output-dir"]):
        message = main_error([*SMALL, "--out", str(out), *flags])
        assert "not a run's" in message and f"--out {tmp_path / 'mine-2'}" in message
    assert sorted(p.name for p in out.iterdir()) == ["model", "notes.txt"]


def test_a_trained_model_is_never_taken_over(tmp_path):
    """A run folder with model/ but no results.json or checkpoint (deleted by hand) is a finished run, not a start."""
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "run_config.json").write_text("{}")
    (out / "model" / "model.safetensors").write_bytes(b"weights")
    assert f"holds a finished run ({out / 'model'}/)" in main_error([*SMALL, "--out", str(out)])
    assert (out / "model" / "model.safetensors").read_bytes() == b"weights"


def test_resume_and_overwrite_together_are_refused(tmp_path):
    message = main_error([*SMALL, "--out", str(tmp_path / "x"), "--resume", "--overwrite-output-dir"])
    assert "choose one" in message and not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------- --method base

def test_method_base_writes_no_checkpoint_or_model(tmp_path, capsys):
    out = tmp_path / "base"
    results = train.main(["--preset", "smoke", "--method", "base", "--n-eval", "4", "--out", str(out)])
    assert set(results["eval"]) == {"eval_base"}
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "results.json", "run.lock", "run_config.json",
                                                     "samples.jsonl"]
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last.startswith(f"Run folder {out}: results.json, metrics.jsonl") and "no model/" in last


# ---------------------------------------------------------------------------------------------- bad --out

def refusal(out, tmp_path) -> str:
    """train.main's one line for --out, and nothing was made."""
    message = main_error([*SMALL, "--out", str(out)])
    assert message.startswith(f"--out {out}: ") and "\n" not in message and "train.py" in message
    return message


def test_every_bad_out_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in refusal(tmp_path / "file", tmp_path)
    assert f"{tmp_path / 'file'} is a file, not a folder" in refusal(tmp_path / "file" / "run", tmp_path)
    if Path("/sys/kernel").is_dir():  # sysfs: EPERM even for root, whom permission bits let through
        message = refusal(Path("/sys/kernel/sdzero-run"), tmp_path)
        assert message.startswith("--out /sys/kernel/sdzero-run: /sys/kernel ")
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def unwritable():
    """A command prefix that runs as a user who cannot write in a fresh folder (as root: nobody, through
    setpriv, in a folder it can reach), and that folder."""
    base = Path(tempfile.mkdtemp())
    base.chmod(0o755)
    folder = base / "locked"
    folder.mkdir(mode=0o555)
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("root without setpriv: no user who lacks the permission")
    yield ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"] if os.geteuid() == 0 else [], folder
    folder.chmod(0o755)
    shutil.rmtree(base)


@pytest.mark.slow
def test_no_permission_and_a_read_only_file_system_are_one_line(unwritable, tmp_path):
    prefix, folder = unwritable
    for out in (folder / "run", folder):
        proc = subprocess.run([*prefix, *train_command([*SMALL, "--out", str(out)])], cwd=folder, env=ENV,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines()[-1].startswith(f"--out {out}: {folder} is not open to this user")
    assert not (folder / "run").exists()
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode:
        pytest.skip("no user namespace for a read-only mount")
    ro = tmp_path / "ro"
    ro.mkdir()
    script = f"mount -t tmpfs -o ro none {ro} && exec " + shlex.join(train_command([*SMALL, "--out", str(ro / "run")]))
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"--out {ro / 'run'}: {ro} is on a read-only file system")


# ---------------------------------------------------------------------------------------------- one process

def hold(out: Path):
    """Hold out/run.lock as a run does (this test process standing in for it)."""
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / "run.lock", "a+")
    fcntl.flock(f, fcntl.LOCK_EX)
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "today"}))
    f.flush()
    return f


def test_a_second_process_stops_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    with hold(out):
        for flags in ([], ["--resume"]):
            message = main_error([*SMALL, "--out", str(out), *flags])
            assert message.startswith(f"--out {out} is in use by pid {os.getpid()} on {socket.gethostname()}")
    train.main([*SMALL, "--out", str(out)])  # let go: the folder is free (a lock alone is nothing to keep)
    finished(out)


@pytest.mark.slow
def test_two_resumes_of_one_folder(tmp_path):
    """A re-queued job beside the old one: the second resume stops with the first's pid and host; a run killed
    with -9 leaves no lock behind, and the next resume ends as an uninterrupted run."""
    ref, out = tmp_path / "ref", tmp_path / "run"
    args = ["--preset", "smoke", "--p2-steps", "12", "--n-eval", "4"]
    assert cli([*args, "--out", str(ref)]).returncode == 0
    first = subprocess.Popen(train_command([*args, "--out", str(out)]), cwd=REPO, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_rows(out, "p2", 2, first)
    first.send_signal(signal.SIGSTOP)  # held mid-run for as long as the second takes to start
    second = cli([*args, "--out", str(out), "--resume"])
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert f"--out {out} is in use by pid {first.pid} on {socket.gethostname()}" in second.stderr
    first.kill()  # kill -9: no chance to let go of anything
    first.wait()
    resumed = cli([*args, "--out", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    same_run(ref, out)


def wait_for_rows(out: Path, phase: str, n: int, proc: subprocess.Popen) -> None:
    deadline, tag = time.time() + 600, f'"phase": "{phase}"'
    while time.time() < deadline and proc.poll() is None:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and sum(tag in line for line in metrics.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run ended before {n} {phase} rows")


# ---------------------------------------------------------------------------------------------- stops

@pytest.fixture(scope="module")
def stopper(tmp_path_factory):
    """The --reward that signals (STOPPER), and the uninterrupted smoke run with it."""
    folder = tmp_path_factory.mktemp("stopper")
    (folder / "stopper.py").write_text(STOPPER)
    args = ["--preset", "smoke", "--reward", f"{folder / 'stopper.py'}:reward"]
    proc = cli([*args, "--out", str(folder / "ref")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return args, folder / "ref"


def stop_line(proc: subprocess.CompletedProcess, code: int) -> str:
    """The one line a stopped run printed, after checking it stopped cleanly."""
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines() if "Stopped by" in line]
    assert len(lines) == 1 and lines[0].startswith("Stopped by"), proc.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("at, sig, saved", [
    (1, "SIGINT", None),  # the base evaluation: nothing saved, the same command starts over
    (40, "SIGTERM", "at the start of p1_sample"),  # Phase 1's revisions
    (102, "SIGINT", "after p2 step 1"),  # Phase 2's second step
])
def test_a_signal_stops_cleanly_and_its_command_continues(stopper, tmp_path, at, sig, saved):
    args, ref = stopper
    out = tmp_path / "run"
    env = dict(ENV, STOP_AT_CALL=str(at), STOP_COUNTER=str(tmp_path / "calls"), STOP_SIGNAL=sig)
    proc = subprocess.run(train_command([*args, "--out", str(out)]), cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    line = stop_line(proc, 128 + getattr(signal, sig))
    assert line.startswith("Stopped by " + ("Ctrl-C (SIGINT)" if sig == "SIGINT" else "SIGTERM"))
    if saved is None:
        command = shlex.join(["python", "train.py", *args, "--out", str(out)])
        assert line.endswith(f"before its first checkpoint; the same command starts it over in {out}: {command}")
    else:
        command = shlex.join(["python", "train.py", *args, "--resume", "--out", str(out)])
        assert f"saved: the checkpoint {saved}" in line and line.endswith(f"Continue with: {command}")
    assert not list(out.rglob("*.tmp*")) and not (out / "model").exists()
    resumed = run_command(line, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    same_run(ref, out)


@pytest.mark.slow
def test_sigterm_in_the_middle_of_training(tmp_path):
    """A scheduler's SIGTERM at whatever point Phase 2 has reached (a forward, a backward, a sample)."""
    args = ["--preset", "smoke", "--p2-steps", "12", "--n-eval", "4"]
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert cli([*args, "--out", str(ref)]).returncode == 0
    proc = subprocess.Popen(train_command([*args, "--out", str(out)]), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_rows(out, "p2", 3, proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=600)
    line = stop_line(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), 143)
    assert "; saved: the checkpoint after p2 step " in line
    assert run_command(line).returncode == 0
    same_run(ref, out)


@pytest.mark.slow
def test_ctrl_c_under_torchrun_stops_every_rank(tmp_path):
    """Ctrl-C reaches torchrun, which passes it on to its workers (each in its own session): every rank stops,
    rank 0 alone prints the line, and its command (torchrun's own, read back) continues on 2 processes."""
    args = ["--preset", "smoke", "--p2-steps", "12", "--n-eval", "4"]
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert cli([*args, "--out", str(ref)]).returncode == 0
    proc = subprocess.Popen(train_command([*args, "--out", str(out)], nproc=2), cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_rows(out, "p2", 2, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=600)
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("Stopped by")]
    assert len(lines) == 1 and "Continue with: python -m torch.distributed.run --standalone --nproc_per_node 2 " \
        "train.py " in lines[0], stderr[-3000:]
    assert not re.search(rf'File "{REPO}/[^/]+\.py"', stderr)  # no traceback in our code (torchrun prints its own)
    words = shlex.split(lines[0].split("Continue with: ")[1])
    resumed = subprocess.run([sys.executable, *words[1:]], cwd=REPO, env=ENV, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0 and "on 2 processes" in resumed.stdout + resumed.stderr, resumed.stderr[-3000:]
    assert_same_training(ref, out)


def test_ctrl_c_during_a_checkpoint_save_keeps_the_last_one(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the third checkpoint is half-written: no temporary file is left, the second checkpoint is
    intact and is what the line names, and its command resumes to the uninterrupted run's end."""
    flags = [*SMALL, "--out", str(tmp_path / "run")]
    train.main([*SMALL, "--out", str(tmp_path / "ref")])
    real, saves = torch.save, []

    def interrupted(obj, f, *a, **k):
        saves.append((obj["state"]["stage"], obj["state"]["step"]))
        if len(saves) == 3:
            f.write(b"half a checkpoint")
            raise KeyboardInterrupt  # what a SIGINT or SIGTERM raises here
        return real(obj, f, *a, **k)
    monkeypatch.setattr(atomic.torch, "save", interrupted)
    with pytest.raises(SystemExit) as e:
        try:
            train.main(flags)
        except KeyboardInterrupt:  # escaping, it would end the whole test session
            pytest.fail("the interrupt went through train.main")
    assert e.value.code == 130
    monkeypatch.setattr(atomic.torch, "save", real)
    out = tmp_path / "run"
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["state.pt"]
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=False)["state"]
    assert (state["stage"], state["step"]) == saves[1]
    line = capsys.readouterr().err.strip().splitlines()[-1]
    stage, step = saves[1]
    assert f"saved: the checkpoint {f'after {stage} step {step}' if step else f'at the start of {stage}'}" in line
    train.main(command_of(line))
    same_run(tmp_path / "ref", out)


def test_an_interrupted_save_leaves_the_old_file_alone(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    atomic.atomic_torch_save({"step": 1}, path)

    def interrupted(obj, f, *a, **k):
        f.write(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr(atomic.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_torch_save({"step": 2}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    assert torch.load(path)["step"] == 1
