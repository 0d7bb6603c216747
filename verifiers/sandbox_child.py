"""The code that runs inside the sandbox (its child side), kept apart so that sandbox.py and sandbox_runner.py read
as the parent.

Its source is shipped to the child and executed there in a private globals dict (`sandbox_runner._harness_source`):
it is never imported into the candidate's interpreter, uses the standard library only and keeps no module-level
state. Three processes matter (see verifiers/sandbox.py's docstring): O sets up the isolation as root; T, the tester,
holds the results file and the tests; D, the candidate, runs the program and answers T's requests. Nothing D
sends is taken as fact except its first message, written before the program exists. `_encode` is shared with
the parent, which encodes expected values the same way.
"""
import ast
import builtins
import ctypes
import json
import os
import re
import resource
import signal
import sys
import time


def _encode(value, depth=0):
    """A JSON-able copy of a plain value: tuples -> lists; dicts, sets, bytes tagged; anything else a marker.

    Runs in the child too (its source is shipped): exact type checks, so no candidate method ever runs.
    """
    t = type(value)
    if value is None or t is bool or t is int or t is str:
        return value
    if t is float:
        return value
    if depth > 100:
        return {"__unplain__": "too deep"}
    if t is list or t is tuple:
        return [_encode(v, depth + 1) for v in value]
    if t is dict:
        return {"__dict__": [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in value.items()]}
    if t is set or t is frozenset:
        return {"__set__": [_encode(v, depth + 1) for v in value]}
    if t is bytes:
        return {"__bytes__": value.hex()}
    return {"__unplain__": t.__name__}


def _child_main(spec, results_fd, job_fd):
    """Runs in O (as root when the parent is root). Returns only in D, the candidate's process."""
    iso = spec["isolate"]
    info, libc, root = _child_isolate(iso)  # returns in the runner: D for stdio, T for tests, still privileged
    if spec["mode"] == "stdio":
        os.close(job_fd)
        _child_limit_and_drop(iso, libc, root, iso["uid"])
        if iso["uid"] is not None:  # what an earlier run of this uid left in the kernel's keyrings
            _child_clear_keys(libc)
        info["uid"] = os.getuid()
        os.write(results_fd, ("setup ok " + json.dumps(info) + "\n").encode())
        os.close(results_fd)  # before the program runs: it never holds a handle on its results
        _child_stdio(spec["program"])
    else:
        _child_tester(spec["program"], iso, libc, root, info, results_fd, job_fd)


def _child_isolate(iso):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: setuid binaries stay inert
    # PR_SET_PDEATHSIG: the trainer killed (the OOM killer, a scheduler) -> O dies -> C dies -> the namespace
    # dies. It fires when the parent's thread that started O ends: that thread waits for O (run_sandbox).
    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != iso["parent"]:  # the parent died before the line above: nobody waits for a verdict
        os._exit(1)
    root = os.geteuid() == 0
    got = {"netns": False, "mntns": False, "pidns": False, "ipcns": False, "userns": False, "hidden": []}
    if iso["namespaces"]:
        got.update(_child_unshare(libc, root))
    if got["mntns"]:
        mounted = _child_mounts(libc, iso)
        got["mntns"] = mounted is not None
        got.update(mounted or {})
    signal.signal(signal.SIGTERM, lambda *_: (_child_kill_children(), os._exit(143)))  # the parent's stop
    if got["pidns"]:
        c = os.fork()  # C becomes PID 1 of the new PID namespace
        if c:
            os._exit(_child_exit_code(os.waitpid(c, 0)[1]))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: O killed -> C dies -> the namespace dies
        if got["mntns"] and libc.unshare(0x20000) == 0:  # own mount ns, so O keeps the host's /proc
            libc.mount(b"proc", b"/proc", b"proc", 2 | 4 | 8, None)
    else:
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: D's orphans come back to us
    r = os.fork()
    if r:  # C (or O): once the runner exits, nothing of the candidate may run, then its uid's keyrings go
        status = _child_reap_until(r)
        _child_kill_children(init=got["pidns"])
        _child_forget(iso, libc)
        os._exit(_child_exit_code(status))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    got["python"] = sys.executable
    return got, libc, root


