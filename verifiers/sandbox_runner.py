"""One sandbox, from the parent's side: where and as whom the child runs, starting it, and killing what is left.

verifiers/sandbox.py turns a task into tests and the results into a verdict; this file gives it a fresh
sandbox per run and nothing else. It holds:
  * `Limits` and `Isolation`, what a caller sets;
  * `setup_for(isolation)`: the child interpreter and the uid policy, chosen once per Isolation by probing
    each candidate interpreter in both modes, with the paths to hide and the world-writable places found by a
    bounded scan of / (`_writable_places`); `sandbox_info` reports what the probe saw;
  * the uid slots (`_UidSlots`): a pair of uids per running sandbox, exclusive across threads and processes;
  * `run_sandbox`: writes the spec and the job to unnamed files, starts `python -I -S -B -X utf8 -c _BOOT`
    (which executes verifiers/sandbox_child.py's source, shipped in the spec) in a new session with a
    scrubbed environment, waits for it under a deadline without reaping it, then kills every process of
    both uids and its process group, and reads the results file back.
The process tree, the isolation steps and what they protect are verifiers/sandbox.py's docstring.
Hand-written on the standard library and the kernel alone (namespaces, rlimits, uids): a training machine
needs nothing installed for the code reward beyond Python, and every step can be read here.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import functools
import inspect
import json
import logging
import math
import os
import random
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from verifiers import sandbox_child

log = logging.getLogger(__name__)

UID_BASE = int(os.environ.get("SDZERO_SANDBOX_UID_BASE", "61000"))  # Debian's 60000-64999 block: no login users
UID_COUNT = 64  # concurrently running sandboxes; each uses two uids (candidate, tester)
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # hidden from the candidate, with all below it


@dataclass(frozen=True)
class Limits:
    time_limit_s: float = 2.0  # wall clock per test, and for the program's top-level code
    candidate_time_s: float = 30.0  # cap on one candidate's wall clock, all its tests together
    memory_mb: int = 512  # RLIMIT_AS of the candidate process (python -I -S with the harness peaks at ~16 MiB)
    output_bytes: int = 8 << 20  # RLIMIT_FSIZE: caps stdout, stderr and the results file each
    processes: int = 64  # RLIMIT_NPROC: processes + threads of the sandbox uid
    open_files: int = 64  # RLIMIT_NOFILE
    scratch_mb: int = 32  # size of each private tmpfs (work dir, /dev/shm, each world-writable directory)
    startup_slack_s: float = 2.0  # added to the parent's hard deadline: interpreter start, isolation setup


@dataclass(frozen=True)
class Isolation:
    drop_privileges: bool | None = None  # None: drop when running as root
    uid_base: int = UID_BASE  # candidate uids: uid_base + slot; tester uids: uid_base + uid_count + slot
    uid_count: int = UID_COUNT
    python: str | None = None  # child interpreter; None: $SDZERO_SANDBOX_PYTHON or the first one the uid can run
    namespaces: bool = True  # mount/network/PID/IPC namespaces where the OS allows them
    hide: tuple[str, ...] = ()  # more directories to hide in the mount namespace


# ----------------------------------------------------------------------------------------------------------
# Where and as whom the child runs (parent side)


@dataclass(frozen=True)
class Setup:
    python: str
    uid_base: int | None  # None: no privilege drop
    uid_count: int
    namespaces: bool
    hide: tuple[str, ...]
    writable: tuple[str, ...] = ()  # world-writable directories found at setup: each gets a private tmpfs
    specials: tuple[str, ...] = ()  # world-writable sockets and FIFOs found at setup: /dev/null is bound over each


_SETUPS: dict = {}
_SETUP_INFO: dict = {}
_SETUP_LOCK = threading.Lock()


def _python_candidates(isolation: Isolation) -> list[str]:
    if isolation.python:
        return [isolation.python]
    found = [os.environ.get("SDZERO_SANDBOX_PYTHON"), sys.executable, os.path.realpath(sys.executable),
             getattr(sys, "_base_executable", None)]
    for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
        found.append(shutil.which(name, path=CHILD_PATH))
    return list(dict.fromkeys(p for p in found if p))


def _hidden_paths(isolation: Isolation) -> tuple[str, ...]:
    paths = [_REPO, os.getcwd(), os.path.expanduser("~"), "/root", "/home", sys.prefix, *isolation.hide]
    return tuple(dict.fromkeys(os.path.realpath(p) for p in paths if p and os.path.realpath(p) != "/"))


def _mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount, from /proc/self/mountinfo."""
    found = []
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                fields = line.split()
                if b"-" in fields:
                    point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
                    found.append((os.fsdecode(point), fields[fields.index(b"-") + 1].decode("ascii", "replace")))
    except (OSError, IndexError):
        pass
    return found


