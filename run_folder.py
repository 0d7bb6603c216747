"""The run folder: the check of --out before a run (prepare_out), and what a run leaves there at its end:
run_config.json, results.json (write_results), the printed table, model/ with its model card (save_model).
Apart from run.py (the resumable run itself); metrics.jsonl and samples.jsonl are run.RunLog's.

    run_config.json  every setting, resolved; `--config` it to run again
    results.json     the evaluations, Phase 1 statistics, generations, seconds, data, commit
    model/           save_pretrained weights and tokenizer, and README.md (model_card.py)
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
from pathlib import Path

import torch

import parallel
from atomic import atomic_replace_dir, atomic_write_text
from run import REPO, Run, final_stage


RESUME_MAY_CHANGE = ("resume", "threads", "parallel", "report_to", "project")
# The run's resolved config. Not config.json: that name is a model's, and from_pretrained on the run folder
# would read it as one. Runs written before the rename are still resumed from OLD_RUN_CONFIG.
RUN_CONFIG, OLD_RUN_CONFIG = "run_config.json", "config.json"


def prepare_out(cfg, d: parallel.Dist) -> None:
    """Check --out (every rank reads, so every rank stops on a bad one), then rank 0 creates it."""
    out = Path(cfg.out)
    ckpt = out / "checkpoint" / "state.pt"
    if cfg.resume:
        if not ckpt.exists():
            raise SystemExit(f"--resume: no checkpoint at {ckpt}; start without --resume")
        path = out / RUN_CONFIG if (out / RUN_CONFIG).exists() else out / OLD_RUN_CONFIG
        saved = json.loads(path.read_text())
        defaults = dataclasses.asdict(type(cfg)())  # a setting newer than the run counts as its default
        differ = {k: (saved.get(k), v) for k, v in dataclasses.asdict(cfg).items()
                  if k not in RESUME_MAY_CHANGE and saved.get(k, defaults[k]) != v}
        if differ:
            raise SystemExit(f"--resume: these settings differ from the run in {out}: "
                             + ", ".join(f"{k} (saved {a!r}, now {b!r})" for k, (a, b) in differ.items()))
        return
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"--out {out}: the folder already holds files (another run?); pass --resume to continue "
                         "that run or choose a new --out. Nothing was changed.")
    d.barrier()  # every rank has looked before rank 0 writes
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / RUN_CONFIG, json.dumps(dataclasses.asdict(cfg), indent=2))
    d.barrier()


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


def save_model(run: Run, card: str | None = None) -> None:
    """The final model as a Hugging Face folder with its model card (README.md; model_card.py), written
    atomically by rank 0 (full weights under FSDP2)."""
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
    if card is not None:
        (tmp / "README.md").write_text(card, encoding="utf-8")
    atomic_replace_dir(tmp, model_dir)

