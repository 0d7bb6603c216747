"""The reward's worker processes (verifiers/plugin.py's for --reward, verifiers/sympy_worker.py's for math): none
outlives the process or thread that started it, not even one inside a C call that holds the GIL; a plug-in call
runs under a CPU limit; and a math worker that cannot serve is `verifier_error` with its cause, never a silent 0."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import process_alive

import tasks
import verify
from verifiers import plugin, sympy_worker

REPO = Path(__file__).resolve().parents[1]
SYMPY_CASE = ("\\boxed{\\sqrt{12}}", "2\\sqrt{3}")  # needs the sympy worker: the parent cannot decide it


def _gone_within(pid: int, cap_s: float = 20.0) -> bool:
    deadline = time.monotonic() + cap_s
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_alive(pid)


def _kill_leftover(pid: int) -> None:
    """A worker the code under test failed to end: not left spinning after the test."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_for(path: Path, cap_s: float = 60.0) -> str:
    deadline = time.monotonic() + cap_s
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.05)
    return path.read_text()


# ------------------------------------------------------------------------------------ --reward workers


SPIN = '''
import os, re
from verifiers.verdict import Verdict

def spin(response, example):
    with open({marker!r}, "w") as f:
        f.write(str(os.getpid()))
    # catastrophic backtracking: hours in C, holding the GIL (no other thread of the worker runs meanwhile)
    return re.match(r"(a+)+$", "a" * 40 + "b") is not None

def limits(response, example):
    with open("/proc/self/limits") as f:
        return Verdict(True, "correct", detail=f.read())  # read during the call, by the worker itself

def equal(response, example):
    return response == example.answer
'''


@pytest.fixture
def rewards(tmp_path) -> Path:
    path = tmp_path / "rewards.py"
    path.write_text(SPIN.format(marker=str(tmp_path / "marker")))
    return path