def _writable_places(skip: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """World-writable directories, and world-writable sockets and FIFOs, that another uid could reach.

    Breadth first from /, descending only into directories others may traverse, not into a world-writable one
    (its tmpfs covers everything under it), nor into `skip`, /proc, /sys, /dev (replaced in the sandbox) or a
    pseudo filesystem. Bounded by SCAN_BUDGET_S: what it does not reach stays read-only, never writable.
    """
    skip = set(skip) | set(_REPLACED) | {point for point, fstype in _mounts() if fstype in _PSEUDO_FS}
    dirs, specials = [], []
    queue, end = collections.deque(["/"]), time.monotonic() + SCAN_BUDGET_S
    while queue:
        if time.monotonic() > end:
            log.warning("sandbox: the world-writable scan stopped after %.0f s; the rest stays read-only", SCAN_BUDGET_S)
            break
        try:
            with os.scandir(queue.popleft()) as it:
                entries = list(it)
        except OSError:
            continue
        for e in entries:
            if e.path in skip:
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    mode = e.stat(follow_symlinks=False).st_mode
                    if mode & 0o003 == 0o003:  # others may create files in it
                        dirs.append(e.path)
                    elif mode & 0o001:
                        queue.append(e.path)
                elif not e.is_file(follow_symlinks=False) and not e.is_symlink():
                    mode = e.stat(follow_symlinks=False).st_mode
                    if (stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode)) and mode & 0o002:
                        specials.append(e.path)
            except OSError:
                pass
    return tuple(sorted(dirs)), tuple(sorted(specials))


_REPLACED = ("/proc", "/sys", "/dev")  # a fresh /proc, a read-only /sys and a minimal /dev in the sandbox
_PSEUDO_FS = frozenset(("proc", "sysfs", "cgroup", "cgroup2", "devpts", "devtmpfs", "debugfs", "tracefs", "securityfs",
                        "pstore", "bpf", "configfs", "fusectl", "binfmt_misc", "mqueue", "hugetlbfs", "autofs",
                        "efivarfs", "selinuxfs", "nsfs", "rpc_pipefs"))
SCAN_BUDGET_S = 10.0

PROBE_SLOT_WAIT_S = 300.0  # other trainers may hold every slot: each frees within a candidate's time limit
_PROBE_PROGRAM = "import collections, fractions, heapq, itertools, math, re\nprint(sum(range(4)))\n"
_PROBE_JOB = {"entry_point": "f", "setup": None, "fail_fast": True, "time_limit": 10.0,
              "tests": [{"args": "[1]", "kwargs": "{}"}]}


def _last_line(data: bytes) -> str:
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _probe(setup: Setup) -> tuple[dict | None, str]:
    """Run a trivial program in both modes: (the child's own report of its isolation, "") when both pass, else
    (None, why not in one line)."""
    limits = Limits(time_limit_s=10.0)
    try:
        with sandbox_slot(setup, time.monotonic() + PROBE_SLOT_WAIT_S) as slot:
            if slot is None:
                return None, (f"no sandbox slot came free within {PROBE_SLOT_WAIT_S:g} s: other processes hold all "
                              f"{slot_count(setup)} of {_slot_dir()}")
            deadline = time.monotonic() + 30.0  # the probe's own time starts once it holds a slot
            run = run_sandbox({"mode": "stdio", "program": _PROBE_PROGRAM}, None, b"", limits, setup, slot, deadline)
            ok = run.setup is not None and run.returncode == 0 and run.stdout.strip() == b"6"
            if ok:  # the tests mode adds the tester's uid: it must be able to run the interpreter too
                program = "def f(x):\n    return x + 1\n"
                tests = run_sandbox({"mode": "tests", "program": program}, _PROBE_JOB, b"", limits, setup, slot,
                                    deadline)
                ok = (tests.returncode == 0 and [line[:2] for line in tests.lines] == [
                    ("setup", "ok"), ("load", "ok"), ("0", "ok"), ("done", "ok")] and tests.lines[2][2] == "2")
                run = run if ok else tests
    except OSError as e:  # the parent's side: a folder, chown to the sandbox uid, starting the interpreter
        return None, f"{type(e).__name__}: {e}"
    if ok:
        return run.setup, ""
    log.debug("sandbox probe failed for %s: rc=%s stderr=%s", setup, run.returncode, run.stderr[-2000:])
    why = "it ran out of time" if run.timed_out else f"exit status {run.returncode}"
    return None, f"{why}: {_last_line(run.stderr)}" if _last_line(run.stderr) else why