def _child_unshare(libc, root):
    newns, newnet, newpid, newipc, newuser = 0x20000, 0x40000000, 0x20000000, 0x08000000, 0x10000000
    if not root:  # a user namespace gives an unprivileged user its own network, PID and IPC namespaces
        ok = libc.unshare(newuser | newnet | newpid | newipc) == 0
        return {"userns": ok, "netns": ok, "pidns": ok, "ipcns": ok}
    if libc.unshare(newns | newnet | newpid | newipc) == 0:
        return {"mntns": True, "netns": True, "pidns": True, "ipcns": True}
    return {name: libc.unshare(flag) == 0
            for name, flag in (("mntns", newns), ("netns", newnet), ("pidns", newpid), ("ipcns", newipc))}


def _child_within(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def _child_mounts(libc, iso):
    """The candidate's view of the files: every mount read-only, the parent's files hidden, a minimal /dev, a
    private tmpfs over every world-writable directory found at setup and over the work directory, /dev/null
    over world-writable sockets and FIFOs, and last an empty mount over / itself. What it did, or None if /
    could not be made private (then nothing is mounted)."""
    rdonly, nosuid, nodev, noexec, bind, rec, private = 1, 2, 4, 8, 4096, 16384, 1 << 18
    if libc.mount(b"none", b"/", None, rec | private, None) != 0:
        return None  # without a private /, our mounts would propagate to the host
    workdir, uid, mb = iso["workdir"], iso["uid"], iso["scratch_mb"]
    done = {"writable_mounts": _child_read_only(libc), "hidden": [], "scratch": []}
    keep = [os.path.dirname(os.__file__), os.path.realpath(sys.executable), sys.base_prefix, sys.exec_prefix]
    for path in iso["hide"]:
        if (os.path.isdir(path) and not any(_child_within(k, path) for k in keep + [workdir])
                and libc.mount(b"tmpfs", path.encode(), b"tmpfs", rdonly | nosuid | nodev | noexec, b"size=4k,mode=000") == 0):
            done["hidden"].append(path)
    done["dev"] = _child_dev(libc)
    for path in ["/dev/shm", *iso["writable"]]:
        if (os.path.isdir(path) and not any(_child_within(k, path) for k in keep)
                and libc.mount(b"tmpfs", path.encode(), b"tmpfs", nosuid | nodev, f"size={mb}m,mode=1777".encode()) == 0):
            done["scratch"].append(path)
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    if libc.mount(b"tmpfs", workdir.encode(), b"tmpfs", nosuid | nodev, f"size={mb}m,mode=700{owner}".encode()) == 0:
        os.chdir(workdir)
    for path in iso["specials"]:  # a socket or FIFO is reachable on a read-only mount: a host service listens
        libc.mount(b"/dev/null", path.encode(), None, bind, None)
    # Every process keeps its root on the mount below, so the namespace's root no longer is any process's root:
    # the kernel then refuses CLONE_NEWUSER ("chrooted"), which is what would let the candidate undo any of this.
    done["userns_blocked"] = libc.mount(b"tmpfs", b"/", b"tmpfs", rdonly | nosuid | nodev | noexec, b"size=4k,mode=000") == 0
    return done


def _child_read_only(libc):
    """Remount every mount read-only; the mount points still writable after that (none, normally). A remount
    replaces the mount's flags, so its nosuid/nodev/noexec/atime ones are passed again, or they would be lost."""
    flags_of = {b"nosuid": 2, b"nodev": 4, b"noexec": 8, b"noatime": 1024, b"nodiratime": 2048, b"relatime": 1 << 21,
                b"nosymfollow": 256}
    points = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
            flags = 32 | 4096 | 1  # MS_REMOUNT | MS_BIND | MS_RDONLY
            for option in fields[5].split(b","):
                flags |= flags_of.get(option, 0)
            libc.mount(None, point, None, flags, None)
            points.append(point)
    writable = []
    for point in dict.fromkeys(points):
        try:
            if not os.statvfs(point).f_flag & os.ST_RDONLY:
                writable.append(os.fsdecode(point))
        except OSError:
            pass
    return writable


def _child_dev(libc):
    """A fresh /dev holding only null, zero, full, random, urandom and tty (bind mounts of the host's nodes),
    the usual /proc/self/fd links and an empty shm: no GPU, fuse, kvm, tun, log socket or kmsg."""
    nodes = {}
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        try:
            nodes[name] = os.open("/dev/" + name, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            pass
    ok = libc.mount(b"tmpfs", b"/dev", b"tmpfs", 2 | 8, b"size=64k,mode=755") == 0  # nosuid, noexec
    for name, fd in nodes.items():
        if ok:
            os.close(os.open("/dev/" + name, os.O_CREAT | os.O_WRONLY, 0o666))
            ok = libc.mount(f"/proc/self/fd/{fd}".encode(), ("/dev/" + name).encode(), None, 4096, None) == 0
        os.close(fd)
    if ok:
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                             ("stderr", "/proc/self/fd/2")):
            os.symlink(target, "/dev/" + name)
        os.mkdir("/dev/shm")
    return ok


def _child_exit_code(status):
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _child_reap_until(pid):
    """Reap children (orphans adopted meanwhile too) until `pid` exits; its wait status."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if reaped == pid:
            return status


def _child_kill_children(init=False):
    """SIGKILL and reap every child of this process, again and again while orphans keep being adopted. init: C,
    PID 1 of the sandbox's PID namespace, where kill(-1) reaches exactly that namespace (not root, C has no /proc
    of its own: the host's shows its children under other pids)."""
    me = str(os.getpid())
    for _ in range(10000):
        if init:
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:  # ESRCH: nothing left but C
                pass
        else:
            for pid in os.listdir("/proc"):
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[1] == me:
                            os.kill(int(pid), signal.SIGKILL)
                except (OSError, IndexError, ValueError):
                    pass
        try:
            os.waitpid(-1, 0)
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return


def _child_limit_and_drop(iso, libc, root, uid):
    """rlimits, then the drop to `uid` (None: none), then prove it cannot be undone."""
    parent, processes = os.getppid(), iso["processes"]
    if not root:  # RLIMIT_NPROC counts all processes of the user: leave room for the ones it already has
        processes += sum(1 for p in os.listdir("/proc") if p.isdigit() and os.stat(f"/proc/{p}").st_uid == os.getuid())
    mb = 1 << 20
    for res, soft, hard in ((resource.RLIMIT_AS, iso["memory_mb"] * mb, iso["memory_mb"] * mb),
                            (resource.RLIMIT_CPU, iso["cpu_s"], iso["cpu_s"] + 1),
                            (resource.RLIMIT_FSIZE, iso["output_bytes"], iso["output_bytes"]),
                            (resource.RLIMIT_NOFILE, iso["open_files"], iso["open_files"]),
                            (resource.RLIMIT_CORE, 0, 0),
                            (resource.RLIMIT_NPROC, processes, processes)):
        resource.setrlimit(res, (soft, hard))
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            os._exit(70)
        if os.getresuid() != (uid, uid, uid) or os.getgroups():
            os._exit(70)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no ptrace or /proc/<pid>/mem, fd, environ from other processes
    # A uid change clears the parent-death signal: set again, the candidate and tester die with the harness
    # without a PID namespace too (the candidate's own children: their CPU limit and the uid sweep end them).
    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(70)


def _child_clear_keys(libc):
    """Empty this uid's kernel keyrings (user, user-session, persistent). They outlive its processes and are
    shared by every run of the uid: without this a candidate could leave state for the next one. A uid the
    kernel holds no key for is left alone: even looking its user keyring up would create it."""
    nr = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "ppc64le": 271, "s390x": 280}.get(os.uname().machine)
    try:
        with open("/proc/key-users") as f:
            held = any(line.split(":")[0].strip() == str(os.getuid()) for line in f)
    except OSError:
        held = True
    if nr is None or not held:
        return
    long = ctypes.c_long
    for keyring in (-4, -5):  # KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING
        libc.syscall(long(nr), long(7), long(keyring))  # KEYCTL_CLEAR
    persistent = libc.syscall(long(nr), long(22), long(-1), long(-2))  # KEYCTL_GET_PERSISTENT
    if persistent > 0:
        libc.syscall(long(nr), long(21), long(persistent))  # KEYCTL_INVALIDATE


