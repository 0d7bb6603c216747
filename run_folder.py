"""The run folder through a run's life: --out checked before anything is written (prepare_out), made this run's
under a lock once the data and the model have loaded (RunFolder.claim), a stop by Ctrl-C or SIGTERM that says
what is saved and how to continue (RunFolder.stops_cleanly), and what a run leaves there at its end:
run_config.json, results.json (write_results), the printed table, model/ with its model card (save_model).
Apart from run.py (the resumable run itself); metrics.jsonl and samples.jsonl are run.RunLog's.

    run.lock         the pid and host of the process that runs in the folder, flock'ed while it runs
    run_config.json  every setting, resolved; `--config` it to run again
    results.json     the evaluations, Phase 1 statistics, generations, seconds, data, commit
    model/           save_pretrained weights and tokenizer, README.md (model_card.py) and run_config.json
                     (reproduce_config: the card's command reads it)
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from tqdm import tqdm

import parallel
from atomic import atomic_replace_dir, atomic_write_text
from run import REPO, Run, final_stage


# The run's resolved config. Not config.json: that name is a model's, and from_pretrained on the run folder
# would read it as one. Runs written before the rename are still resumed from OLD_RUN_CONFIG.
RUN_CONFIG, OLD_RUN_CONFIG = "run_config.json", "config.json"
LOCK = "run.lock"
# What a run writes before its first checkpoint (tracking.json, tensorboard/, wandb/: --report-to): a run
# folder holding no more is a start that failed or was stopped, and a plain rerun takes it over.
START_FILES = (LOCK, RUN_CONFIG, "metrics.jsonl", "samples.jsonl", "tracking.json", "tensorboard", "wandb",
               "checkpoint")
# ... and the rest of a run, which --overwrite-output-dir deletes too (other files in the folder stay).
RUN_FILES = START_FILES + ("results.json", "model", "adapter", OLD_RUN_CONFIG)
# What an interrupted write leaves (atomic.py's NAME.tmpPID, model.tmp, adapter.tmp), in the folder or in
# checkpoint/: deleted by the process that holds the lock, since no other process writes there.
LEFTOVER = re.compile(r"(run_config\.json|results\.json|tracking\.json|state\.pt)\.tmp\d+|model\.tmp|adapter\.tmp")


def prepare_out(cfg, d: parallel.Dist, argv: list[str] | None = None) -> None:
    """Check --out before anything is written, on every rank so that every rank stops on a bad one: a place
    where a run folder can be (location_problem, tried by rank 0), no other process's (run.lock), and without
    --resume free or a failed start to take over (check_fresh). RunFolder.claim writes, once the data and the
    model have loaded. Each refusal names the command that works (argv: this run's command line)."""
    out, how = Path(cfg.out), Commands(cfg, argv)
    problem = location_problem(out, how) if d.main else None
    problem = parallel.gather(d, d.world, [d.rank], [problem])[0]  # rank 0's verdict, on every rank
    if problem:
        raise SystemExit(problem)
    holder = lock_holder(out)
    if holder is not None:
        raise SystemExit(held_message(cfg, holder, how))
    ckpt = out / "checkpoint" / "state.pt"
    if cfg.resume and cfg.overwrite_output_dir:
        raise SystemExit("--resume continues the run in --out and --overwrite-output-dir deletes it; choose one: "
                         f"{how(overwrite_output_dir=False)}")
    if cfg.resume and not ckpt.exists():
        raise SystemExit(no_checkpoint(cfg, how))
    if cfg.resume:  # config.parse_args took the run's saved settings and refused flags that change them
        if not any((out / name).is_file() for name in (RUN_CONFIG, OLD_RUN_CONFIG)):
            raise SystemExit(f"--resume: {out} holds a checkpoint but no {RUN_CONFIG}, the settings it resumes "
                             f"with; a new run: {how(resume=False, out=free_folder(out))}")
        return
    check_fresh(cfg, how)


def location_problem(out: Path, how: Commands | None = None) -> str | None:
    """Why no run folder can be at --out, or None: a file on the way, or a place that takes no new folder
    (permissions, a read-only or special file system). Tried for real, with a folder made where out would go
    or a file made in it, and removed at once: permission bits do not tell (root passes them; /sys refuses
    root). With `how`, the refusal names a folder that passes."""
    here = out
    while not os.path.lexists(here):
        here = here.parent
    try:
        if not here.is_dir():
            why = f"{here} is a file, not a folder" if here.is_file() else f"{here} is not a folder"
        elif here == out:
            os.listdir(out)
            fd, probe = tempfile.mkstemp(dir=out, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
            return None
        else:
            os.rmdir(tempfile.mkdtemp(dir=here, prefix=".probe-"))
            return None
    except OSError as e:
        why = f"{here} " + {errno.EROFS: "is on a read-only file system",
                            errno.EACCES: "is not open to this user (permission denied)",
                            errno.EPERM: "takes no new files (operation not permitted)"}.get(
            e.errno, f"cannot hold a run folder ({e.strerror})")
    if how is None:
        return why
    alt = Path("runs") / (out.name or "run")
    alt = free_folder(alt) if os.path.lexists(alt) else alt
    use = f"e.g. {how(out=alt)}" if location_problem(alt) is None else "pass an --out you can write to"
    return f"--out {out}: {why}; nothing was written. Choose a folder you can write to, {use}"


def folder_state(out: Path) -> tuple[str, list[str]]:
    """What --out holds, and the run's files there: "new" (nothing, or a lock alone), "start" (a run stopped
    before its first checkpoint: nothing a rerun needs), "unfinished" (a checkpoint to --resume), "finished"
    (results.json, model/ or adapter/: what a run ends with), or "other" (no run_config.json: files that are no
    run's, all of them listed)."""
    if not out.is_dir():
        return "new", []
    names = sorted(os.listdir(out))
    ours = [n for n in names if n in RUN_FILES or LEFTOVER.fullmatch(n)]
    ckpt = (out / "checkpoint" / "state.pt").exists()
    if RUN_CONFIG not in names and not (OLD_RUN_CONFIG in names and ckpt):  # runs from before the rename
        lone_lock = all(n == LOCK or LEFTOVER.fullmatch(n) for n in names)  # a claim stopped before its config
        return ("new", ours) if lone_lock else ("other", names)
    if {"results.json", "model", "adapter"} & set(names):
        return "finished", ours
    return ("unfinished", ours) if ckpt else ("start", [n for n in ours if n in START_FILES or LEFTOVER.fullmatch(n)])


def check_fresh(cfg, how: Commands) -> None:
    """Without --resume, --out must be free: missing, empty, or a start to take over (claim does). A run there is
    refused unless --overwrite-output-dir; files that are no run's always are."""
    out = Path(cfg.out)
    kind, names = folder_state(out)
    elsewhere = how(out=free_folder(out))
    if kind == "other":
        raise SystemExit(f"--out {out} holds files that are not a run's ({', '.join(names[:4])}"
                         f"{', ...' if len(names) > 4 else ''}; no {RUN_CONFIG}); nothing was changed. Run in a new "
                         f"folder: {elsewhere}")
    if kind in ("new", "start") or cfg.overwrite_output_dir:
        return
    over = how(overwrite_output_dir=True)
    if kind == "finished":
        ended = [f"{out / n}" + "/" * (out / n).is_dir() for n in ("results.json", "model", "adapter") if n in names]
        raise SystemExit(f"--out {out} holds a finished run ({', '.join(ended)}); nothing was changed. Run in a new "
                         f"folder: {elsewhere}; or replace that run: {over}")
    saved = time.strftime("%Y-%m-%d %H:%M", time.localtime((out / "checkpoint" / "state.pt").stat().st_mtime))
    raise SystemExit(f"--out {out} holds an unfinished run (its checkpoint saved {saved}); nothing was changed. "
                     f"Continue it: {how(base=[], resume=True, out=cfg.out)}; run in a new folder: {elsewhere}; "
                     f"or start over in it: {over}")


def no_checkpoint(cfg, how: Commands) -> str:
    """--resume's refusal when --out holds no checkpoint, with the command that runs instead."""
    out = Path(cfg.out)
    kind, _ = folder_state(out)
    if kind == "finished":
        return (f"--resume: the run in {out} finished and kept no checkpoint (--no-keep-checkpoint or --method "
                f"base); its results: {out / 'results.json'}. A new run: {how(resume=False, out=free_folder(out))}")
    if kind == "other":
        return f"--resume: {out} holds no run; a new run: {how(resume=False, out=free_folder(out))}"
    what = "no run" if kind == "new" else "a run stopped before its first checkpoint, which a plain run takes over"
    return f"--resume: no checkpoint in {out} ({what}); start it: {how(resume=False)}"


def free_folder(out: Path) -> Path:
    """The first of out-2, out-3, ... that does not exist: where a run goes that must not go into out."""
    if not out.name:  # --out . or /
        out = Path("runs") / "run"
    m = re.fullmatch(r"(.+)-(\d+)", out.name)
    stem, n = (m[1], int(m[2]) + 1) if m else (out.name, 2)
    while os.path.lexists(out.with_name(f"{stem}-{n}")):
        n += 1
    return out.with_name(f"{stem}-{n}")


# ---------------------------------------------------------------------------------------------- the lock

def lock_holder(out: Path) -> dict | None:
    """Who holds out/run.lock ({"pid", "host", "since"}; {} before it has written them), or None while no
    process does. Read without writing: a shared lock tried and let go at once."""
    try:
        f = open(out / LOCK)
    except OSError:  # no run has claimed the folder (or it cannot be read: prepare_out says so)
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(f.read())
        except OSError:  # a file system without locks: claim says so
            return None
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def _holder(text: str) -> dict:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def held_message(cfg, holder: dict, how: Commands) -> str:
    out, pid, host = Path(cfg.out), holder.get("pid", "?"), holder.get("host", "?")
    kill = f"kill {pid}" + ("" if host == socket.gethostname() else f" on {host}")
    then = (f"wait for it to end (or stop it: {kill}), then run this command again" if cfg.resume
            else f"run in another folder: {how(out=free_folder(out))}")
    return (f"--out {out} is in use by pid {pid} on {host}{' since ' + holder['since'] if 'since' in holder else ''} "
            f"({out / LOCK} is locked): one process per run folder; {then}")


def take_lock(out: Path, cfg, how: Commands):
    """out/run.lock, flock'ed for as long as this process runs, with its pid, host and start written in it.

    What holds where: flock is the lock, and the kernel lets it go when the process ends, however it ends (kill
    -9 too: no stale lock; the file stays). On a local disk it excludes every process of the machine. On NFS,
    Linux turns flock into the server's byte-range locks (NFSv4, or v3 with lockd), which exclude processes on
    every client; a client that dies loses its locks when its lease runs out (NFSv4: about 90 s). A mount
    without server locks (nolock, local_lock=all) keeps them per machine: two machines could then share a
    folder, and the pid and host written here are all that names the other. A file system that takes no
    locks at all gets a note, and the run goes on unlocked. Under torchrun rank 0 alone holds it."""
    f = open(out / LOCK, "a+")
    for _ in range(20):  # another process's check (lock_holder) holds a shared lock for an instant
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.05)
        except OSError as e:
            tqdm.write(f"[note] --out {out}: this file system takes no locks ({e.strerror}); nothing stops a second "
                       "process from running in this folder")
            break
    else:
        f.seek(0)
        holder = _holder(f.read())
        f.close()
        raise SystemExit(held_message(cfg, holder, how))
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
    f.flush()
    return f


def sweep(out: Path) -> None:
    """Delete what interrupted writes left (LEFTOVER); by the lock's holder only, the one process writing here."""
    for folder in (out, out / "checkpoint"):
        for p in folder.iterdir() if folder.is_dir() else ():
            if LEFTOVER.fullmatch(p.name):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- commands

class Commands:
    """This run's command line with some flags set: the command a refusal or a stop names. how() is the command
    as it ran; how(resume=True, out=DIR) drops every spelling of those flags from it (ours, snake_case, TRL's
    --output_dir) and appends them; base=[...] starts from other arguments instead."""
    SPELLINGS = {"out": ("out", "output-dir"), "resume": ("resume",), "overwrite_output_dir": ("overwrite-output-dir",)}

    def __init__(self, cfg, argv: list[str] | None):
        self.cfg, self.argv = cfg, list(argv or ())

    def __call__(self, base: list[str] | None = None, **flags) -> str:
        args, given, skip = [], set(), False
        for a in self.argv if base is None else base:
            if skip:  # the value of a flag dropped
                skip = False
                continue
            name = a[2:].partition("=")[0].replace("_", "-").removeprefix("no-") if a.startswith("--") else ""
            field = next((f for f in flags if name in self.SPELLINGS[f]), None)
            if field is None:
                args.append(a)
                continue
            given.add(field)
            skip = field == "out" and "=" not in a
        for f, v in flags.items():
            flag = "--" + f.replace("_", "-")
            if v is True:
                args.append(flag)
            elif v is False and f not in given and getattr(self.cfg, f):  # on from a --config file
                args.append("--no-" + flag[2:])
            elif not isinstance(v, bool):
                args += [flag, str(v)]
        return shlex.join(launcher() + args)


def launcher() -> list[str]:
    """How train.py was started: python train.py (the path from here), or under torchrun the agent's own command
    up to the script, read from /proc (`torchrun ...` where it cannot be read)."""
    script = os.path.relpath(REPO / "train.py")
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return ["python", script]
    try:
        agent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")[:-1]
        cwd = os.readlink(f"/proc/{os.getppid()}/cwd")
        i = next(i for i, a in enumerate(agent) if os.path.realpath(os.path.join(cwd, a)) == str(REPO / "train.py"))
    except (OSError, UnicodeDecodeError, StopIteration):
        return ["torchrun", "...", script]
    head = agent[:i]
    if len(head) > 1 and Path(head[1]).name == "torchrun":  # python .../bin/torchrun: the console script
        head = ["torchrun", *head[2:]]
    elif head and Path(head[0]).name.startswith("python"):
        head = ["python", *head[1:]]
    return head + [script]


# ---------------------------------------------------------------------------------------------- the run's life

class RunFolder:
    """--out while this process runs in it: claimed (the lock, a takeover, run_config.json) once the data and
    the model have loaded; what a stop prints; what the run's end does to it. Rank 0 holds the lock and prints;
    every rank calls every method."""

    def __init__(self, cfg, argv: list[str] | None):
        self.cfg, self.out, self.argv, self.how = cfg, Path(cfg.out), argv, Commands(cfg, argv)
        self.main = int(os.environ.get("RANK", "0")) == 0  # parallel.init's rank, known before the job is joined
        self.lock = None  # rank 0's open run.lock, while it holds it
        self.run: Run | None = None  # once the folder is the run's
        self.finished = False  # results.json and model/ are written

    def claim(self, d: parallel.Dist, run: Run) -> None:
        """Make --out this run's (rank 0, once every rank has loaded the data and the model): create it, take the
        lock, start over in it when it holds a failed start (or a run, with --overwrite-output-dir: one printed
        line either way), delete what interrupted writes left, write run_config.json. Every rank stops together
        on a problem."""
        d.barrier()  # every rank has checked --out (prepare_out) before rank 0 changes it
        problem = None
        if d.main:
            try:
                self._claim()
            except SystemExit as e:
                problem = str(e.code)
            except OSError as e:  # the disk filled, the folder went away, ... since prepare_out looked
                problem = f"--out {self.out}: cannot write the run folder ({e})"
        problem = parallel.gather(d, d.world, [d.rank], [problem])[0]
        if problem:
            raise SystemExit(problem)
        self.run = run

    def _claim(self) -> None:
        cfg, out = self.cfg, self.out
        out.mkdir(parents=True, exist_ok=True)
        self.lock = take_lock(out, cfg, self.how)
        if not cfg.resume:
            check_fresh(cfg, self.how)  # again, under the lock: another process may have used the folder since
        sweep(out)
        if cfg.resume:
            return
        kind, names = folder_state(out)
        names = [n for n in names if n != LOCK]
        if names:
            why = ("--overwrite-output-dir" if kind in ("finished", "unfinished")
                   else "the run there stopped before its first checkpoint")
            tqdm.write(f"--out {out}: {why}; starting over in it (deleted: {', '.join(names)})")
            for n in names:
                shutil.rmtree(out / n) if (out / n).is_dir() else (out / n).unlink()
        # --overwrite-output-dir acts on the folder, once: a run's settings never hold it (--config, --resume)
        atomic_write_text(out / RUN_CONFIG, json.dumps({**dataclasses.asdict(cfg), "overwrite_output_dir": False},
                                                       indent=2))

    def finish(self, d: parallel.Dist) -> None:
        """The run's end, results.json and model/ written: without --keep-checkpoint the checkpoint goes."""
        self.finished = True
        if d.main and not self.cfg.keep_checkpoint:
            shutil.rmtree(self.out / "checkpoint", ignore_errors=True)

    def release(self) -> None:
        """At the end of the process, however it ends (rank 0): what interrupted writes left deleted, then the
        lock let go (the kernel would at exit; a caller of train.main may run again in this process)."""
        if self.lock is not None:
            sweep(self.out)
            self.lock.close()
            self.lock = None

    def last_line(self) -> str:
        """What a finished run prints last: its folder and what is in it."""
        names = [n + "/" * (self.out / n).is_dir() for n in ("results.json", "model", "adapter", "metrics.jsonl",
                                                             "samples.jsonl", "checkpoint") if (self.out / n).exists()]
        base = " (--method base evaluates --model: no model/ or checkpoint/)" if self.cfg.method == "base" else ""
        return f"Run folder {self.out}: {', '.join(names)}{base}"

    @contextlib.contextmanager
    def stops_cleanly(self):
        """SIGINT (Ctrl-C) and SIGTERM (what schedulers send) stop the run as a KeyboardInterrupt in the main
        thread, so every write in progress unwinds (atomic.py deletes its temporary file, the last checkpoint
        stays whole; release deletes the rest). Then one line on rank 0 says what is saved and the command that
        continues, and the process exits with 128 + the signal (130, 143), without a traceback. A second signal
        is ignored while the first unwinds (kill -9 still ends it: the lock and the checkpoint survive that).
        Under torchrun the agent passes the signal on to every rank; an error that follows it (a peer gone
        from a collective) is the same stop."""
        received = []

        def on_signal(signum, frame):
            if not received:
                received.append(signum)
                raise KeyboardInterrupt

        main_thread = threading.current_thread() is threading.main_thread()  # signal.signal works there only
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}
        try:
            yield
        except BaseException as e:
            if not (received or isinstance(e, KeyboardInterrupt)):
                raise
            signum = received[0] if received else signal.SIGINT
            if self.main:
                tqdm.write(self.stop_line(signum), file=sys.stderr)  # on a line of its own, below any bar
            raise SystemExit(128 + signum) from None
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def stop_line(self, signum: int) -> str:
        sig = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
        run, out = self.run, self.out
        if run is None:
            return f"Stopped by {sig} while the data and the model loaded; run it again: {self.how()}"
        if self.finished:
            return f"Stopped by {sig} after the run finished: {out / 'results.json'} and {out / 'model'} are written."
        where = run.state.stage + (f" after step {run.state.step}" if run.state.step else "")
        if run.saved is None:
            none = ("--method base keeps no checkpoint" if self.cfg.method == "base"
                    else "before its first checkpoint")
            return f"Stopped by {sig} in {where}, {none}; the same command starts it over in {out}: {self.how()}"
        stage, step = run.saved
        at = "at the end of training" if stage == "done" else f"after {stage} step {step}" if step else \
            f"at the start of {stage}"
        return (f"Stopped by {sig} in {where}; saved: the checkpoint {at} ({out / 'checkpoint'}). Continue with: "
                f"{self.how(resume=True, out=self.cfg.out, overwrite_output_dir=False)}")


