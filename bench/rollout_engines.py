"""--rollout-engine own vs vllm on this machine, side by side: Phase 1 sampling and a Phase 2 step on the
embedded SmolLM2, each engine in its own process (vLLM changes process-wide state), alternating, medians.

    python bench/rollout_engines.py                      # both shapes, 3 rounds -> results/rollout_engines.json
    python bench/rollout_engines.py --rounds 1 --shapes demo

Needs vllm (README, vLLM rollouts). Shapes:
  demo  the demo's: Phase 1 sampling is 64 few-shot arithmetic questions (the demo's prompts), up to 48 new
        tokens at temperature 0.7, stopping at the end of turn; the Phase 2 step is train.py's (--method
        p2only, the demo's batch of 16, 48 tokens), timed per step by its metrics rows
  long  answers of varied length up to 512 new tokens: Phase 1 sampling is 32 prompts asking for lists of 3 to
        96 items; the Phase 2 step is the demo's at --max-new-tokens 512 without the worked examples
        (--no-fewshot: the model then explains at length)
vLLM's engine build (once per run) is timed apart. Sampling is tokens/s over the responses' tokens; the Phase 2
step is the median of steps 2-3 (step 1 holds vLLM's first weight sync too), with its generation share.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import data  # noqa: E402
import revise  # noqa: E402
import sdzero  # noqa: E402
import tasks  # noqa: E402
import train  # noqa: E402
import vllm_engine  # noqa: E402
from bench.common import machine  # noqa: E402
from run_folder import git_commit  # noqa: E402

SHAPES = {"demo": dict(rows=64, new=48), "long": dict(rows=32, new=512)}


def prompts_for(tok, shape: str) -> list[list[int]]:
    if shape == "demo":  # the demo's N1 questions (seed 0) as its Phase 1 prompts: few-shot, the r=0 phrase shown
        rows = data.load_task("math", "embedded", 64, 0, 1, seed=0)["n1"]
        msgs = [tasks.prompt_messages(ex.question, True, revise.CONTROL_PHRASES["paper"][0], task="math")
                for ex in rows]
    else:
        things = ["animals", "colors", "countries", "fruits", "verbs", "cities", "numbers in words", "tools"]
        msgs = [[{"role": "user", "content": f"List {3 + 3 * i} {things[i % len(things)]}, one per line."}]
                for i in range(32)]
    return [sdzero.chat_prompt_ids(tok, m) for m in msgs]


def sampling(engine_name: str, shape: str) -> dict:
    """One Phase 1 sampling call: tokens/s (and vLLM's build time apart)."""
    model, tok = sdzero.load_model("smollm2-135m", device=torch.device("cpu"))
    prompts, new = prompts_for(tok, shape), SHAPES[shape]["new"]
    kw = dict(max_new_tokens=new, temperature=0.7, top_p=1.0, top_k=0, stop_ids=sdzero.end_of_turn_ids(tok, model),
              stop_strings=None)
    seeds = list(range(len(prompts)))
    out = {}
    if engine_name == "vllm":
        engine = vllm_engine.Engine(str(sdzero.embedded_model_dir("smollm2-135m")), dtype=torch.float32,
                                    device=torch.device("cpu"), seed=0, rows=64, row_tokens=2 * new + 512,
                                    max_model_len=4096 + new, gpu_memory=0.3, sleep=False, distributed=False,
                                    config=model.config)
        t0 = time.perf_counter()
        engine.build()
        out["build_s"] = time.perf_counter() - t0
        engine.generate(tok, prompts[:2], seeds[:2], model=model, **dict(kw, max_new_tokens=2))  # first sync

        def call():
            return engine.generate(tok, prompts, seeds, model=model, **kw)
    else:
        def call():
            return sdzero.generate(model, tok, prompts, seeds=seeds, batch_size=64, **kw)
    t0 = time.perf_counter()
    ys = call()
    out["seconds"] = time.perf_counter() - t0
    lens = [len(y.response_ids) for y in ys]
    out.update(tokens=sum(lens), tokens_per_s=sum(lens) / out["seconds"], len_min=min(lens), len_max=max(lens),
               len_mean=statistics.mean(lens))
    return out


def phase2(engine_name: str, shape: str) -> dict:
    """train.py --method p2only, 3 steps of the demo's Phase 2 (16 rollouts a step): its metrics rows."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        train.main(["--method", "p2only", "--rollout-engine", engine_name, "--n1", "1", "--n2", "48",
                    "--n-eval", "1", "--p2-steps", "3", "--max-new-tokens", str(SHAPES[shape]["new"]),
                    "--out", str(out), "--no-keep-checkpoint", *(["--no-fewshot"] if shape == "long" else [])])
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    p2 = [r for r in rows if r["phase"] == "p2"]
    steps = [r["sec_generate"] + r["sec_teacher"] + r["sec_student"] for r in p2]
    return {"step_s": statistics.median(steps[1:]), "generate_s": statistics.median(r["sec_generate"] for r in p2[1:]),
            "first_step_s": steps[0], "response_len": statistics.mean(r["response_len"] for r in p2)}


def worker(engine_name: str, shape: str, part: str) -> None:
    print(json.dumps((sampling if part == "sampling" else phase2)(engine_name, shape)))


def measure(engine_name: str, shape: str) -> dict:
    """Both parts, each in a fresh process (one vLLM engine per process)."""
    res = {}
    for part in ("sampling", "phase2"):
        proc = subprocess.run([sys.executable, __file__, "--worker", engine_name, shape, part], cwd=REPO,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{engine_name} {shape} {part} failed:\n{proc.stderr[-3000:]}")
        res[part] = json.loads(proc.stdout.strip().splitlines()[-1])
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--out", default=str(REPO / "results" / "rollout_engines.json"))
    p.add_argument("--worker", nargs=3, metavar=("ENGINE", "SHAPE", "PART"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(*a.worker)
    vllm_engine.import_vllm()  # one line if it is missing, before any measurement
    runs: dict = {s: {"own": [], "vllm": []} for s in a.shapes}
    for r in range(a.rounds):
        for shape in a.shapes:
            for engine_name in (("own", "vllm") if r % 2 == 0 else ("vllm", "own")):
                res = measure(engine_name, shape)
                runs[shape][engine_name].append(res)
                print(f"round {r + 1} {shape} {engine_name}: {res['sampling']['tokens_per_s']:.1f} tokens/s sampling, "
                      f"Phase 2 step {res['phase2']['step_s']:.1f} s", flush=True)
    summary = {}
    for shape, by in runs.items():
        med = {e: {"tokens_per_s": statistics.median(x["sampling"]["tokens_per_s"] for x in v),
                   "p2_step_s": statistics.median(x["phase2"]["step_s"] for x in v),
                   "p2_generate_s": statistics.median(x["phase2"]["generate_s"] for x in v)} for e, v in by.items()}
        med["vllm"]["build_s"] = statistics.median(x["sampling"]["build_s"] for x in by["vllm"])
        med["sampling_speedup"] = med["vllm"]["tokens_per_s"] / med["own"]["tokens_per_s"]
        med["p2_step_speedup"] = med["own"]["p2_step_s"] / med["vllm"]["p2_step_s"]
        summary[shape] = med
    result = {"commit": git_commit(), "machine": machine(), "torch": torch.__version__,
              "vllm": vllm_engine.import_vllm().__version__, "rounds": a.rounds, "summary": summary, "runs": runs}
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return result


if __name__ == "__main__":
    main()
