"""One resumable training run: what train.py's algorithm runs on, kept off its reading path.

    RunState     what a checkpoint holds of the run's progress (a dataclass: its fields are the list)
    Run          the config, data, weights (the student; the teacher or reference), sampling + verifying,
                 checkpoints, the generation budget's count
    train_loop   the one loop every training stage runs: its optimizer, steps, logs and checkpoints
    EpochCursor  the one seeded order over a dataset: a fresh permutation per pass, indexed by position
    RunLog       metrics.jsonl, samples.jsonl and the --report-to trackers (the rest of the run folder:
                 run_folder.py)

Nothing is lost: every file is written atomically (a temporary file, fsync, rename), and a checkpoint holds
the RNG state and the logs' sizes, so a run killed at any point resumes where it stopped and equals an
uninterrupted one bit for bit (tests/test_train.py).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

import data
import lora
import parallel
import revise
import sdzero
import tasks
import teacher_context
import tracking
import verify
import vllm_engine
from atomic import atomic_replace_dir, atomic_torch_save
from verifiers import plugin

REPO = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------- utilities

def derive_seed(*keys) -> int:
    """A 63-bit seed from (run seed, stage, step, index): rollouts do not depend on batching or resumes."""
    return int.from_bytes(hashlib.sha256(repr(keys).encode()).digest()[:8], "little") >> 1


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def split_stops(tok, spec: str) -> tuple[set[int], list[str] | None]:
    """--p1-stop "a,b,...": the ids of those that are special tokens (matched as tokens: decoding drops them
    from the text) and the rest as text stop strings."""
    added = tok.get_added_vocab()
    stops = [x for x in spec.split(",") if x]
    return {added[x] for x in stops if x in added}, [x for x in stops if x not in added] or None


def loggable(answer):
    """What samples.jsonl shows of a gold answer: the string (math), or a code task without its hidden tests."""
    if isinstance(answer, dict):
        return {"kind": answer.get("kind"), "entry_point": answer.get("entry_point"),
                "tests": len(answer.get("tests") or ())}
    return answer


def verdict_fields(verdict, prefix: str = "") -> dict:
    """What samples.jsonl shows of a verdict beside its r: the reason and the answer (math) or program (code)
    that was checked; never `detail`, which quotes a code task's hidden tests."""
    return {f"{prefix}reason": verdict.reason, f"{prefix}extracted": verdict.extracted}


def fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def mean(xs) -> float | None:
    """The mean of a list; None for an empty one (not NaN: metrics.jsonl stays strict JSON)."""
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


class RunLog:
    """metrics.jsonl (one object per step), samples.jsonl, the --report-to trackers (tracking.py), one printed
    line per step. Under torchrun only rank 0 logs (main=False: every call is a no-op)."""

    def __init__(self, cfg, out: Path, main: bool = True):
        self.main = main
        if not main:
            return
        self.metrics = open(out / "metrics.jsonl", "a")
        self.samples = open(out / "samples.jsonl", "a")
        self.trackers = tracking.Trackers(tracking.parse_report_to(cfg.report_to), cfg.project, out, out.name,
                                          dataclasses.asdict(cfg), cfg.resume)

    def step(self, row: dict, line: str | None = None) -> None:
        if not self.main:
            return
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()
        self.trackers.log(row)
        if line:
            tqdm.write(line)

    def sample(self, row: dict) -> None:
        if not self.main:
            return
        self.samples.write(json.dumps(row) + "\n")
        self.samples.flush()

    def sizes(self) -> dict | None:
        """Bytes written so far, stored in each checkpoint, so a resume can drop what came after it."""
        return {"metrics": self.metrics.tell(), "samples": self.samples.tell()} if self.main else None

    def truncate(self, sizes: dict | None) -> None:
        """Back to what the checkpoint covers: a resumed run's logs then equal an uninterrupted run's (the
        files are in append mode, so the next row goes at the new end)."""
        if self.main and sizes:
            for f, n in ((self.metrics, sizes["metrics"]), (self.samples, sizes["samples"])):
                f.flush()
                os.truncate(f.name, n)
                f.seek(0, os.SEEK_END)  # tell() must see the new end
            with open(self.metrics.name) as f:  # the trackers too: TensorBoard is rewritten from the rows kept
                self.trackers.rewind([json.loads(line) for line in f if line.strip()])

    def close(self) -> None:
        """At the run's end (not in a finally: a crashed run stays marked unfinished in the trackers)."""
        if self.main:
            self.trackers.close()
            self.metrics.close()
            self.samples.close()