def _child_forget(iso, libc):
    """After the run, as the candidate's uid: clear what the kernel keeps per uid (its keyrings)."""
    if iso["uid"] is None:
        return
    pid = os.fork()
    if pid == 0:
        try:
            _child_limit_and_drop(dict(iso, processes=iso["processes"] + 1), libc, True, iso["uid"])
            _child_clear_keys(libc)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _child_stdio(program):
    sys.argv = ["candidate.py"]
    code = compile(program, "candidate.py", "exec")
    exec(code, {"__name__": "__main__", "__builtins__": builtins})  # noqa: S102 (running it is the point)


def _child_tester(program, iso, libc, root, info, results_fd, job_fd):
    """T: fork D, then read the tests (so they never exist in D's memory), drop to the tester uid and run them,
    talking to D over two pipes. T alone holds the results file. Never returns."""
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    d = os.fork()
    if d == 0:
        for fd in (results_fd, job_fd, req_w, rep_r):
            os.close(fd)
        _child_limit_and_drop(iso, libc, root, iso["uid"])
        if iso["uid"] is not None:
            _child_clear_keys(libc)
        _child_candidate(program, req_r, rep_w, dict(info, uid=os.getuid()), iso["output_bytes"])
    os.close(req_r)
    os.close(rep_w)
    with os.fdopen(job_fd, "rb") as f:
        job = json.loads(f.read())
    _child_limit_and_drop(iso, libc, root, iso["tester"])
    signal.signal(signal.SIGALRM, signal.default_int_handler)  # T's own timer: D never sees it
    limit, ep, setup = job["time_limit"], job["entry_point"], job["setup"]
    ask, read = _child_rpc(req_w, rep_r, iso["output_bytes"], d)

    def report(index, status, payload="null"):
        os.write(results_fd, f"{index} {status} {payload}\n".encode())

    first = read()
    if type(first) is not list or len(first) != 2 or first[0] != "setup" or type(first[1]) is not dict:
        os._exit(1)
    report("setup", "ok", json.dumps(first[1]))
    status, value = _child_attempt(lambda: _child_loaded(read()), limit)
    report("load", status, json.dumps(value))
    if status != "ok":
        os._exit(0)
    entry = _child_entry(ask, ep)
    for i, test in enumerate(job["tests"]):
        source = None  # a raw test's file name: its failures say which of its lines they went through
        if "code" in test:
            source = f"<test {i}>"
            run = lambda src=test["code"], name=source: _child_raw_test(src, name, setup, ep, entry, ask)
        else:
            if "args" in test:
                args, kwargs = json.loads(test["args"]), json.loads(test["kwargs"])
            else:
                args, kwargs = ast.literal_eval(test["args_literal"]), ast.literal_eval(test["kwargs_literal"])
            run = lambda a=args, k=kwargs: _encode(entry(*a, **k))
        status, value = _child_attempt(run, limit, source)
        report(i, status, json.dumps(value))
        if status == "timeout" or (status != "ok" and job["fail_fast"]):
            os._exit(0)  # after a timeout D is still busy with that call
    report("done", "ok")
    os._exit(0)


