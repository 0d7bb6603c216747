"""What the bench scripts share: one training run per folder, and the provenance of a result.

`run_train` runs train.py once per run folder, so a bench that stops (killed, out of time) can be called
again and only the missing work runs: a finished run with the same flags is reused, an interrupted one is
resumed, and a folder holding another command's run is refused, never mixed into a table or overwritten.
Each run's flags are kept in `<folder>.cmd.json` beside its folder (train.py wants an empty --out).
`commit()` (run_folder.git_commit) and `machine()` name the code and the hardware that produced a result.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(REPO / "train.py")]
# The repository first on sys.path, ahead of bench/ (a bench script's own folder): run.py's `import verify` must
# find the top-level verify.py, not bench/verify.py.
if str(REPO) in sys.path:
    sys.path.remove(str(REPO))
sys.path.insert(0, str(REPO))
from run_folder import git_commit as commit  # noqa: E402, F401  (one copy: the commit train.py writes in results.json)


def marker_path(out: Path) -> Path:
    """Where the flags of the run in `out` are kept: beside it, `<out>.cmd.json`."""
    return out.with_name(out.name + ".cmd.json")


def run_train(out: Path, flags: list[str], log: Path | None = None, program: list[str] | None = None) -> Path:
    """`program *flags --out out` (program: train.py by default), unless the run is there already.

    - `out/results.json` exists and the marker holds `flags`: reused, nothing runs.
    - `out/checkpoint/state.pt` exists and the marker holds `flags`: resumed, `--resume` appended.
    - `out` exists with neither and the marker holds `flags`: stopped before its first checkpoint, so
      nothing there is worth keeping; removed and started afresh.
    - `out` exists and the marker is missing or holds other flags: SystemExit naming the folder and both
      commands. Nothing is changed.
    - `out` does not exist: a fresh run.
    The marker is written atomically before the program starts. The program's output is appended to `log`,
    or goes to this process's stdout and stderr without one; a failure raises SystemExit with its exit
    status. Returns `out`, which then holds results.json.
    """
    out = Path(out)
    marker = marker_path(out)
    if out.exists():
        if not marker.exists():
            raise SystemExit(f"{out}: holds files but no {marker.name}, so the command that made them is unknown; "
                             "remove the folder, choose another --runs, or write its train.py flags there as a "
                             "JSON list")
        saved = json.loads(marker.read_text())
        if saved != flags:
            raise SystemExit(f"{out}: holds a run of another command ({marker});\n  there: {' '.join(saved)}\n"
                             f"  now:   {' '.join(flags)}\nremove the folder or choose another --runs")
        if (out / "results.json").exists():
            print(f"{out}: finished earlier with the same command, reused", file=sys.stderr)
            return out
    resume = (out / "checkpoint" / "state.pt").exists()
    if out.exists() and not resume:
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(flags))
    os.replace(tmp, marker)
    cmd = [*(program or TRAIN), *flags, "--out", str(out), *(["--resume"] if resume else [])]
    print(f"{out}: {'resuming' if resume else 'running'} {' '.join(flags)}", file=sys.stderr)
    if log is None:
        proc = subprocess.run(cmd, check=False)
    else:
        with open(log, "a") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode:
        raise SystemExit(f"{out}: the run failed (exit {proc.returncode})" + (f"; see {log}" if log else ""))
    if not (out / "results.json").exists():
        raise SystemExit(f"{out}: the run exited without writing results.json")
    return out


def machine() -> str:
    """Architecture, CPU model and core count, e.g. "x86_64, AMD EPYC, 2 cores"."""
    model = platform.processor() or "?"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"{platform.machine()}, {model}, {os.cpu_count()} cores"
