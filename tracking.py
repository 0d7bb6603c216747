"""--report-to: metrics.jsonl's rows mirrored to TensorBoard, Weights & Biases and/or Trackio.

Each backend is optional and imported only when asked for. A row {"phase": "p2", "step": 3, "loss": 0.5, ...}
becomes the scalar "p2/loss" at step 3; an eval row's prefix is "eval/<stage>" ("eval/eval_base", or "eval/p2"
for an evaluation inside Phase 2, at that phase's step), "eval/<stage>/extra" for the --eval-extra set (as in
results.json). A row without "step" is point 0, 1, 2, ... of its prefix. Numbers only (no bools, no NaN/inf);
a nested dict (eval's "revise") gives "prefix/key/sub".

One accuracy curve across the stages: every held-out evaluation (stage ends and --eval-every points) is also the
point "eval/avg@k" and "eval/pass@k" at x = the run's training generations so far (its "generations", the
--budget's unit, the paper's x axis), so Phase 1, Phase 2 and the baselines draw one line and runs of different
methods compare at equal generations. The --eval-every points of SRT and RFT fine-tuning stay off it (only on
eval/p1, eval/rft): those stages train on samples drawn before them, so all their points would sit at the x of
the evaluation after the stage, and TensorBoard keeps only the last record at a step. On the curve x grows
strictly.

Resume: RunLog truncates metrics.jsonl to the checkpoint and calls rewind() with the rows it keeps. TensorBoard
is then rebuilt from those rows (its event files deleted and written again), so a resumed run's event files
hold what an uninterrupted run's do. Not purge_step: TensorBoard purges every tag from one step on, and each
phase here counts its own steps from 1. wandb and Trackio keep what they were sent (not rewound here): the rows
logged after the checkpoint are sent again, at the same steps.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import secrets
from pathlib import Path

from atomic import atomic_write_text

BACKENDS = ("wandb", "tensorboard", "trackio")  # each also the name of its pip package
CURVE = "eval/generations"  # the x of the one accuracy curve, eval/avg@k and eval/pass@k
CURVE_KEYS = ("avg@k", "pass@k")
# Stages that fine-tune on samples drawn before them (Phase 1's SRT, its two-stage revision SFT, RFT): their
# --eval-every points share one number of generations with the evaluation after the stage.
DRAWN_BEFORE = ("p1", "p1_rev", "rft")


def parse_report_to(spec: str) -> tuple[str, ...]:
    """"none" or "" -> (); "tensorboard,wandb" -> ("tensorboard", "wandb") (order kept, duplicates dropped)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if "none" in names:
        if len(names) > 1:
            raise SystemExit(f"--report-to {spec}: 'none' cannot be combined with a backend")
        return ()
    for n in names:
        if n not in BACKENDS:
            raise SystemExit(f"--report-to: unknown backend {n!r}; choose none or any of {', '.join(BACKENDS)} "
                             "(comma-separated)")
    return tuple(dict.fromkeys(names))


def not_installed(backend: str) -> SystemExit:
    return SystemExit(f"--report-to {backend}: the {backend} package is not installed (pip install {backend})")


def check_installed(report_to: tuple[str, ...]) -> None:
    """With the config check, on every rank: a missing package stops the run before the model loads (Trackers
    imports it on rank 0 only, later)."""
    for backend in report_to:
        if importlib.util.find_spec(backend) is None:
            raise not_installed(backend)


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def scalars(row: dict) -> dict[str, float]:
    """The row's numbers by key ("step" excluded), a nested dict flattened one level as "key/sub"."""
    out = {}
    for k, v in row.items():
        if k == "step":
            continue
        if isinstance(v, dict):
            out.update({f"{k}/{s}": u for s, u in v.items() if number(u)})
        elif number(v):
            out[k] = v
    return out


