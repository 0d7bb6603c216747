"""Files written so that a crash at any point leaves the old file (or folder) or the whole new one, never a
part: a temporary file, fsync, rename, and the folder fsynced so the rename is durable. The run folder's
checkpoint, config, results, model and adapter are written through these (run.py).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import sys
from pathlib import Path

import torch


def atomic_torch_save(obj, path: Path) -> None:
    """Write to a temporary file, fsync, rename: a crash leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with _removed_on_error(tmp):
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """The same for a text file (config.json, results.json): a reader sees the old file or the whole new one."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with _removed_on_error(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def _removed_on_error(tmp: Path):
    """The temporary file deleted when its writing stops half-way (an error, Ctrl-C or SIGTERM: run_folder.py
    turns both into KeyboardInterrupt), so an interrupted save leaves the previous file and nothing beside it."""
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_path(path: Path) -> None:
    """fsync one file (or folder) by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (POSIX; a no-op where directories cannot be opened, as on Windows)."""
    try:
        fsync_path(path)
    except OSError:
        pass


def atomic_replace_dir(tmp: Path, dst: Path) -> None:
    """Put the finished folder tmp at dst with no moment where dst is missing: on Linux one renameat2 swaps
    the two (RENAME_EXCHANGE) and the old one is deleted after; elsewhere the old one is renamed aside first
    (a short window). Files are fsynced before the swap, so a crash leaves the old folder or the new one."""
    for f in tmp.rglob("*"):
        if f.is_file():
            fsync_path(f)
    if not dst.exists():
        os.replace(tmp, dst)
    elif not _rename_exchange(tmp, dst):
        old = dst.with_name(dst.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(tmp, dst)
        tmp = old
    fsync_dir(dst.parent)
    shutil.rmtree(tmp, ignore_errors=True)  # after an exchange tmp holds the old folder


def _rename_exchange(a: Path, b: Path) -> bool:
    """renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE); False where the OS or libc lacks it."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