SAME_USER_ENV = "SDZERO_SANDBOX_SAME_USER"  # =1: root that cannot switch uids runs candidates as itself


def _unmapped(base: int, count: int) -> str | None:
    """The uids this user namespace maps ("0" in `unshare -r`) when they miss base .. base + count - 1, else None."""
    try:
        with open("/proc/self/uid_map") as f:
            ranges = [tuple(int(x) for x in line.split()) for line in f if line.strip()]
    except (OSError, ValueError):
        return None
    if all(any(inside <= uid < inside + length for inside, _, length in ranges) for uid in (base, base + count - 1)):
        return None
    return ", ".join(f"{inside}" if length == 1 else f"{inside}-{inside + length - 1}" for inside, _, length in ranges)


def _cannot_drop(isolation: Isolation, problems: list[str]) -> str:
    """Why root could not run candidates under the sandbox uids, and what to do, in one line."""
    base, n = isolation.uid_base, 2 * isolation.uid_count
    same_user = (f"or set {SAME_USER_ENV}=1 to run candidates as this process's own user (then a program can read "
                 "and signal the trainer and forge its verdict, as when not root: only for models you trust)")
    mapped = _unmapped(base, n)
    if mapped is not None:
        return (f"the code sandbox cannot start: this process is root in a user namespace that maps only uid(s) "
                f"{mapped} (a rootless container, Singularity --fakeroot, unshare -r), and the sandbox runs each "
                f"candidate and its tester as uids of their own, {base}-{base + n - 1}. Map those uids into the "
                "namespace (rootless podman and docker map a 65536-uid subuid range by default; Singularity: "
                f"--fakeroot with an /etc/subuid entry), or set SDZERO_SANDBOX_UID_BASE to a mapped range of {n} "
                f"uids, {same_user}")
    return (f"the code sandbox cannot start with uids {base}-{base + n - 1} ({'; '.join(problems)}). Make a "
            "Python that those uids can run available (SDZERO_SANDBOX_PYTHON=/usr/bin/python3, or `apt install "
            f"python3`), {same_user}")


def setup_for(isolation: Isolation) -> Setup:
    """Pick the interpreter and uid policy once per Isolation: the first combination whose probe passes. Root
    that cannot run candidates under the sandbox uids never falls back to running them as root: the setup is
    then not working (sandbox_info()["problem"] says why), unless SDZERO_SANDBOX_SAME_USER=1 asks for it."""
    with _SETUP_LOCK:
        if isolation in _SETUPS:
            return _SETUPS[isolation]
        drop = isolation.drop_privileges if isolation.drop_privileges is not None else os.geteuid() == 0
        if drop and os.geteuid() != 0:
            log.warning("sandbox: cannot drop privileges when not root; running candidates as uid %d", os.geteuid())
            drop = False
        hide = _hidden_paths(isolation)
        writable, specials = _writable_places(hide)
        pythons = _python_candidates(isolation)
        tries = [(py, isolation.uid_base if drop else None) for py in pythons]
        same_user = drop and os.environ.get(SAME_USER_ENV, "").strip().lower() in ("1", "true", "yes")
        if same_user:  # asked for: a sandbox without the uid drop beats no reward at all
            tries += [(py, None) for py in pythons]
        chosen, info, problems = None, {}, []
        for python, uid_base in tries:
            candidate = Setup(python, uid_base, isolation.uid_count, isolation.namespaces, hide, writable, specials)
            got, why = _probe(candidate)
            if got is not None:
                chosen, info = candidate, got
                break
            problems.append(f"{python}{'' if uid_base is None else f' as uid {uid_base}'}: {why}")
        if chosen is None:
            problem = (_cannot_drop(isolation, problems) if drop else
                       f"the code sandbox cannot start ({'; '.join(problems)})")
            log.debug("sandbox: %s", problem)  # the caller asks sandbox_problem(); a check logs it (sandbox._check)
            chosen, info = Setup(tries[0][0], tries[0][1], isolation.uid_count, isolation.namespaces, hide,
                                 writable, specials), {"problem": problem}
        elif drop and chosen.uid_base is None:
            log.warning("sandbox: %s=1: candidates run as this process's own user (uid %d), WITHOUT the uid drop",
                        SAME_USER_ENV, os.geteuid())
        _SETUPS[isolation], _SETUP_INFO[isolation] = chosen, info
        return chosen