class Trackers:
    def __init__(self, report_to: tuple[str, ...], project: str, out: Path, name: str, config: dict,
                 resume: bool):
        self.report_to, self.out, self.config = tuple(report_to), Path(out), config
        self.counters: dict[str, int] = {}  # prefix -> the next step of a row without one
        self.defined: set[str] = set()  # the prefixes wandb has an x-axis for
        self.tb = self.wandb = self.trackio = None
        state_path = self.out / "tracking.json"  # the wandb id and Trackio run name, for --resume
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        for backend in self.report_to:
            mod = self._import(backend)
            try:
                if backend == "tensorboard":
                    self.writer_class = mod
                    self.tb = self._tb_writer(config_text=not resume)
                elif backend == "wandb":
                    state.setdefault("wandb_id", secrets.token_hex(8))  # random: two runs named alike stay apart
                    self.wandb = mod.init(project=project, name=name, config=config, dir=str(self.out),
                                          id=state["wandb_id"], resume="allow")
                else:
                    resuming = resume and "trackio_name" in state
                    run = mod.init(project=project, name=state.get("trackio_name", name), config=config,
                                   resume="allow" if resuming else "never")
                    state["trackio_name"] = run.name  # "never" renames a run whose name is taken
                    self.trackio = mod
            except Exception as e:
                raise SystemExit(f"--report-to {backend}: could not start it: {type(e).__name__}: {e}") from e
        if state:
            atomic_write_text(state_path, json.dumps(state, indent=2))

    @staticmethod
    def _import(backend: str):
        try:
            if backend == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter
                return SummaryWriter
            return importlib.import_module(backend)
        except ImportError:
            raise not_installed(backend) from None

    def _tb_writer(self, config_text: bool):
        writer = self.writer_class(log_dir=str(self.out / "tensorboard"))
        if config_text:
            writer.add_text("config", "```json\n" + json.dumps(self.config, indent=2, default=str) + "\n```", 0)
            writer.flush()
        return writer

    def _point(self, row: dict) -> tuple[str, int, dict[str, float]]:
        prefix = str(row["phase"])
        if prefix == "eval":  # --eval-extra's row (it names its dataset) apart from the held-out set's
            prefix = f"eval/{row['stage']}" + ("/extra" if "dataset" in row else "")
        if "step" in row:
            step = int(row["step"])
        else:
            step = self.counters.get(prefix, 0)
            self.counters[prefix] = step + 1
        return prefix, step, {f"{prefix}/{k}": v for k, v in scalars(row).items()}

    @staticmethod
    def _curve(row: dict) -> tuple[int, dict[str, float]] | None:
        """The row's point on the one accuracy curve: (generations, {"eval/avg@k": ..., "eval/pass@k": ...}), or
        None: not a held-out evaluation (a training row, or --eval-extra's set), no generations (a row of a run
        from before them), or a point inside a stage that trains on samples drawn before it."""
        if (row.get("phase") != "eval" or "dataset" in row or not number(row.get("generations"))
                or ("step" in row and row.get("stage") in DRAWN_BEFORE)):
            return None
        values = {f"eval/{k}": row[k] for k in CURVE_KEYS if number(row.get(k))}
        return (int(row["generations"]), values) if values else None

    def log(self, row: dict) -> None:
        if not self.report_to:
            return
        prefix, step, values = self._point(row)
        curve = self._curve(row)
        if self.tb is not None:
            self._tb_add(step, values)
            if curve:
                self._tb_add(*curve)
        if self.wandb is not None:
            if prefix not in self.defined:  # each prefix on its own x-axis: the phases count steps from 1
                self.wandb.define_metric(f"{prefix}/step")
                self.wandb.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")
                self.defined.add(prefix)
            if curve and CURVE not in self.defined:
                self.wandb.define_metric(CURVE)
                for k in CURVE_KEYS:
                    self.wandb.define_metric(f"eval/{k}", step_metric=CURVE)
                self.defined.add(CURVE)
            self.wandb.log({**values, f"{prefix}/step": step, **({**curve[1], CURVE: curve[0]} if curve else {})})
        if self.trackio is not None:
            self.trackio.log(values, step=step)
            if curve:
                self.trackio.log(curve[1], step=curve[0])

    def _tb_add(self, step: int, values: dict[str, float]) -> None:
        for tag, v in values.items():
            self.tb.add_scalar(tag, v, step)
        self.tb.flush()  # a killed run keeps its rows

    def rewind(self, rows: list[dict]) -> None:
        """After a resume truncated metrics.jsonl: `rows` are what it keeps. The per-prefix counters restart
        from them, and TensorBoard is rewritten from them alone."""
        self.counters = {}
        points = [p for r in rows for p in [self._point(r)[1:], self._curve(r)] if p]
        if self.tb is not None:
            self.tb.close()
            for f in (self.out / "tensorboard").glob("events.out.tfevents.*"):
                f.unlink()
            self.tb = self._tb_writer(config_text=True)
            for step, values in points:
                self._tb_add(step, values)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.trackio is not None:
            self.trackio.finish()
        self.tb = self.wandb = self.trackio = None
