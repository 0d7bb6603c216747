"""The sandbox's processes and slots: nothing a candidate starts outlives its verdict, and waiting for a slot never
costs a candidate its time.

  * an exception that interrupts the wait for a sandbox (a signal handler that raises, as a --reward time limit
    around check_code or Ctrl-C does) kills the sandbox before it propagates;
  * a trainer killed with SIGKILL (the OOM killer, a scheduler) takes its sandboxes with it;
  * far more threads than slots, in several processes at once: every correct program is graded correct;
  * two processes whose TMPDIR differs never share a slot (its uid), so neither kills the other's candidate;
  * not root (run as a real non-root uid with setpriv): a correct program that leaves a child running is
    `correct`, at once, and the child is dead afterwards;
  * root in a user namespace that maps only uid 0 (`unshare -r`, a rootless container) gets one line that names
    the cause and what to do, and SDZERO_SANDBOX_SAME_USER=1 runs candidates as that user.
Each of these failed on 74c6a81's sandbox. No wall-clock assertion: a process must be gone well before it could
have ended by itself (its CPU limit, the C call's end), polled with a generous cap.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import require_sandbox

from verifiers import sandbox, sandbox_runner
from verifiers.sandbox import Isolation, Limits, check_code

REPO = Path(__file__).resolve().parents[1]
SPIN = "import os\nos.close(1)\nwhile True:\n    pass\n"  # closes stdout, then spins: only a kill ends it
LEFT_CHILD = ("import os, time\nif os.fork() == 0:\n    os.execvp('sleep', ['sleep', '{marker}'])\n"
              "print(int(input()) * 2)\n")
DOUBLE = {"kind": "stdio", "tests": [{"input": "21\n", "output": "42\n"}]}


@pytest.fixture(scope="module")
def info():
    return require_sandbox(sandbox.sandbox_info())


def _harness_pids() -> list[int]:
    """Live processes of any sandbox: the harness's bootstrap names `sdzero_harness` in its command line."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and b"sdzero_harness" in Path(f"/proc/{pid}/cmdline").read_bytes():
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(pid))
        except OSError:
            pass
    return found


def _within(cap_s: float, condition) -> bool:
    """Poll until condition() holds; False if it still does not after cap_s."""
    end = time.monotonic() + cap_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def _child(code: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


class Interrupted(BaseException):  # as --reward's time limit (verifiers/plugin.py) and Ctrl-C raise
    pass


@contextlib.contextmanager
def _raised_after(seconds: float, exception: type):
    """`exception` raised by a SIGALRM handler after `seconds`, wherever this thread then is; pytest.raises it."""
    def on_alarm(signum, frame):
        raise exception()

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        with pytest.raises(exception):
            yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("exception", [KeyboardInterrupt, Interrupted])
def test_an_exception_during_the_wait_kills_the_sandbox_first(info, exception):
    """A SIGALRM handler that raises while check_code waits: the candidate, which closed stdout and spins, is
    dead when the exception reaches the caller."""
    assert not _harness_pids()
    with _raised_after(1.0, exception):
        check_code(SPIN, DOUBLE, limits=Limits(time_limit_s=20.0, candidate_time_s=20.0))
    assert not _harness_pids()  # no poll: the kill ran before the exception left check_code
    if info["drop_privileges"]:  # and the slot it held is free again: the next check runs
        assert check_code("print(int(input()) * 2)\n", DOUBLE).correct


@pytest.mark.slow
def test_a_killed_trainer_takes_its_sandboxes_with_it(info):
    """SIGKILL the process that runs check_code (no handler, no atexit): the sandbox dies with it, long before the
    candidate's CPU limit (31 s) would end the spin."""
    assert not _harness_pids()
    trainer = _child(f"""
        from verifiers.sandbox import check_code, Limits
        check_code({SPIN!r}, {DOUBLE!r}, limits=Limits(time_limit_s=60.0, candidate_time_s=60.0))
    """)
    try:
        assert _within(30.0, _harness_pids), "the sandbox never started"
        time.sleep(0.5)  # the candidate runs
        trainer.kill()
        trainer.wait()
        assert _within(10.0, lambda: not _harness_pids()), f"alive after the trainer's death: {_harness_pids()}"
    finally:
        trainer.kill()
        for pid in _harness_pids():
            os.kill(pid, signal.SIGKILL)


_MANY_THREADS = """
    import json, sys, threading
    from verifiers.sandbox import check_code, Isolation, Limits
    tag, n = sys.argv[1], int(sys.argv[2])
    iso = Isolation(uid_base=62000, uid_count=2)  # two slots (below the default uids: never another test's)
    limits = Limits()  # 2 s per test, 2 s of slack to start: what the sandbox gives every candidate
    out = [None] * n
    def one(i):  # each program its own: no cache hit
        prog = f"import time\\ntime.sleep(0.3)\\nprint(int(input()) * 2)  # {tag} {i}\\n"
        out[i] = check_code(prog, {"kind": "stdio", "tests": [{"input": "21\\n", "output": "42\\n"}]},
                            limits=limits, isolation=iso).reason
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(json.dumps(out))
"""


@pytest.mark.slow
def test_far_more_threads_than_slots_in_two_processes_all_correct(info):
    """2 processes x 16 threads on 2 slots, each program 0.3 s of a 2 s limit: most wait many seconds for a slot,
    longer than their limit, and every one is graded correct (the wait is outside its time)."""
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(_MANY_THREADS), tag, "16"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-2000:]
        assert json.loads(out) == ["correct"] * 16