def _child_loaded(message):
    if message == ["load", "ok"]:
        return None
    if message == ["load", "syntax"]:
        raise SyntaxError("the program does not compile in the sandbox")
    ok = type(message) is list and len(message) == 3 and message[:2] == ["load", "error"] and type(message[2]) is str
    raise _ChildFailure(message[2][:_CHILD_TEXT_CHARS] if ok else "")  # D's "Name: message": only ever text


def _child_raw_test(src, name, setup, ep, entry, ask):
    """A raw test in T: the trusted setup first, then the names the test uses that neither setup nor the builtins
    define, as the candidate has them (functions and classes as _ChildRemote, data as fresh copies, modules as
    T's own import), the entry point last. T's modules and builtins are its own: no candidate code ever ran here."""
    g = {"__name__": "tests", "__builtins__": builtins}
    if setup:
        exec(compile(setup, "<setup>", "exec"), g)  # noqa: S102 (trusted: the task's own source)
    code = compile(src, name, "exec")
    for free in sorted({n.id for n in ast.walk(ast.parse(src)) if type(n) is ast.Name} - set(g) - set(vars(builtins))):
        if free != ep:
            try:
                g[free] = ask(["name", free])
            except NameError:
                pass
    g[ep] = entry
    exec(code, g)  # noqa: S102