# ------------------------------------------------------------------------------ stages, state, data order

# The stages of each method, in order; a checkpoint names the next stage to run.
METHOD_STAGES = {
    "sdzero": ["eval_base", "p1_sample", "p1_train", "eval_srt", "p2", "eval_final", "done"],
    "srt": ["eval_base", "p1_sample", "p1_train", "eval_srt", "done"],
    "rft": ["eval_base", "rft_sample", "rft_train", "eval_final", "done"],
    "grpo": ["eval_base", "grpo", "eval_final", "done"],
    "p2only": ["eval_base", "p2", "eval_final", "done"],  # teacher = the base model prompted with P_r
    "opsd": ["eval_base", "p2", "eval_final", "done"],  # Phase 2 from the base model, --teacher-context answer
    "sdpo": ["eval_base", "p2", "eval_final", "done"],  # ... --teacher-context feedback
    "base": ["eval_base", "done"],
}


def method_stages(cfg) -> list[str]:
    """METHOD_STAGES[--method], with two-stage SRT's revision stage after Phase 1's first."""
    stages = list(METHOD_STAGES[cfg.method])
    if cfg.srt_variant == "two-stage" and "p1_train" in stages:
        stages.insert(stages.index("p1_train") + 1, "p1_train_rev")
    return stages


def final_stage(method: str) -> str:
    """The evaluation that gives a method's final_accuracy."""
    return METHOD_STAGES[method][-2]


def parse_teacher(spec: str) -> tuple[str, float]:
    """--teacher: frozen, sync:N (copy the student every N steps) or ema:R -> (kind, N or R)."""
    kind, _, arg = spec.partition(":")
    try:
        if kind == "frozen" and not arg:
            return "frozen", 0.0
        if kind == "sync" and int(arg) >= 1:
            return "sync", int(arg)
        if kind == "ema" and 0 < float(arg) <= 1:
            return "ema", float(arg)
    except ValueError:
        pass
    raise SystemExit(f"--teacher {spec!r}: expected frozen, sync:N (N >= 1 steps) or ema:R (0 < R <= 1)")


def parse_betas(spec: str) -> tuple[float, float]:
    """--srt-betas / --p2-betas "b1,b2" -> (b1, b2), each in [0, 1)."""
    try:
        b1, b2 = (float(x) for x in spec.split(","))
    except ValueError:
        raise ValueError(f"{spec!r} is not two numbers b1,b2") from None
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"{spec!r}: betas lie in [0, 1)")
    return b1, b2