def sandbox_info(isolation: Isolation | None = None) -> dict:
    """What this machine gives: interpreter, uids, and the isolation the child really got (from a probe)."""
    isolation = isolation or Isolation()
    setup = setup_for(isolation)
    info = dict(_SETUP_INFO.get(isolation) or {})
    base = setup.uid_base
    info.update(python=setup.python, drop_privileges=base is not None, world_writable=list(setup.writable),
                uids=list(range(base, base + 2 * setup.uid_count)) if base is not None else [],
                working="problem" not in info, slots=slot_count(setup))
    return info


def sandbox_problem(isolation: Isolation | None = None) -> str | None:
    """Why no sandbox can run on this machine (one line, with what to do), or None when it works: probed once."""
    return sandbox_info(isolation).get("problem")


def slot_count(setup: Setup) -> int:
    """How many sandboxes may run at once on this machine: one per CPU (more would make correct programs miss
    their time limits), at most uid_count (each slot has its uids)."""
    return max(1, min(setup.uid_count, os.cpu_count() or 1))


@dataclass(frozen=True)
class Slot:
    """A held run slot: its lock, and the candidate's and the tester's uids (None without a privilege drop)."""
    name: str
    fd: int
    uid: int | None
    tester: int | None


class SandboxUnavailable(OSError):
    """The parent cannot set a sandbox up at all (no folder for its slot locks)."""


def _slot_dir() -> str:
    """One folder per user for the whole machine, never under $TMPDIR: every process must find the same locks
    whatever its environment, or two of them would hand out one uid. Root's is in /run, where only root writes."""
    euid, problems = os.geteuid(), []
    for path in (["/run/sdzero-sandbox"] if euid == 0 else []) + [f"/tmp/sdzero-sandbox-{euid}"]:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            st = os.lstat(path)
        except OSError as e:
            problems.append(f"{path}: {e.strerror}")
            continue
        # Someone else's folder (or a symlink) would let them hold or fake our locks.
        if stat.S_ISDIR(st.st_mode) and st.st_uid == euid and not st.st_mode & 0o077:
            return path
        problems.append(f"{path} is not a private folder of uid {euid}")
    raise SandboxUnavailable(f"no folder for the sandbox's slot locks ({'; '.join(problems)})")