def _child_entry(ask, ep):
    """The entry point as T calls it: every return value is fresh plain data; anything else (an object of the
    candidate's, data nested over 100 deep) raises TypeError, so it is the candidate's runtime_error."""
    found = []

    def call(*args, **kwargs):
        if not found:
            found.append(ask(["name", ep]))
        if type(found[0]) is not _ChildRemote:
            raise TypeError(f"{ep} is not a function")
        return found[0]._sdzero_call(args, kwargs, strict=True)
    return call


class _ChildRemote:
    """An object of the candidate's as T sees it: it can be called, its attributes read, and it can be passed back
    to the candidate; nothing else (no ==, no truth value), so no method of the candidate's ever decides a test."""
    __slots__ = ("_sdzero_id", "_sdzero_ask")

    def __init__(self, ident, ask):
        self._sdzero_id, self._sdzero_ask = ident, ask

    def _sdzero_call(self, args, kwargs, strict=False):
        return self._sdzero_ask(["call", self._sdzero_id, _child_wire(list(args), _child_ref_of),
                                 _child_wire(dict(kwargs), _child_ref_of)], strict)

    def __call__(self, *args, **kwargs):
        return self._sdzero_call(args, kwargs)

    def __getattr__(self, name):
        if name[:2] == "__":
            raise AttributeError(name)
        return self._sdzero_ask(["attr", self._sdzero_id, name])

    def _sdzero_refuse(self, *args):
        raise TypeError("an object of the candidate's cannot be compared or tested for truth")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = _sdzero_refuse
    __hash__ = object.__hash__

    def __repr__(self):
        return "<object of the candidate's>"


def _child_ref_of(obj):
    if type(obj) is _ChildRemote:
        return obj._sdzero_id
    raise TypeError(f"the sandbox cannot pass a {type(obj).__name__} to the candidate")


def _child_rpc(req_fd, rep_fd, cap, pid):
    """T's end of the pipes: read() is D's next message, ask(request) sends one request and decodes the reply."""
    read_line = _child_reader(rep_fd, cap)

    def read():
        line = read_line()
        if line is None:
            raise _child_gone(pid)
        return json.loads(line)

    def ask(request, strict=False):
        try:
            _child_send(req_fd, json.dumps(request))
        except BrokenPipeError:
            raise _child_gone(pid) from None
        reply = read()
        if type(reply) is list and len(reply) == 2 and reply[0] == "value":
            return _child_unwire(reply[1], None if strict else lambda ident: _ChildRemote(ident, ask))
        if type(reply) is list and len(reply) == 3 and reply[0] == "raise" and type(reply[1]) is str \
                and type(reply[2]) is str:
            raise _child_exception(reply[1], reply[2])
        if reply == ["missing"]:
            raise NameError(request[1])
        raise ValueError("malformed reply from the candidate")
    return ask, read


def _child_gone(pid):
    """D closed its end: killed by the CPU limit is a timeout (KeyboardInterrupt, as T's timer), else an error."""
    for _ in range(50):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            break
        if done:
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
                return KeyboardInterrupt()
            break
        time.sleep(0.002)
    return EOFError("the candidate's process ended")


class _ChildFailure(RuntimeError):
    """A failure of the candidate's that T knows only as text ("Name: message"): an exception of a class that is
    not a builtin one, or the program's exception at load time. A RuntimeError, as tests see it."""