class EpochCursor:
    """An endless stream over n rows, a fresh seeded permutation of them per pass: position c is row
    order(c // n)[c % n]. Every training stage draws its data through one (SFT, Phase 2, GRPO), so a step's
    batch depends on the seed and the step only, never on what ran before it: a resume draws the same rows."""

    def __init__(self, seed: int, tag: str, n: int):
        self.seed, self.tag, self.n = seed, tag, n
        self._orders: dict[int, list[int]] = {}

    def order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(self.n))
            random.Random(derive_seed(self.seed, self.tag, epoch)).shuffle(order)
            self._orders = {epoch: order}  # one pass at a time is all a stream needs
        return self._orders[epoch]

    def take(self, start: int, count: int) -> list[int]:
        """Rows at positions start .. start + count - 1 (a window may run into the next pass)."""
        return [self.order(c // self.n)[c % self.n] for c in range(start, start + count)]

    def batch(self, step: int, size: int, drop_last: bool) -> tuple[int, list[int]]:
        """(epoch, rows) of batch `step` when each pass is cut into batches of `size`: the last short batch
        of a pass is kept, or dropped (drop_last; a pass smaller than one batch is then one batch)."""
        per_epoch = max(1, self.n // size) if drop_last else math.ceil(self.n / size)
        epoch, b = divmod(step, per_epoch)
        start = b * size
        return epoch, self.take(epoch * self.n + start, min(size, self.n - start))


@dataclass
class RunState:
    """What a checkpoint holds of the run's progress (beside the weights, optimizer, RNG and log sizes)."""
    stage: str  # the next stage to run (METHOD_STAGES)
    step: int = 0  # optimizer steps done in that stage
    results: dict = field(default_factory=dict)  # evaluations done, by stage
    generations: int = 0  # training samples drawn so far (the --budget's unit)
    generations_by: dict = field(default_factory=dict)  # ... by kind: y_init, revisions, p2, rft, grpo
    seconds: dict = field(default_factory=dict)  # time spent, by stage
    srt_data: list | None = None  # Phase 1's kept examples (revise.SRTExample dicts)
    srt_data2: list | None = None  # two-stage SRT: the revision stage's
    p1_stats: dict | None = None  # Phase 1's sampling statistics
    rft_data: list | None = None  # RFT's verified-correct examples
    method_stats: dict | None = None  # RFT's sampling statistics
    grpo_cursor: int = 0  # GRPO: questions drawn so far from its stream over N1 + N2


class Run:
    """Everything one training run holds: config, data, weights, logs and the resumable state.

    Under torchrun every rank holds a Run; `dist` says which rank it is. `student` is the model being
    trained, `teacher` Phase 2's teacher or GRPO's reference (None when the stage has none): each a
    parallel.Weights, the bare model (`.model`, which sampling reads) and its wrapped forward (`.policy`,
    which every loss runs through: plain, DDP or FSDP2).
    """

    def __init__(self, cfg, d: parallel.Dist | None = None):
        self.cfg = cfg
        self.out = Path(cfg.out)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.dist = d or parallel.Dist(device=sdzero.pick_device())
        self.device = self.dist.device
        # --reward: the user's callable replaces the task's verifier (verifiers/plugin.py); a bad spec stops
        # here, before data and weights load. Each rank starts its own workers, so they share the cores.
        self.reward = (plugin.load(cfg.reward, cfg.reward_timeout,
                                   workers=max(1, min(4, len(os.sched_getaffinity(0)) // self.dist.world)))
                       if cfg.reward else None)
        try:
            # --method base trains on nothing: no N1 or N2 to draw (the held-out set comes first either way)
            self.data = data.load_task(cfg.task, cfg.dataset, *((0, 0) if cfg.method == "base" else (cfg.n1, cfg.n2)),
                                       cfg.n_eval, seed=cfg.data_seed,
                                       question_field=cfg.question_field, answer_field=cfg.answer_field,
                                       math_max_operand=cfg.math_max_operand, math_ops=cfg.math_ops,
                                       eval_dataset=cfg.eval_dataset or None, verify_gold=self.reward is None)
        except ValueError as e:  # bad data is the user's input: one clear line, no traceback
            raise SystemExit(str(e)) from None
        # The code reward's sandbox is probed before the model loads: one that cannot start would score every
        # answer 0 (the math worker is started on first use; one that dies stops the run: rollout_verdicts).
        problem = verify.probe("code") if cfg.task == "code" and self.reward is None else None
        if problem:
            raise SystemExit(problem)
        if cfg.rollout_engine == "vllm":  # installed and importable, or one line naming the install
            vllm_engine.import_vllm()
        if cfg.teacher_context == "answer":
            teacher_context.check_references(cfg.task, self.data["n2"], cfg.dataset)
        if cfg.enable_thinking and self.dist.main:
            tqdm.write("[note] --enable-thinking: self-distillation with a privileged teacher can hurt thinking "
                       "models (README, Flags)")
        self._extra_rows = None
        if cfg.eval_extra:  # now, not at the first evaluation: a bad set stops the run before anything is written
            self.extra_eval_rows()
        model, self.tok = sdzero.load_model(cfg.model, device=self.device)
        lora.check_targets(model, cfg)
        self.end_ids = sdzero.end_of_turn_ids(self.tok, model)  # what generation stops on, stripped from y'
        # --p1-stop: the special tokens among them stop as ids, the rest as text; either is cut and replaced by
        # the end of turn (the tokenizer's eos when it ends turns).
        special, self.p1_stop_strings = split_stops(self.tok, cfg.p1_stop)
        self.p1_stop_ids = special - set(self.end_ids)
        self.eot_id = self.tok.eos_token_id if self.tok.eos_token_id in self.end_ids else self.end_ids[0]
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.autocast = torch.bfloat16 if bf16 else None
        if cfg.grad_checkpoint:
            sdzero.enable_activation_checkpointing(model)
        self.student = parallel.Weights(model, parallel.wrap(model, self.dist, autocast=self.autocast))
        # --rollout-engine vllm: built at the first rollout; its context holds the longest teacher input + answer
        longest = cfg.teacher_max_len + max(cfg.max_new_tokens, cfg.eval_extra_tokens)
        self.engine = vllm_engine.Engine(
            sdzero.resolve_model_path(cfg.model), dtype=self.autocast or torch.float32, device=self.device,
            seed=cfg.seed, rows=cfg.gen_batch_size, row_tokens=2 * cfg.max_new_tokens + 512, config=model.config,
            max_model_len=min(model.config.max_position_embeddings, longest), gpu_memory=cfg.vllm_gpu_memory,
            sleep=cfg.vllm_sleep, distributed=self.dist.world > 1) if cfg.rollout_engine == "vllm" else None
        self.teacher: parallel.Weights | None = None
        self.adapter = None  # --lora-rank: the PeftModel of the adapter the current stage trains (lora.py)
        self._bf16_copy = None  # the bf16 copy of the student that rollouts read (sampling_model)
        self._prompt_cache: dict[str, list[int]] = {}
        self.state = RunState(stage=method_stages(cfg)[0])
        self.saved: tuple[str, int] | None = None  # (stage, step) of the last checkpoint written or resumed from
        self.optimizer = self.scheduler = None
        # --eval-every: train.py's evaluate(run, stage, step), set by train.train (run.py cannot import train.py)
        self.evaluator = None

    def open_log(self) -> None:
        """metrics.jsonl, samples.jsonl and the trackers (RunLog), opened once the run folder is this run's
        (train.train: nothing is written before the data and the model have loaded); the data row first.
        Skipped rows are counted, never silently given a zero reward: they go to metrics.jsonl."""
        self.log = RunLog(self.cfg, self.out, main=self.dist.main)
        skipped, notes = self.data.skipped, self.data.notes
        sizes = {k: len(self.data[k]) for k in ("eval", "n1", "n2")}
        line = (f"[data] held-out {sizes['eval']}, N1 {sizes['n1']}, N2 {sizes['n2']}"
                + (f"; skipped {sum(skipped.values())} rows: {skipped}" if skipped else ""))
        if self.cfg.resume:  # the row is in metrics.jsonl already, before the checkpoint
            tqdm.write(line)
        else:
            self.log.step({"phase": "data", **sizes, "skipped": skipped, "sources": self.data.sources,
                           "notes": notes}, line)
        for note in notes:
            tqdm.write(f"[data] {note}")

    def close(self) -> None:
        """At the run's end: the logs and trackers closed, --reward's workers stopped."""
        self.log.close()
        if self.reward is not None:
            self.reward.close()

    def training_pool(self) -> list[tasks.Example]:
        """The questions a method that is not split into two phases draws from: N1 then N2."""
        return self.data["n1"] + self.data["n2"]

    def prompt_messages(self, ex: tasks.Example) -> list[dict]:
        """chat(x)'s messages: the worked examples (--fewshot), then the question (a conversational row's
        conversation, data/)."""
        return tasks.prompt_messages(ex.question, self.cfg.fewshot, revise.CONTROL_PHRASES[self.cfg.phrase_style][0],
                                     task=self.cfg.task, conversation=ex.meta.get("conversation"))

    def prompt_ids(self, ex: tasks.Example) -> list[int]:
        # Keyed by the messages, not the question: conversational rows that end in the same user turn may
        # differ in their system turns.
        messages = self.prompt_messages(ex)
        key = json.dumps(messages)
        if key not in self._prompt_cache:
            self._prompt_cache[key] = sdzero.chat_prompt_ids(self.tok, messages, self.cfg.enable_thinking)
        return self._prompt_cache[key]

    def rollouts(self, prompts: list[list[int]], seeds: list[int], examples: list[tasks.Example],
                 max_new_tokens: int, stage: str, desc: str) -> tuple[list[sdzero.Rollout], list[int]]:
        """rollout_verdicts with the verdicts as rewards r in {0, 1}."""
        ys, verdicts = self.rollout_verdicts(prompts, seeds, examples, max_new_tokens, stage, desc)
        return ys, [int(v.correct) for v in verdicts]

    def rollout_verdicts(self, prompts: list[list[int]], seeds: list[int], examples: list[tasks.Example],
                         max_new_tokens: int, stage: str, desc: str) -> tuple[list[sdzero.Rollout], list[verify.Verdict]]:
        """Sample one response per prompt and verify it against its example (the task's verifier, or --reward):
        (rollouts, verdicts) in prompt order. Under torchrun each rank samples and verifies its share of the
        prompts and every rank receives all of them; row i samples with seeds[i] wherever it runs, so the
        result does not depend on the world size. stage (p1, p2, baseline, eval) picks the sampling settings:
        --temperature (--eval-temperature), --STAGE-top-p, --STAGE-top-k, and for p1 --p1-stop."""
        d, cfg = self.dist, self.cfg
        if stage not in ("p1", "p2", "baseline", "eval"):
            raise ValueError(f"stage must be p1, p2, baseline or eval, got {stage!r}")
        temperature = cfg.eval_temperature if stage == "eval" else cfg.temperature
        p1_stops = stage == "p1" and bool(cfg.p1_stop)
        stop_ids = sorted(set(self.end_ids) | self.p1_stop_ids) if p1_stops else self.end_ids
        stop_strings = self.p1_stop_strings if p1_stops else None
        mine = parallel.my_rows(d, len(prompts))
        rows, row_seeds = [prompts[i] for i in mine], [seeds[i] for i in mine]
        sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=getattr(cfg, f"{stage}_top_p"),
                        top_k=getattr(cfg, f"{stage}_top_k"), stop_ids=stop_ids, stop_strings=stop_strings)
        if self.engine is not None:  # vLLM: the student's weights synced in first, if they changed
            ys = self.engine.generate(self.tok, rows, row_seeds, model=self.student.model, adapter=self.adapter,
                                      **sampling)
        else:
            with parallel.rollout_mode(self.student.policy, d), parallel.amp(self.autocast, self.device.type), \
                    tqdm(total=len(mine), desc=desc, leave=False, disable=not d.main) as bar:
                ys = sdzero.generate(self.sampling_model(), self.tok, rows, seeds=row_seeds,
                                     batch_size=cfg.gen_batch_size, progress=bar,
                                     # FSDP2's hooks stay on the gathered layers: sample without CUDA graphs there
                                     compile=False if d.strategy == "fsdp" else None, **sampling)
        if p1_stops:  # the stop is cut and the end of turn put in its place
            ys = [sdzero.end_at_stop(self.tok, y, self.p1_stop_ids, stop_strings or [], self.eot_id) for y in ys]
        vs = self.verdicts([y.text for y in ys], [examples[i] for i in mine])
        both = parallel.gather(d, len(prompts), mine, list(zip(ys, vs)))
        self.require_rewards([v for _, v in both], stage)  # on every rank, after the gather: all stop together
        return [y for y, _ in both], [r for _, r in both]

    def require_rewards(self, verdicts: list[verify.Verdict], stage: str) -> None:
        """Stop the run when the verifier failed on any response (verify.UNAVAILABLE: the sandbox or the math
        worker, never the response's doing): a reward of 0 there would train on a lie. Counted in metrics.jsonl
        first (a row with phase "reward_unavailable"), then one line says why and what to do."""
        problem = verify.unavailable(verdicts, self.cfg.task)
        if problem is None:
            return
        if self.reward is not None:  # the user's callable said so
            problem = f"--reward {self.cfg.reward} returned no verdict ({', '.join(verify.UNAVAILABLE)}) for " \
                      f"{sum(v.reason in verify.UNAVAILABLE for v in verdicts)} of {len(verdicts)} responses"
        reasons: dict[str, int] = {}
        for v in verdicts:
            reasons[v.reason] = reasons.get(v.reason, 0) + 1
        self.log.step({"phase": "reward_unavailable", "stage": self.state.stage, "step": self.state.step,
                       "rollouts": stage, "reasons": reasons, "message": problem})
        raise SystemExit(f"{problem}. Stopped at {self.state.stage}, step {self.state.step}; the last checkpoint "
                         f"in {self.out / 'checkpoint'} (if any) is intact.")

    def verdicts(self, responses: list[str], examples: list[tasks.Example]) -> list[verify.Verdict]:
        """The verdict on each response: --reward's callable when given, else the task's verifier."""
        if self.reward is not None:
            return self.reward.verdicts(responses, examples)
        # Under torchrun the ranks of a machine share its sandbox slots (one per CPU): each its share of threads.
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", self.dist.world))
        workers = max(1, len(os.sched_getaffinity(0)) // max(1, ranks_here))
        return verify.verdicts(responses, [ex.answer for ex in examples], self.cfg.task, strict=False, workers=workers)

    def sampling_model(self):
        """The weights rollouts read. With bf16 (one process or DDP): a bf16 copy, refreshed from the fp32
        weights at every call, since a decode step reads every weight once and autocast would recast the fp32
        weights at every step. Otherwise the model itself (FSDP2 gathers its own weights to sample)."""
        if self.autocast is None or self.dist.strategy == "fsdp":
            return self.student.model
        if self._bf16_copy is None:
            self._bf16_copy = copy.deepcopy(self.student.model).to(self.autocast).eval().requires_grad_(False)
        else:
            with torch.no_grad():
                for p_s, p in zip(self._bf16_copy.parameters(), self.student.model.parameters()):
                    p_s.copy_(p)
        return self._bf16_copy

    def extra_eval_rows(self) -> list[tasks.Example]:
        """The --eval-extra questions, loaded when the Run is made (the same rows at every evaluation)."""
        if self._extra_rows is None:
            cfg = self.cfg
            try:
                extra = data.load_task(cfg.task, "embedded", 0, 0, cfg.eval_extra_n or -1, seed=cfg.data_seed,
                                       verify_gold=self.reward is None,
                                       eval_dataset=cfg.eval_extra)
            except ValueError as e:
                # load_task names the flag of its held-out source; here that source is --eval-extra
                raise SystemExit(str(e).replace("--eval-dataset", "--eval-extra", 1)) from None
            self._extra_rows = extra["eval"]
        return self._extra_rows

    # checkpoints ---------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Full (unsharded) state keyed by parameter name, written by rank 0: it resumes on any world size.
        Collective under FSDP (every rank gathers its shards), so every rank calls it."""
        d = self.dist
        ckpt = {"state": vars(self.state), "model": parallel.model_state(self.student.model, d), "rng": rng_state(),
                "config": dataclasses.asdict(self.cfg), "world_size": d.world, "log_sizes": self.log.sizes()}
        if self.optimizer is not None:
            ckpt["optimizer"] = parallel.optimizer_state(self.student.model, self.optimizer, d)
            ckpt["scheduler"] = self.scheduler.state_dict()
        if self.teacher is not None and self.teacher.model is not self.student.model:  # LoRA's shares the weights
            ckpt["teacher"] = parallel.model_state(self.teacher.model, d)
        ckpt["lora"] = self.adapter is not None  # the model's state holds an adapter's weights too
        if d.main:
            atomic_torch_save(ckpt, self.out / "checkpoint" / "state.pt")
        d.barrier()  # no rank moves on (or exits) before the checkpoint is on disk
        self.saved = (self.state.stage, self.state.step)

    def load_checkpoint(self) -> dict:
        ckpt = torch.load(self.out / "checkpoint" / "state.pt", map_location="cpu", weights_only=False)
        self.state = RunState(**ckpt["state"])
        self.saved = (self.state.stage, self.state.step)
        # Every rank reads the checkpoint; on several machines a node-local --out may hold another one (README,
        # "Several machines"): the ranks would resume from different states.
        d, mark = self.dist, (self.state.stage, self.state.step, self.state.generations)
        marks = parallel.gather(d, d.world, [d.rank], [mark])
        if len(set(marks)) > 1:
            raise SystemExit(f"--resume: the processes read different checkpoints in {self.out} (stage, step, "
                             f"generations of each rank: {marks}); --out must be one folder that every node sees")
        self.log.truncate(ckpt.get("log_sizes"))
        if ckpt.get("lora"):  # saved inside a LoRA stage: the same adapter structure first, then its weights
            self.attach_adapter(self.state.stage)
        parallel.load_model_state(self.student.model, ckpt["model"], self.dist)
        set_rng_state(ckpt["rng"])
        if "teacher" in ckpt:
            self.make_teacher()
            parallel.load_model_state(self.teacher.model, ckpt["teacher"], self.dist)
        return ckpt

    def restore_optimizer(self, ckpt: dict | None) -> None:
        if ckpt is not None and "optimizer" in ckpt:
            parallel.load_optimizer_state(self.student.model, self.optimizer, ckpt["optimizer"], self.dist)
            self.scheduler.load_state_dict(ckpt["scheduler"])

    def timed(self, stage: str, seconds: float) -> None:
        self.state.seconds[stage] = self.state.seconds.get(stage, 0.0) + seconds

    def count_generations(self, kind: str, n: int) -> None:
        """Every training sample drawn from the model counts against the budget (held-out evaluation does not):
        y_init and revisions (Phase 1), p2 (Phase 2), rft and grpo (the baselines)."""
        self.state.generations += n
        self.state.generations_by[kind] = self.state.generations_by.get(kind, 0) + n

    # LoRA --------------------------------------------------------------------------------------------------
    def attach_adapter(self, stage: str) -> None:
        """--lora-rank: a fresh adapter for this training stage, seeded by the stage (no-op without LoRA, or
        when a resumed checkpoint attached it already)."""
        if not self.cfg.lora_rank or self.adapter is not None:
            return
        self.adapter = lora.attach(self.student.model, self.cfg, derive_seed(self.cfg.seed, "lora", stage))
        self._rewrap()

    def trained_before(self) -> list[str]:
        """The training stages before the current one: each merged an adapter into the weights this one starts
        from. (In METHOD_STAGES every stage but eval_*, *_sample and done trains.)"""
        stages = method_stages(self.cfg)
        return [s for s in stages[:stages.index(self.state.stage)]
                if not s.startswith("eval_") and not s.endswith("_sample")]

    def merge_adapter(self) -> None:
        """The stage's adapter written to adapter/ (rank 0), then merged into the weights. adapter_config.json
        names the weights it applies to: --model, or when an earlier stage trained (sdzero's Phase 2 on the SRT
        model) those weights, saved in adapter/base/ since no name loads them."""
        if self.adapter is None:
            return
        if self.dist.main:
            tmp, final = self.out / "adapter.tmp", self.out / "adapter"
            shutil.rmtree(tmp, ignore_errors=True)
            earlier = self.trained_before()
            if earlier:
                lora.save_base(self.adapter, tmp / lora.BASE, self.tok)
                base = str(final.resolve() / lora.BASE)  # where atomic_replace_dir puts it
            else:
                path = sdzero.resolve_model_path(self.cfg.model)  # an embedded alias: its converted folder
                base = str(Path(path).resolve()) if Path(path).is_dir() else path
            lora.save(self.adapter, tmp, base, lora.adapter_card(self.cfg, self.state.stage, earlier, base, final))
            atomic_replace_dir(tmp, final)
        merged = lora.merge(self.adapter)
        assert merged is self.student.model  # peft adapts and unloads the one model in place
        self.adapter = None
        self._rewrap()

    def _rewrap(self) -> None:
        """The student's policy again after its trainable parameters changed (DDP records them when it wraps)."""
        model = self.student.model
        self.student = parallel.Weights(model, parallel.wrap(model, self.dist, autocast=self.autocast))
        self._bf16_copy = None

    # the teacher -----------------------------------------------------------------------------------------
    def make_teacher(self) -> None:
        """self.teacher: a frozen copy of the student as it is now (Phase 2's teacher, GRPO's reference). Under
        FSDP2 the copy is built from the config, sharded like the student, and filled from the student's
        shards (no gathering of the student's weights). Under LoRA a frozen teacher is no copy: the student
        with its adapter switched off, which is the weights the stage started from, exactly; a sync or EMA
        teacher is a plain model of the adapted weights W + (alpha / r) B A (lora.merged_copy), which
        copy_weights moves toward the student's adapted weights."""
        model = self.student.model
        if self.adapter is not None and parse_teacher(self.cfg.teacher)[0] == "frozen":
            base = parallel.wrap(model, self.dist, train=False, autocast=self.autocast)
            self.teacher = parallel.Weights(model, lora.AdapterOff(self.adapter, base))
            return
        dtype = self.autocast or next(model.parameters()).dtype  # bf16 runs keep the teacher in bf16
        if parse_teacher(self.cfg.teacher)[0] == "ema":
            # ...except an EMA teacher: a bf16 lerp_ rounds away every increment below half a bf16 step (2^-9
            # of the weight), so it stays in fp32 and runs under autocast like the student.
            dtype = next(model.parameters()).dtype
        if self.dist.strategy == "fsdp":
            from transformers import AutoModelForCausalLM  # heavy; sdzero.load_model has loaded it already
            with torch.device(self.device):
                teacher = AutoModelForCausalLM.from_config(model.config, dtype=dtype)
        elif self.adapter is not None:
            teacher = lora.merged_copy(self.adapter).to(dtype)
        else:
            teacher = copy.deepcopy(model).to(dtype)
        policy = parallel.wrap(teacher, self.dist, train=False, autocast=self.autocast)
        teacher.eval()
        teacher.requires_grad_(False)
        self.teacher = parallel.Weights(teacher, policy)
        if self.dist.strategy == "fsdp":
            self.copy_weights(1.0)

    @torch.no_grad()
    def copy_weights(self, weight: float) -> None:
        """teacher <- teacher + weight (student - teacher), parameter by parameter (shard by shard under FSDP2).
        Under LoRA the student's weights are its adapted ones, W + (alpha / r) B A: an EMA averages the models
        the student was, not its factors A and B apart."""
        if self.dist.strategy == "fsdp":
            parallel.reshard(self.student.policy)
            parallel.reshard(self.teacher.policy)
        if self.adapter is not None:  # the teacher is a plain model (make_teacher): matched by name
            teacher = dict(self.teacher.model.named_parameters())
            pairs = ((teacher[name], w) for name, w in lora.adapted_weights(self.adapter))
        else:
            pairs = zip(self.teacher.model.parameters(), self.student.model.parameters())
        for p_t, p_s in pairs:
            p_t.copy_(p_s) if weight == 1.0 else p_t.lerp_(p_s.detach().to(p_t.dtype), weight)


def make_optimizer(run: Run, lr: float, total_steps: int, warmup_steps: int, cosine: bool, group: str):
    """AdamW with the settings of `group`: "srt" (Phase 1, RFT) or "p2" (Phase 2, GRPO)."""
    params = [p for p in run.student.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=getattr(run.cfg, f"{group}_weight_decay"),
                            betas=parse_betas(getattr(run.cfg, f"{group}_betas")), fused=run.device.type == "cuda")

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if not cosine:
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def optimizer_step(run: Run, loss: torch.Tensor | None, value: float, phase: str, step: int) -> float:
    """Backward, clip, step. `value` is the batch's loss (the same on every rank), `loss` this rank's part
    to differentiate (None: the gradients are already there, accumulated over micro-batches)."""
    if not math.isfinite(value):
        flag = {"p1": "--srt-lr", "p1_rev": "--srt-lr", "rft": "--srt-lr", "p2": "--p2-lr", "grpo": "--grpo-lr"}[phase]
        raise SystemExit(f"{phase} step {step}: the loss is {value} (not finite) at lr "
                         f"{run.scheduler.get_last_lr()[0]:.2e}; lower {flag}. "
                         f"The last checkpoint in {run.out / 'checkpoint'} is intact.")
    if loss is not None:
        loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.student.model.parameters(),
                                               run.cfg.grad_clip if run.cfg.grad_clip > 0 else float("inf"))
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return parallel.grad_norm_value(grad_norm)

def train_loop(run: Run, resume_ckpt: dict | None, step_fn, *, stage: str, desc: str, lr: float, total: int,
               warmup: int, cosine: bool, group: str, more=None) -> None:
    """The loop of every training stage: AdamW (--{group}-betas, --{group}-weight-decay) with warmup and then a
    cosine or constant schedule, restored on resume; `step_fn(step) -> (metrics row, printed line)` until
    `total` steps (or while `more()`); each step logged and timed under `stage`; a held-out evaluation every
    --eval-every steps and a checkpoint every --save-every steps, except after the last (the stage's end
    evaluates and saves one)."""
    run.optimizer, run.scheduler = make_optimizer(run, lr, total, warmup, cosine, group)
    run.restore_optimizer(resume_ckpt)
    more = more or (lambda: run.state.step < total)
    every = run.cfg.save_every
    with tqdm(total=total or None, initial=run.state.step, desc=desc, leave=False, disable=not run.dist.main) as bar:
        while more():
            t0 = time.time()
            row, line = step_fn(run.state.step)
            run.state.step += 1
            run.timed(stage, time.time() - t0)
            run.log.step(row, line)
            bar.update(1)
            # --eval-every: a point of the learning curve, before the checkpoint (a resume past it does not log
            # it twice); not after the last step, as the evaluation that follows every stage is that point.
            if run.cfg.eval_every and run.state.step % run.cfg.eval_every == 0 and more():
                t1 = time.time()
                run.evaluator(row["phase"], run.state.step)
                run.timed(f"{stage}_eval", time.time() - t1)
            if every and run.state.step % every == 0 and more():
                run.save_checkpoint()
    run.optimizer = run.scheduler = None
