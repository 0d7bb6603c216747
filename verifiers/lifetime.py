"""Worker processes that die with the process that started them: the --reward workers (plugin.py) and the sympy
worker (sympy_worker.py) call `die_with_parent` first thing. (The code sandbox's harness does the same inside
its own source, sandbox_child.py, which imports nothing of ours.)

A worker busy in a C call holds the GIL, so no thread of its own can notice that its parent is gone: a trainer
killed by the OOM killer or a scheduler would leave it spinning until the call returns. The kernel's
parent-death signal (PR_SET_PDEATHSIG) reaches it whatever it is doing. Linux sends it when the *thread* that
started the worker ends, not the process: the starters replace a worker whose starting thread has ended
(Reward._run, sympy_worker._ask_once).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """SIGKILL for this process when `parent` ends, whatever this process is doing; no core dumps (RLIMIT_CORE 0:
    a worker killed by its CPU limit leaves nothing behind either). Exits at once if `parent` is already gone."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        armed = prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if not armed:  # not Linux: a thread that polls, which a C call holding the GIL starves
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    elif os.getppid() != parent:  # it ended before the prctl: no signal will come
        os._exit(0)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:  # re-parented: the parent is gone
        time.sleep(1.0)
    os._exit(0)