@pytest.mark.slow
def test_two_processes_with_different_tmpdirs_never_share_a_slot(info, tmp_path):
    """One slot, two processes with different TMPDIR, programs that sleep: both hold the same machine-wide lock
    in turn. Sharing the uid, one's end-of-run kill would end the other's candidate (runtime_error)."""
    if not info["drop_privileges"]:
        pytest.skip("slots are uids only as root")
    code = """
        import json, sys
        from verifiers.sandbox import check_code_batch, Isolation, Limits
        progs = [f"import time\\ntime.sleep(0.4)\\nprint(int(input()) * 2)  # {sys.argv[1]} {i}\\n" for i in range(5)]
        task = {"kind": "stdio", "tests": [{"input": "21\\n", "output": "42\\n"}]}
        print(json.dumps([v.reason for v in check_code_batch(progs, [task] * 5, workers=1,
                          isolation=Isolation(uid_base=62200, uid_count=1), limits=Limits(time_limit_s=5.0))]))
    """
    procs = []
    for tag in ("a", "b"):
        (tmp_path / tag).mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), tag], cwd=REPO,
                                      env={**os.environ, "TMPDIR": str(tmp_path / tag)},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        assert json.loads(out) == ["correct"] * 5


_NON_ROOT_UID = 64917  # no user has it: nothing else runs under it


@pytest.mark.slow
def test_not_root_a_program_that_leaves_a_child_is_correct_and_the_child_dies():
    """The sandbox run by a real non-root user (setpriv): its PID 1 cannot find the candidate's children in
    the host's /proc, and used to wait for them until the deadline (`timeout` for a correct program)."""
    python, setpriv = shutil.which("python3", path="/usr/bin:/bin"), shutil.which("setpriv")
    if os.geteuid() != 0 or not python or not setpriv:
        pytest.skip("needs root (to become another user), setpriv and a system python3")
    tmp_path = Path(tempfile.mkdtemp(prefix="sdzero-nonroot-"))  # pytest's are under a 0700 folder
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "verifiers", copy / "verifiers", ignore=shutil.ignore_patterns("__pycache__"))
    for path in (tmp_path, copy, *copy.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    marker = "1234.5"
    script = textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {str(copy)!r})
        from verifiers import sandbox
        from verifiers.sandbox import check_code
        info = sandbox.sandbox_info()
        stdio = check_code({LEFT_CHILD.format(marker=marker)!r}, {DOUBLE!r})
        prog = "import os\\nif os.fork() == 0:\\n    os.execvp('sleep', ['sleep', '{marker}'])\\ndef f(x):\\n    return x + 1\\n"
        call = check_code(prog, {{"kind": "call", "entry_point": "f", "tests": [{{"args": [1], "expected": 2}}]}})
        left = [p for p in os.listdir("/proc") if p.isdigit() and os.path.exists(f"/proc/{{p}}/cmdline")
                and open(f"/proc/{{p}}/cmdline", "rb").read() == b"sleep\\0{marker}\\0"]
        print(json.dumps({{"uid": os.getuid(), "working": info["working"], "pidns": info.get("pidns"),
                          "stdio": stdio.reason, "call": call.reason, "left": left}}))
    """)
    try:
        proc = subprocess.run([setpriv, f"--reuid={_NON_ROOT_UID}", f"--regid={_NON_ROOT_UID}", "--clear-groups",
                               "env", "-i", "PATH=/usr/bin:/bin", f"HOME={tmp_path}", python, "-c", script],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    assert got["uid"] == _NON_ROOT_UID and got["working"]
    assert (got["stdio"], got["call"], got["left"]) == ("correct", "correct", [])


@pytest.mark.slow
def test_root_without_other_uids_names_the_cause_and_can_run_as_itself():
    """`unshare -r`: root in a user namespace that maps uid 0 only, as in a rootless container. The sandbox
    cannot switch candidates to their uids: sandbox_problem() says so in one line with what to do, and every
    check is sandbox_error without a traceback; SDZERO_SANDBOX_SAME_USER=1 runs candidates as this user."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or not unshare or subprocess.run([unshare, "-r", "true"]).returncode != 0:
        pytest.skip("needs root and unshare -r")
    code = textwrap.dedent(f"""
        import json
        from verifiers import sandbox
        from verifiers.sandbox import check_code
        print(json.dumps([sandbox.sandbox_problem(), check_code("print(int(input()) * 2)", {DOUBLE!r}).reason]))
    """)
    for same_user, want in (("", "sandbox_error"), ("1", "correct")):
        proc = subprocess.run([unshare, "-r", sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, sandbox_runner.SAME_USER_ENV: same_user}, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        problem, reason = json.loads(proc.stdout)
        assert reason == want and "Traceback" not in proc.stderr
        if same_user:
            assert problem is None and "WITHOUT the uid drop" in proc.stderr
        else:
            assert "\n" not in problem and "maps only uid(s) 0" in problem and "61000-61127" in problem
            assert "SDZERO_SANDBOX_UID_BASE" in problem and "SDZERO_SANDBOX_SAME_USER=1" in problem


def test_an_interrupted_batch_kills_its_sandboxes_and_starts_no_more(info, monkeypatch):
    """Ctrl-C while check_code_batch waits for its pool: the running sandboxes are killed rather than awaited to
    their limits, the queued candidates never start, and the exception reaches the caller."""
    started = []
    real = sandbox.run_sandbox
    monkeypatch.setattr(sandbox, "run_sandbox", lambda *a, **k: started.append(1) or real(*a, **k))
    spinners = [SPIN + f"# {i}\n" for i in range(6)]
    with _raised_after(1.5, KeyboardInterrupt):
        sandbox.check_code_batch(spinners, [DOUBLE] * 6, workers=2,
                                 limits=Limits(time_limit_s=60.0, candidate_time_s=60.0))
    assert len(started) == min(2, info["slots"]) and not _harness_pids()