_CHILD_TEXT_CHARS = 200  # an exception's message in a result line's payload


def _child_exception(name, message):
    """The exception D reported, raised in T: the builtin Exception of that name, else a _ChildFailure (never a
    BaseException such as KeyboardInterrupt, which T uses for its own timer)."""
    cls = vars(builtins).get(name)
    if type(cls) is type and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:  # noqa: BLE001 (an exception class that wants other arguments)
            pass
    return _ChildFailure(f"{name}: {message}" if message else name)


def _child_error_text(e):
    """"Name: message" for an exception (the message cut to _CHILD_TEXT_CHARS), the name alone when it has no
    message or str() fails. In D, str() is the candidate's code: whatever it gives is only ever text."""
    if type(e) is _ChildFailure:
        try:
            return str(e)[:_CHILD_TEXT_CHARS]
        except BaseException:  # noqa: BLE001
            return ""
    name = type(e).__name__
    name = name[:100] if type(name) is str else "Exception"
    try:
        message = str(e)
    except BaseException:  # noqa: BLE001 (a __str__ that raises)
        message = ""
    return f"{name}: {message[:_CHILD_TEXT_CHARS]}" if type(message) is str and message else name


def _child_line_in(e, source):
    """The last line of the code compiled as `source` that the exception's traceback went through, or None."""
    line, tb = None, e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == source:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _child_attempt(call, limit, source=None, _setitimer=signal.setitimer, _real=signal.ITIMER_REAL):
    """(status, value): ok (the call's value) / fail (AssertionError) / timeout (SIGALRM) / syntax / error (any
    other exception). On a failure the value is the exception's text (_child_error_text; None for a timeout),
    or, for a raw test (`source`: the file name its code was compiled with), [text, line]: the line of the
    test's source where it failed (None when the traceback never went through it)."""
    try:
        _setitimer(_real, limit)
        try:
            value = call()
        finally:
            _setitimer(_real, 0)
    except BaseException as e:  # noqa: BLE001 (SystemExit too: exiting is not passing)
        if isinstance(e, AssertionError):
            status = "fail"
        elif isinstance(e, KeyboardInterrupt):
            status = "timeout"
        elif isinstance(e, SyntaxError):
            status = "syntax"
        else:
            status = "error"
        text = None if status == "timeout" else _child_error_text(e)
        return status, text if source is None else [text, _child_line_in(e, source)]
    return "ok", value


def _child_candidate(program, req_fd, rep_fd, info, cap):
    """D: send the setup report, run the program, then answer T's requests (a name, an attribute, a call) until T
    closes the pipe. Never returns. Everything here is the candidate's to change once its code runs: T treats
    every later message as the candidate's answer, which it is."""
    pid, objects = os.getpid(), []

    def ref(obj):
        objects.append(obj)
        return len(objects) - 1

    def describe(value):
        try:
            return json.dumps(["value", _child_wire(value, ref)])
        except (ValueError, RecursionError):  # an int too long for JSON
            return json.dumps(["value", {"r": ref(value)}])

    _child_send(rep_fd, json.dumps(["setup", info]))
    ns = {"__name__": "candidate", "__builtins__": builtins}
    try:
        exec(compile(program, "candidate.py", "exec"), ns)  # noqa: S102 (running it is the point)
        loaded = ["load", "ok"]
    except SyntaxError:
        loaded = ["load", "syntax"]
    except BaseException as e:  # noqa: BLE001
        loaded = ["load", "error", _child_error_text(e)]
    read = _child_reader(req_fd, cap)
    while True:
        if os.getpid() != pid:  # a forked copy of the candidate never answers
            os._exit(1)
        if loaded:
            _child_send(rep_fd, json.dumps(loaded))
            loaded = None
        line = read()
        if line is None:
            os._exit(0)
        op, *rest = json.loads(line)
        try:
            if op == "name":
                text = describe(ns[rest[0]]) if rest[0] in ns else '["missing"]'
            elif op == "attr":
                text = describe(getattr(objects[rest[0]], rest[1]))
            else:
                args, kwargs = (_child_unwire(w, objects.__getitem__) for w in rest[1:3])
                text = describe(objects[rest[0]](*args, **kwargs))
        except BaseException as e:  # noqa: BLE001
            try:
                message = str(e)[:1000]
            except BaseException:  # noqa: BLE001
                message = ""
            text = json.dumps(["raise", type(e).__name__, message if type(message) is str else ""])
        if os.getpid() != pid:
            os._exit(1)
        _child_send(rep_fd, text)