class _Slots:
    """Hands out run slots: at most slot_count(setup) sandboxes run at once on the machine, across threads (a set)
    and processes (flock on one file per slot in _slot_dir()). With a privilege drop, the slot is a uid pair: u
    runs the candidate, u + uid_count its tester, so "every process of those uids" is this sandbox only.

    Waiting for a slot spends no candidate's time: its clocks start once it holds one. Waiters poll in a random
    order with a jittered sleep, so no thread or process is served first by rule (several trainers under
    torchrun share the slots)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._rng = random.Random()

    def acquire(self, setup: Setup, deadline: float) -> Slot | None:
        """A free slot, or None when the deadline passes first."""
        folder, count = _slot_dir(), slot_count(setup)
        while True:
            with self._lock:
                first = self._rng.randrange(count)
                for k in range(count):
                    i = (first + k) % count
                    uid = setup.uid_base + i if setup.uid_base is not None else None
                    name = os.path.join(folder, f"uid-{uid}.lock" if uid is not None else f"slot-{i}.lock")
                    if name in self._busy or (fd := self._flock(name)) is None:
                        continue
                    self._busy.add(name)
                    slot = Slot(name, fd, uid, uid + setup.uid_count if uid is not None else None)
                    if os.pread(fd, 32, 0):  # its last holder died holding it: what it started may live on
                        for u in (slot.uid, slot.tester):
                            if u is not None:
                                _kill_uid(u)
                    os.pwrite(fd, str(os.getpid()).encode(), 0)
                    return slot
                wait = self._rng.uniform(0.002, 0.02)
            if time.monotonic() >= deadline:
                return None
            time.sleep(wait)

    @staticmethod
    def _flock(path: str) -> int | None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None  # another process's sandbox holds it
        return fd

    def release(self, slot: Slot) -> None:
        try:
            os.ftruncate(slot.fd, 0)  # given back in order: nothing of it is left to kill
        finally:
            os.close(slot.fd)
            with self._lock:
                self._busy.discard(slot.name)


_SLOTS = _Slots()


@contextlib.contextmanager
def sandbox_slot(setup: Setup, deadline: float):
    """Hold a run slot for one candidate (all its tests): yields the Slot, or None when `deadline` passed while
    waiting for one. SandboxUnavailable (an OSError) when there is no folder for the locks."""
    slot = _SLOTS.acquire(setup, deadline)
    try:
        yield slot
    finally:
        if slot is not None:
            _SLOTS.release(slot)


def _proc_status(pid: str) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return {}


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real, effective, saved or fs uid is `uid`."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        st = _proc_status(pid)
        if str(uid) in st.get("Uid", "").split() and not st.get("State", "").strip().startswith("Z"):
            pids.append(int(pid))
    return pids


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of a sandbox uid, repeatedly, until none is left (a fork loop races the scan)."""
    for _ in range(200):
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.002)
    log.warning("sandbox: processes of uid %d survive SIGKILL", uid)


def _clean_scratch(uid: int, dirs: tuple[str, ...]) -> None:
    """Without a mount namespace the candidate's files in world-writable places are real: delete the ones it owns."""
    for d in dirs:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                if e.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except OSError:
                pass


# ----------------------------------------------------------------------------------------------------------
# Running one sandbox (parent side)


@dataclass
class Run:
    returncode: int | None
    lines: list  # (index, status, payload) of the results file, in order
    stdout: bytes
    stderr: bytes
    timed_out: bool  # the parent's hard deadline passed
    setup: dict | None  # the child's `setup` report; None: the sandbox never got to run the candidate

    def signal(self) -> int | None:
        """The signal that ended the candidate, if any (the harness exits 128 + signal for a killed child)."""
        rc = self.returncode
        if rc is None:
            return None
        if rc < 0:
            return -rc
        return rc - 128 if 128 < rc < 128 + 65 else None


_BOOT = """import builtins, json, os, sys
def _boot():
    with os.fdopen(int(sys.argv[1]), "rb") as f:
        spec = json.loads(f.read())
    g = {"__name__": "sdzero_harness", "__builtins__": dict(builtins.__dict__)}
    exec(spec.pop("harness"), g)
    g["_child_main"](spec, int(sys.argv[2]), int(sys.argv[3]))
_boot()
"""


@functools.lru_cache(maxsize=1)
def _harness_source() -> str:
    """What the child executes: all of sandbox_child.py."""
    return inspect.getsource(sandbox_child)