@pytest.mark.slow  # a parent interpreter, then its reward worker
def test_a_killed_trainer_takes_a_worker_inside_a_c_call_with_it(rewards, tmp_path):
    """The trainer SIGKILLed (no atexit, no finalizer) while its worker runs a regex that would take hours:
    the worker dies with it (its death signal), though no thread of its own could run to notice."""
    script = tmp_path / "trainer.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import tasks
        from verifiers import plugin
        reward = plugin.load({f"{rewards}:spin"!r}, timeout_s=3600, workers=1)
        reward.verdicts(["x"], [tasks.Example("q", "a")])
    """))
    trainer = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE)
    worker = None
    try:
        worker = int(_wait_for(tmp_path / "marker"))
        time.sleep(0.5)  # well inside re.match
        assert process_alive(worker)
        trainer.kill()
        trainer.wait()
        assert _gone_within(worker), "the reward worker outlived its trainer"
    finally:
        trainer.kill()
        trainer.wait()
        if worker is not None:
            _kill_leftover(worker)


def test_a_call_runs_under_a_cpu_limit_it_cannot_reach_in_its_budget(rewards):
    """RLIMIT_CPU in the worker during a call: finite, above what the call can use in timeout + GRACE_S seconds
    of wall clock on every core; and no core dumps."""
    reward = plugin.load(f"{rewards}:limits", timeout_s=5, workers=1)
    try:
        [verdict] = reward.verdicts(["x"], [tasks.Example("q", "a")])
    finally:
        reward.close()
    rows = {line[:26].strip(): line[26:].split() for line in verdict.detail.splitlines()[1:]}
    soft = rows["Max cpu time"][0]
    cores = len(os.sched_getaffinity(0))
    assert soft != "unlimited" and int(soft) >= (5 + plugin.GRACE_S) * cores, rows["Max cpu time"]
    assert rows["Max core file size"][0] == "0"


def test_workers_started_by_a_thread_that_ended_are_replaced(rewards):
    """A worker gets SIGKILL when the thread that started it ends: the next call, from another thread, starts its
    own and answers right."""
    reward = plugin.load(f"{rewards}:equal", workers=1)
    try:
        out = []
        t = threading.Thread(target=lambda: out.append(reward.verdicts(["a"], [tasks.Example("q", "a")])))
        t.start()
        t.join(timeout=60)
        [first] = [p.pid for p in reward._procs]
        assert out and out[0][0].correct
        assert _gone_within(first), "a worker outlived the thread that started it"
        assert [v.correct for v in reward.verdicts(["a", "b"], [tasks.Example("q", "a")] * 2)] == [True, False]
        assert [p.pid for p in reward._procs] != [first]
    finally:
        reward.close()


# ------------------------------------------------------------------------------------ the sympy worker


@pytest.fixture
def fresh_worker():
    """No sympy worker before the test (the next ask starts one), none after it (a test may have broken it)."""
    sympy_worker._kill_at_exit()
    yield
    sympy_worker._kill_at_exit()


def _kill_while_asked(monkeypatch, times: int) -> list[int]:
    """Every worker is SIGKILLed as it is asked, the first `times` times; the pids killed."""
    killed, ask = [], sympy_worker._Worker.ask

    def dying_ask(self, a, b, deadline):
        if len(killed) < times:
            killed.append(self.proc.pid)
            os.kill(self.proc.pid, signal.SIGKILL)
        return ask(self, a, b, deadline)
    monkeypatch.setattr(sympy_worker._Worker, "ask", dying_ask)
    return killed


@pytest.mark.slow  # a parent interpreter, then its sympy worker
def test_a_killed_parent_takes_its_sympy_worker_even_when_no_thread_of_it_runs(tmp_path):
    """The worker stopped (SIGSTOP: neither its main thread nor a thread watching the parent can run, as in a C
    call that holds the GIL), then its parent SIGKILLed: the worker dies too."""
    code = textwrap.dedent("""
        import time, verify
        from verifiers import sympy_worker
        assert verify.check_math('\\\\boxed{\\\\sqrt{8}}', '2\\\\sqrt{2}').correct
        print(sympy_worker._worker_pid(), flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(parent.stdout.readline())
        os.kill(worker, signal.SIGSTOP)
        parent.kill()
        parent.wait()
        assert _gone_within(worker), "the sympy worker outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        if worker is not None:
            _kill_leftover(worker)


@pytest.mark.slow  # two worker starts
def test_a_sympy_worker_started_by_a_thread_that_ended_is_replaced(fresh_worker, monkeypatch):
    monkeypatch.setattr(verify, "HARD_TIME_LIMIT_S", 60.0)  # a slow machine's start is not what is tested
    out = []
    t = threading.Thread(target=lambda: out.append(verify.check_math(*SYMPY_CASE)))
    t.start()
    t.join(timeout=60)
    first = sympy_worker._worker_pid()
    assert out and out[0].correct and first is not None
    assert _gone_within(first), "the sympy worker outlived the thread that started it"
    assert verify.check_math(*SYMPY_CASE).correct
    assert sympy_worker._worker_pid() not in (None, first)


def test_a_sympy_worker_that_cannot_start_is_a_verifier_error_naming_why(fresh_worker, tmp_path, monkeypatch):
    """latex2sympy2_extended broken (here shadowed on PYTHONPATH by a module that fails to import): the worker
    exits before it is ready; the verdict is verifier_error, never a 0 that looks like the answer's, and the cause
    is its traceback's last line, from check_math, last_failure() and probe() alike."""
    (tmp_path / "latex2sympy2_extended.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'latex2sympy2_extended'\", name='latex2sympy2_extended')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(verify, "HARD_TIME_LIMIT_S", 60.0)  # a slow machine's start is not what is tested
    cause = ("the sympy worker exited with code 1 before it was ready: ModuleNotFoundError: No module named "
             "'latex2sympy2_extended'")
    v = verify.check_math(*SYMPY_CASE)
    assert (v.correct, v.reason) == (False, "verifier_error")
    assert sympy_worker.last_failure() == cause
    assert verify.check_math("\\boxed{7}", "7").correct  # what needs no sympy still grades
    assert sympy_worker.probe() == cause


def test_probe_is_none_where_the_worker_serves(fresh_worker):
    assert sympy_worker.probe() is None


@pytest.mark.slow  # two worker starts
def test_a_sympy_worker_killed_twice_on_one_request_is_a_verifier_error(fresh_worker, monkeypatch):
    killed = _kill_while_asked(monkeypatch, times=2)
    monkeypatch.setattr(verify, "HARD_TIME_LIMIT_S", 60.0)
    v = verify.check_math(*SYMPY_CASE)
    assert (v.correct, v.reason) == (False, "verifier_error") and len(set(killed)) == 2
    assert sympy_worker.last_failure() == ("the sympy worker died twice on one request; the second time it was "
                                           "killed by SIGKILL while it served a request")
    assert sympy_worker._worker_pid() is None and not any(process_alive(p) for p in killed)


@pytest.mark.slow  # two worker starts
def test_a_sympy_worker_killed_once_is_replaced_and_the_answer_graded(fresh_worker, monkeypatch):
    killed = _kill_while_asked(monkeypatch, times=1)
    monkeypatch.setattr(verify, "HARD_TIME_LIMIT_S", 60.0)
    assert verify.check_math(*SYMPY_CASE).reason == "correct"
    assert len(killed) == 1 and sympy_worker._worker_pid() not in (None, killed[0])


def test_a_sympy_worker_never_ready_is_a_verifier_error_after_startup_s(fresh_worker, monkeypatch):
    """A worker still starting at a call's deadline is kept for the next call, up to STARTUP_S; then it is
    killed, and the verdict says so."""
    monkeypatch.setattr(verify, "HARD_TIME_LIMIT_S", 1e-4)  # no worker is ready this fast
    assert verify.check_math(*SYMPY_CASE).reason == "timeout"
    starting = sympy_worker._worker_pid()
    assert starting is not None  # kept
    monkeypatch.setattr(sympy_worker, "STARTUP_S", 0.0)
    assert verify.check_math(*SYMPY_CASE).reason == "verifier_error"
    assert sympy_worker.last_failure() == "the sympy worker was not ready within 0 s"
    assert sympy_worker._worker_pid() is None and not process_alive(starting)