def _child_reader(fd, cap):
    """A function returning the next line read from fd (None at EOF); a line over cap bytes raises."""
    buf = bytearray()

    def read_line():
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end >= 0:
                line = bytes(buf[:end])
                del buf[:end + 1]
                return line
            if len(buf) > cap:
                raise ValueError("message over the output limit")
            start = len(buf)
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            buf.extend(chunk)
    return read_line


def _child_send(fd, text):
    data = memoryview((text + "\n").encode())
    while data:
        data = data[os.write(fd, data):]


def _child_stdlib(_names=getattr(sys, "stdlib_module_names", ())):
    """Modules T imports when D says a name is one: the standard library's, less the two with side effects."""
    return _names - {"antigravity", "this"} if _names else {"math", "random", "string", "re", "collections",
                                                            "itertools", "functools", "heapq", "bisect", "copy"}


def _child_wire(value, ref, depth=0):
    """A JSON-able copy of a value that keeps every plain type exactly (tuple, set, frozenset, dict, bytes,
    complex tagged); anything else, and anything nested over 100 deep, becomes {"r": ref(value)}. Exact type
    checks, so no method of the value's ever runs."""
    t = type(value)
    if value is None or t is bool or t is int or t is float or t is str:
        return value
    if depth < 100:
        if t is list:
            return [_child_wire(v, ref, depth + 1) for v in value]
        if t is tuple or t is set or t is frozenset:
            return {{tuple: "t", set: "s", frozenset: "f"}[t]: [_child_wire(v, ref, depth + 1) for v in value]}
        if t is dict:
            return {"d": [[_child_wire(k, ref, depth + 1), _child_wire(v, ref, depth + 1)] for k, v in value.items()]}
        if t is bytes:
            return {"b": value.hex()}
        if t is complex:
            return {"c": [value.real, value.imag]}
        if t is type(sys) and type(value.__name__) is str:
            return {"m": value.__name__}
    return {"r": ref(value)}


def _child_unwire(w, obj_of, depth=0):
    """The value _child_wire encoded, as fresh objects; {"r": i} is obj_of(i), and a TypeError when obj_of is None
    (modules too: T imports its own copy). Anything malformed raises ValueError."""
    t = type(w)
    if w is None or t is bool or t is int or t is float or t is str:
        return w
    if depth > 100:
        raise ValueError("nested too deeply")
    if t is list:
        return [_child_unwire(v, obj_of, depth + 1) for v in w]
    if t is dict and len(w) == 1:
        (tag, v), = w.items()
        if tag in ("r", "m") and obj_of is None:
            raise TypeError("the entry point returned a value that is not plain data")
        if tag == "r" and type(v) is int:
            return obj_of(v)
        if tag == "m" and type(v) is str and v.split(".")[0] in _child_stdlib():
            __import__(v)
            return sys.modules[v]
        if tag == "b" and type(v) is str:
            return bytes.fromhex(v)
        if tag == "c" and type(v) is list and len(v) == 2 and all(type(x) in (int, float) for x in v):
            return complex(v[0], v[1])
        if tag == "d" and type(v) is list and all(type(p) is list and len(p) == 2 for p in v):
            return {_child_unwire(k, obj_of, depth + 1): _child_unwire(x, obj_of, depth + 1) for k, x in v}
        if tag in ("t", "s", "f") and type(v) is list:
            return {"t": tuple, "s": set, "f": frozenset}[tag](_child_unwire(x, obj_of, depth + 1) for x in v)
    raise ValueError("malformed value")