def _child_env(workdir: str) -> dict[str, str]:
    return {"PATH": CHILD_PATH, "HOME": workdir, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _waitid_exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_exit(pid: int, deadline: float, abort: threading.Event | None = None) -> bool:
    """Wait until the process exits, without reaping it (its pid, our pgid, stays ours); False at the deadline,
    or soon after `abort` is set (another thread was interrupted: check_code_batch)."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while not _waitid_exited(pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (abort is not None and abort.is_set()):
                return False
            if abort is not None:
                remaining = min(remaining, 0.05)
            if pidfd is not None:
                select.select([pidfd], [], [], remaining)
            else:
                time.sleep(min(remaining, 0.005))
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _terminate(proc: subprocess.Popen, uids: tuple, exited: bool) -> None:
    """Kill whatever is left of a sandbox, whatever happened, and reap the harness."""
    if not exited:
        for uid in uids:
            _kill_uid(uid)  # the candidate and all its descendants, the tester; the harness then exits by itself
        try:
            os.kill(proc.pid, signal.SIGTERM)  # the harness kills its child (PID-namespace init) and exits
        except OSError:
            pass
        _wait_exit(proc.pid, time.monotonic() + 2.0)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the harness is not reaped yet, so this pgid cannot be reused
    except OSError:
        pass
    proc.wait()
    for uid in uids:
        _kill_uid(uid)  # stragglers that left the process group


def _read_capped(f, cap: int) -> bytes:
    f.seek(0)
    return f.read(cap)


def _parse_results(data: bytes) -> list:
    return [tuple(parts) for parts in (raw.decode("utf-8", "replace").split(" ", 2) for raw in data.split(b"\n"))
            if len(parts) == 3]


def _write_only(fd: int) -> int:
    """The same file reopened O_WRONLY|O_APPEND: the child's only handle on its results can neither read nor seek."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError:
        dup = os.dup(fd)
        fcntl.fcntl(dup, fcntl.F_SETFL, fcntl.fcntl(dup, fcntl.F_GETFL) | os.O_APPEND)
        return dup


def _setup_report(lines: list) -> dict | None:
    if not lines or lines[0][:2] != ("setup", "ok"):
        return None
    try:
        report = json.loads(lines[0][2])
    except Exception:  # noqa: BLE001 (RecursionError too: never a traceback in the parent)
        return None
    return report if isinstance(report, dict) else None


def run_sandbox(spec: dict, job: dict | None, stdin: bytes, limits: Limits, setup: Setup, slot: Slot,
                deadline: float, abort: threading.Event | None = None) -> Run:
    """Run the harness once in a fresh sandbox, in `slot` (sandbox_slot), until `deadline` at most; returns when it
    has exited and everything it started is dead, and so does an exception that interrupts the wait (Ctrl-C, a
    --reward time limit around check_code, any signal handler that raises): the kill runs whatever happens.

    `spec` (mode, program) is what the whole sandbox may know; `job` (entry point, setup, tests, time limit) goes
    to the tester only, on its own file, read after the candidate's process has been forked.
    """
    uid, tester = slot.uid, slot.tester
    workdir = tempfile.mkdtemp(prefix="sdzero-sbx-")
    try:
        if uid is not None:
            os.chown(workdir, uid, uid)
        spec = dict(spec, harness=_harness_source(), isolate={
            "uid": uid, "tester": tester, "namespaces": setup.namespaces, "hide": list(setup.hide),
            "writable": list(setup.writable), "specials": list(setup.specials), "scratch_mb": limits.scratch_mb,
            "workdir": workdir, "memory_mb": limits.memory_mb, "output_bytes": limits.output_bytes,
            "processes": limits.processes, "open_files": limits.open_files, "parent": os.getpid(),
            "cpu_s": math.ceil(limits.candidate_time_s) + 1})  # the same for every task: it reveals nothing
        with tempfile.TemporaryFile() as spec_f, tempfile.TemporaryFile() as job_f, tempfile.TemporaryFile() as results_f, \
                tempfile.TemporaryFile() as in_f, tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
            spec_f.write(json.dumps(spec).encode())
            spec_f.seek(0)
            job_f.write(json.dumps(job or {}).encode())
            job_f.seek(0)
            in_f.write(stdin)
            in_f.seek(0)
            results_w = _write_only(results_f.fileno())
            fds = (spec_f.fileno(), results_w, job_f.fileno())
            argv = [setup.python, "-I", "-S", "-B", "-X", "utf8", "-c", _BOOT, *map(str, fds)]
            try:
                proc = subprocess.Popen(argv, stdin=in_f, stdout=out_f, stderr=err_f, cwd=workdir, env=_child_env(workdir),
                                        pass_fds=fds, start_new_session=True)
            except OSError as e:
                return Run(None, [], b"", str(e).encode(), False, None)
            finally:
                os.close(results_w)
            exited = False
            try:
                exited = _wait_exit(proc.pid, deadline, abort)
            finally:
                _terminate(proc, tuple(u for u in (uid, tester) if u is not None), exited)
            lines = _parse_results(_read_capped(results_f, limits.output_bytes))
            stdout, stderr = _read_capped(out_f, limits.output_bytes), _read_capped(err_f, 1 << 16)
        setup_info = _setup_report(lines)
        if uid is not None and setup_info is not None and not setup_info.get("mntns"):
            _clean_scratch(uid, ("/tmp", "/var/tmp", "/dev/shm", *setup.writable))
        return Run(proc.returncode, lines, stdout, stderr, not exited, setup_info)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