def git_commit() -> str | None:
    """The commit of this code (with -dirty for local changes), so a result names what produced it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) or None


def write_results(run: Run, t_start: float, commit: str | None) -> dict:
    cfg, res, state = run.cfg, run.state.results, run.state
    last = final_stage(cfg.method)
    results = {
        "method": cfg.method, "task": cfg.task, "model": cfg.model, "seed": cfg.seed,
        "base_accuracy": res["eval_base"]["avg@k"],
        "srt_accuracy": res["eval_srt"]["avg@k"] if "eval_srt" in res else None,
        "final_accuracy": res[last]["avg@k"], "eval": res, "phase1": state.p1_stats,
        "baseline": state.method_stats,
        "budget": cfg.budget or None, "generations": state.generations,
        "generations_by": state.generations_by, "seconds": sum(state.seconds.values()),
        "seconds_per_stage": state.seconds, "wall_seconds_this_process": time.time() - t_start,
        "commit": commit, "torch": torch.__version__, "device": str(run.device), "world_size": run.dist.world,
        "parallel": run.dist.strategy,
        "data": {"sources": run.data.sources, "skipped": run.data.skipped},
    }
    if "extra" in res["eval_base"] and "extra" in res[last]:
        results["extra"] = {"dataset": cfg.eval_extra, "base_accuracy": res["eval_base"]["extra"]["avg@k"],
                            "final_accuracy": res[last]["extra"]["avg@k"],
                            "n_questions": res["eval_base"]["extra"]["n_questions"]}
    atomic_write_text(run.out / "results.json", json.dumps(results, indent=2))
    return results


FINAL_LABELS = {"sdzero": "after Phase 2 (SD-Zero)", "rft": "after RFT", "grpo": "after GRPO",
                "p2only": "after Phase 2, no SRT", "opsd": "after OPSD", "sdpo": "after SDPO"}


def stage_labels(method: str) -> tuple[tuple[str, str, str], ...]:
    """(stage, label, short name) of the evaluations a run of `method` reports: the printed table's rows and
    the model card's."""
    return (("eval_base", "base", "base"), ("eval_srt", "after Phase 1 (SRT)", "SRT"),
            ("eval_final", FINAL_LABELS.get(method), method))


def print_table(results: dict) -> None:
    ev = results["eval"]
    k = ev["eval_base"]["k"]
    stages = stage_labels(results["method"])
    print(f"\n{'model':<24}{'avg@' + str(k):>10}{'pass@' + str(k):>10}{'length':>9}")
    for name, label, _ in stages:
        if name in ev:
            e = ev[name]
            print(f"{label:<24}{e['avg@k']:>10.3f}{e['pass@k']:>10.3f}{e['response_len']:>9.1f}")
    for name, _, short in stages:
        if "extra" in ev.get(name, {}):
            e = ev[name]["extra"]
            print(f"{(e['dataset'] + ' ' + short)[:24]:<24}{e['avg@k']:>10.3f}{e['pass@k']:>10.3f}"
                  f"{e['response_len']:>9.1f}   ({e['n_questions']} questions)")
    by = ", ".join(f"{kind} {n}" for kind, n in results["generations_by"].items())
    print(f"\n{results['generations']} training generations{' (' + by + ')' if by else ''}"
          f"{', budget ' + str(results['budget']) if results['budget'] else ''}, {results['seconds']:.0f} s; "
          f"held-out: {ev['eval_base']['n_questions']} questions")


def reproduce_config(cfg: dict) -> dict:
    """The config that runs a finished run again (model/run_config.json, the model card's): the run's, with
    `resume` and `overwrite_output_dir` off (a resumed run's config has the one on; the other would let a second
    reproduction delete the first) and the paths inside this checkout relative to its root (the smoke preset's
    model), so that `python train.py --config ...` reads them from any checkout's root."""
    def portable(value):
        if isinstance(value, str) and Path(value).is_absolute() and Path(value).is_relative_to(REPO):
            return str(Path(value).relative_to(REPO))
        return value
    return {**{k: portable(v) for k, v in cfg.items()}, "resume": False, "overwrite_output_dir": False}


def save_model(run: Run, card: str | None = None) -> None:
    """The final model as a Hugging Face folder with its model card (README.md; model_card.py) and the config
    its reproduce command reads (run_config.json: reproduce_config), written atomically by rank 0 (full weights
    under FSDP2)."""
    model = run.student.model
    state = parallel.model_state(model, run.dist)  # collective under FSDP
    if not run.dist.main:
        return
    if run.dist.strategy == "fsdp":  # a plain copy to save: the sharded model's parameters are DTensors
        from transformers import AutoModelForCausalLM  # heavy; sdzero.load_model has loaded it already
        plain = AutoModelForCausalLM.from_config(model.config, dtype=next(iter(state.values())).dtype)
        plain.load_state_dict(state)
        plain.generation_config = model.generation_config
        model = plain
    model_dir, tmp = run.out / "model", run.out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    run.tok.save_pretrained(tmp)
    if card is not None:  # with the config its reproduce command reads
        (tmp / "README.md").write_text(card, encoding="utf-8")
        (tmp / RUN_CONFIG).write_text(json.dumps(reproduce_config(dataclasses.asdict(run.cfg)), indent=2))
    atomic_replace_dir(tmp, model_dir)

