"""One GPU, no Hub, a few minutes: SD-Zero's generation and Phase 2 step against the plain implementations,
on random-init Qwen3 models of real shapes (0.6B, 1.7B, 4B).

    python bench/gpu.py                          # on a GPU: every shape, generation and Phase 2
    python bench/gpu.py --shapes qwen3-1.7b      # one shape
    python bench/gpu.py --dry-run                # a tiny shape on CPU: every code path in seconds (the tests)

Generation: 64 prompts of 64-192 random tokens, 256 new tokens each, no early stop, bf16 weights.
  plain    transformers' `generate` (dynamic cache, sampling)
  hf_static transformers' `generate` with cache_implementation="static", which compiles the forward on CUDA
           (the fast baseline a user would try first); its first call is timed apart
  ours     sdzero.generate_static: static KV cache, decode step compiled with CUDA graphs, sampling on the
           device; its first call (compilation) is timed apart
  vllm     where vllm is installed: vLLM (--rollout-engine vllm's engine) on the same rows, the model saved to a
           temporary folder, N tokens each (ignore_eos), a seed per row; its build and first call timed apart
  roofline the decode steps/s the card's measured copy bandwidth allows when every step reads the weights
           and the mean KV cache once; ours is printed as a share of it (reported, never asserted)
Phase 2 step: 4 answers of 2,048 tokens after a 256-token prompt; the teacher reads x + y + phrase + y.
  naive    HF forward with full logits at every position (student and teacher), full-vocabulary KL in fp32,
           fp32 teacher, AdamW (foreach)
  ours     train.py's step: hidden states sliced to the response, teacher top-64 in chunks
           (chunked_teacher_topk), chunked_distill_loss, bf16 autocast, bf16 teacher under inference mode,
           fused AdamW; also with --grad-checkpoint
  MFU counts the same useful FLOPs for both (6 N per student token, 2 N per teacher token, attention, the LM
  head at response positions only) against the card's dense bf16 peak.
Prints a line per measurement; the last line is one JSON object. Errors are recorded per part, not fatal.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import distill  # noqa: E402
import parallel  # noqa: E402
import sdzero  # noqa: E402
import train  # noqa: E402
import vllm_engine  # noqa: E402

QWEN3 = dict(vocab_size=151936, head_dim=128, num_key_value_heads=8, tie_word_embeddings=True,
             max_position_embeddings=40960, rope_theta=1_000_000.0)
SHAPES = {  # the published Qwen3 configurations
    "qwen3-0.6b": dict(QWEN3, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16),
    "qwen3-1.7b": dict(QWEN3, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16),
    "qwen3-4b": dict(QWEN3, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32),
    "tiny": dict(vocab_size=2048, head_dim=32, num_key_value_heads=2, tie_word_embeddings=True,
                 max_position_embeddings=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4),
}
# Dense bf16 tensor-core peaks (FLOP/s) by card name; --peak-tflops overrides.
PEAKS = [("H100 PCIe", 756e12), ("H100", 989.4e12), ("H200", 989.4e12), ("A100", 312e12), ("L40S", 362e12)]


class NullTokenizer:
    """What generation needs of a tokenizer when the ids are random: a pad id and a decode."""
    pad_token_id = 0
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return ""


def build(shape: str, device, dtype):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(Qwen3Config(**SHAPES[shape])).to(dtype)
    return model.eval()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def copy_bandwidth(device, n_bytes: int) -> float:
    """Bytes/s of a device-to-device copy (read + write), the best of 5."""
    x = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    best = min(timed(lambda: y.copy_(x), device)[0] for _ in range(5))
    return 2 * n_bytes / best


def n_params(model, non_embedding=False) -> int:
    n = sum(p.numel() for p in model.parameters())
    return n - model.get_input_embeddings().weight.numel() if non_embedding else n


# ------------------------------------------------------------------------------------------ generation

def bench_generation(shape, device, args) -> dict:
    model = build(shape, device, torch.bfloat16)
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    lens = torch.randint(args.prompt_min, args.prompt_max + 1, (args.gen_batch,), generator=g).tolist()
    prompts = [torch.randint(1, cfg.vocab_size, (n,), generator=g).tolist() for n in lens]
    N, B, tok = args.new_tokens, args.gen_batch, NullTokenizer()
    out = {"batch": B, "new_tokens": N, "prompt_tokens_mean": statistics.mean(lens)}

    # plain: transformers' generate, left-padded batch, dynamic cache, sampling, never stops early
    width = max(lens)
    ids = torch.zeros((B, width), dtype=torch.long)
    mask = torch.zeros((B, width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):], mask[r, width - len(p):] = torch.tensor(p), 1
    ids, mask = ids.to(device), mask.to(device)

    def plain():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=N, min_new_tokens=N,
                              do_sample=True, temperature=0.7, top_k=0, top_p=1.0, pad_token_id=0, eos_token_id=None)
    plain()  # warm-up (kernels, allocator)
    t_plain, res = timed(plain, device)
    assert res.shape[1] == width + N
    out["plain_steps_per_s"] = N / t_plain

    # hf_static: the fast baseline a user tries first, transformers' `generate` with a static cache, which on
    # CUDA compiles the forward itself (its first call, timed apart, compiles; the second is the steady state)
    def hf_static():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=N, min_new_tokens=N,
                              do_sample=True, temperature=0.7, top_k=0, top_p=1.0, pad_token_id=0, eos_token_id=None,
                              cache_implementation="static", disable_compile=args.dry_run)
    try:
        t_first, _ = timed(hf_static, device)
        t_hf, res = timed(hf_static, device)
        assert res.shape[1] == width + N
        out.update(hf_static_steps_per_s=N / t_hf, hf_static_first_call_s=t_first)
    except Exception as e:  # noqa: BLE001 (recorded; the other measurements stand)
        out["hf_static_error"] = f"{type(e).__name__}: {e}"[:500]

    # ours: compiled static decode (first call compiles for this batch shape; the second is the steady state).
    # Should compilation fail on this stack, the error is recorded and the uncompiled static loop is timed.
    def ours(compile):
        return sdzero.generate_static(model, tok, prompts, max_new_tokens=N, temperature=0.7, seeds=list(range(B)),
                                      batch_size=B, stop_ids=[-1], compile=compile)
    compile = not args.dry_run
    try:
        t_first, _ = timed(lambda: ours(compile), device)
    except Exception as e:  # noqa: BLE001 (reported, then the eager static loop)
        out["compile_error"] = f"{type(e).__name__}: {e}"[:500]
        compile = False
        t_first, _ = timed(lambda: ours(compile), device)
    out["compiled"] = compile
    t_ours, rollouts = timed(lambda: ours(compile), device)
    assert all(len(r.response_ids) == N for r in rollouts)
    out.update(ours_steps_per_s=N / t_ours, ours_tokens_per_s=N * B / t_ours, ours_first_call_s=t_first,
               plain_tokens_per_s=N * B / t_plain, speedup=t_plain / t_ours)
    if "hf_static_steps_per_s" in out:
        out["speedup_vs_hf_static"] = out["ours_steps_per_s"] / out["hf_static_steps_per_s"]

    if importlib.util.find_spec("vllm") is not None:  # --rollout-engine vllm's engine on the same rows
        try:
            out.update(vllm_generation(model, prompts, N, device, args))
            out["vllm_vs_ours"] = out["vllm_steps_per_s"] / out["ours_steps_per_s"]
        except Exception as e:  # noqa: BLE001 (recorded; the other measurements stand)
            out["vllm_error"] = f"{type(e).__name__}: {e}"[:500]

    # roofline: each step reads the weights and, on average, half-way-grown KV caches
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv = sdzero.kv_bytes_per_token(cfg, torch.bfloat16) * B * (statistics.mean(lens) + N / 2)
    bw = copy_bandwidth(device, 1 << (30 if device.type == "cuda" else 24))
    out.update(roofline(weight_bytes, kv, bw, out["ours_steps_per_s"]))
    return out


def vllm_generation(model, prompts, N: int, device, args) -> dict:
    """vLLM (what --rollout-engine vllm builds: one LLM in this process) on the model saved to a temporary
    folder: the same prompts, N new tokens each, no early stop, sampling at 0.7, one seed per row. Its first
    call is timed apart; the engine is released before the next shape."""
    vllm = vllm_engine.import_vllm()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        t0 = time.perf_counter()
        llm = vllm.LLM(model=folder, skip_tokenizer_init=True, seed=0, dtype="bfloat16", enforce_eager=args.dry_run,
                       max_model_len=args.prompt_max + N, max_num_seqs=len(prompts), generation_config="vllm",
                       **({"kv_cache_memory_bytes": 1 << 28} if device.type != "cuda" else
                          {"gpu_memory_utilization": args.vllm_gpu_memory}))
        build = time.perf_counter() - t0
    params = [vllm.SamplingParams(max_tokens=N, min_tokens=N, ignore_eos=True, temperature=0.7, seed=i,
                                  detokenize=False) for i in range(len(prompts))]

    def call():
        return llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    t_first, _ = timed(call, device)
    t, res = timed(call, device)
    assert all(len(r.outputs[0].token_ids) == N for r in res)
    del llm
    gc.collect()
    return {"vllm_steps_per_s": N / t, "vllm_tokens_per_s": N * len(prompts) / t, "vllm_first_call_s": t_first,
            "vllm_build_s": build, "vllm": vllm.__version__}


def roofline(weight_bytes: float, kv_bytes: float, bandwidth: float, steps_per_s: float) -> dict:
    """The decode steps/s that `bandwidth` (bytes/s) allows when every step reads the weights and the KV
    cache once, and the measured `steps_per_s` against it. A share above 1 means a step read less from
    memory than that (a model small enough to stay in cache, as the dry run's tiny one on CPU) or the copy
    under-measured the bandwidth: the comparison is reported, not asserted."""
    bytes_per_step = weight_bytes + kv_bytes
    limit = bandwidth / bytes_per_step
    return {"copy_bandwidth_gb_s": bandwidth / 1e9, "bytes_per_step": bytes_per_step, "roofline_steps_per_s": limit,
            "ours_share_of_roofline": steps_per_s / limit, "ours_within_roofline": steps_per_s <= limit}


def roofline_line(gen: dict) -> str:
    """The roofline comparison of one shape's generation measurements, in words."""
    line = (f"  roofline: ours {gen['ours_steps_per_s']:.1f} decode steps/s, "
            f"{100 * gen['ours_share_of_roofline']:.3g}% of the {gen['roofline_steps_per_s']:.1f} that "
            f"{gen['copy_bandwidth_gb_s']:.1f} GB/s allows at {gen['bytes_per_step'] / 1e9:.3g} GB read a step")
    return line if gen["ours_within_roofline"] else line + " (above it: the step read less than that, e.g. from cache)"


# ------------------------------------------------------------------------------------------ Phase 2 step

def useful_flops(cfg, n_nonemb: int, B: int, P: int, T: int, phrase: int) -> float:
    """One Phase 2 step's model FLOPs: student forward + backward over x + y (6 N per token, attention),
    teacher forward over x + y + phrase + y (2 N per token), the LM head at the T response positions."""
    attn_width = cfg.num_attention_heads * cfg.head_dim

    def attention(S):  # QK^T and AV, causal (half the square), per layer, forward
        return 2 * S * S * attn_width * cfg.num_hidden_layers
    S_s, S_t = P + T, P + 2 * T + phrase
    head = 2 * cfg.hidden_size * cfg.vocab_size * T
    student = 3 * (2 * n_nonemb * S_s + attention(S_s) + head)
    teacher = 2 * n_nonemb * S_t + attention(S_t) + head
    return B * (student + teacher)


def phase2_inputs(cfg, B, P, T, phrase):
    g = torch.Generator().manual_seed(2)
    seqs_s, seqs_t, starts_t = [], [], []
    for _ in range(B):
        x = torch.randint(1, cfg.vocab_size, (P,), generator=g).tolist()
        y = torch.randint(1, cfg.vocab_size, (T,), generator=g).tolist()
        ph = torch.randint(1, cfg.vocab_size, (phrase,), generator=g).tolist()
        seqs_s.append(x + y)
        seqs_t.append(x + y + ph + y)
        starts_t.append(P + T + phrase)
    return seqs_s, seqs_t, [P] * B, starts_t, [T] * B


def naive_step(student, teacher, opt, seqs_s, seqs_t, starts_s, starts_t, lengths, device):
    ids_s, ids_t = torch.tensor(seqs_s, device=device), torch.tensor(seqs_t, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        with torch.no_grad():
            logits_t = teacher(input_ids=ids_t).logits.float()  # [B, S_t, V]
        logits_s = student(input_ids=ids_s).logits.float()  # [B, S_s, V]
    T = lengths[0]
    ls = torch.stack([logits_s[b, s - 1:s - 1 + T] for b, s in enumerate(starts_s)])  # [B, T, V]
    lt = torch.stack([logits_t[b, s - 1:s - 1 + T] for b, s in enumerate(starts_t)])
    loss = distill.per_token_divergence(ls, lt, divergence="reverse").mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def ours_step(policy, teacher_policy, opt, seqs_s, seqs_t, starts_s, starts_t, lengths, device, chunk):
    loss_fn = distill.DistillLoss("reverse", 64, "teacher", False, 0.5, chunk)  # the paper's Eq. 4
    with torch.inference_mode():
        target = teacher_policy(train.eq4_teacher, seqs_t, starts_t, lengths, 0, loss_fn)
    loss, _ = policy(train.eq4_student, seqs_s, starts_s, lengths, 0, target, loss_fn)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def bench_phase2(shape, device, args, peak) -> dict:
    B, P, T, phrase = args.p2_batch, args.p2_prompt, args.p2_tokens, 8
    cuda = device.type == "cuda"
    result = {"batch": B, "prompt": P, "response_tokens": T}
    for variant in ("naive", "ours", "ours+ckpt"):
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            student = build(shape, device, torch.float32).train()
            cfg = student.config
            inputs = phase2_inputs(cfg, B, P, T, phrase)
            if variant == "naive":
                teacher = build(shape, device, torch.float32)
                opt = torch.optim.AdamW(student.parameters(), lr=1e-6, foreach=True)

                def step():
                    return naive_step(student, teacher, opt, *inputs, device)
            else:
                if variant == "ours+ckpt":
                    sdzero.enable_activation_checkpointing(student)
                amp = torch.bfloat16 if cuda else None
                teacher = build(shape, device, torch.bfloat16 if cuda else torch.float32)
                policy, teacher_policy = parallel.Policy(student, amp), parallel.Policy(teacher, amp)
                opt = torch.optim.AdamW(student.parameters(), lr=1e-6, fused=cuda)

                def step():
                    return ours_step(policy, teacher_policy, opt, *inputs, device, args.chunk)
            n_nonemb = n_params(student, non_embedding=True)
            step()  # warm-up: optimizer state, kernels
            times = [timed(step, device)[0] for _ in range(args.repeats)]
            flops = useful_flops(cfg, n_nonemb, B, P, T, phrase)
            med = statistics.median(times)
            result[variant] = {"step_s_median": med, "step_s_all": times, "tflops": flops / med / 1e12,
                               "mfu": flops / med / peak if peak else None,
                               "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None}
        except torch.OutOfMemoryError as e:
            result[variant] = {"error": f"out of memory: {str(e).splitlines()[0]}"}
        finally:
            student = teacher = opt = policy = teacher_policy = step = None  # noqa: F841 (free before the next)
        print(f"  phase 2 {variant}: {result[variant]}", flush=True)
    if "peak_mem_gib" in result.get("ours", {}) and result["ours"]["peak_mem_gib"] and \
            "peak_mem_gib" in result.get("naive", {}):
        result["ours_mem_over_naive"] = result["ours"]["peak_mem_gib"] / result["naive"]["peak_mem_gib"]
    if "step_s_median" in result.get("ours", {}) and "step_s_median" in result.get("naive", {}):
        result["ours_speedup"] = result["naive"]["step_s_median"] / result["ours"]["step_s_median"]
    return result


# ------------------------------------------------------------------------------------------ driver

def card(device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((p for key, p in PEAKS if key in name), None)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=["qwen3-0.6b", "qwen3-1.7b", "qwen3-4b"], choices=list(SHAPES))
    p.add_argument("--p2-shapes", nargs="+", default=["qwen3-0.6b", "qwen3-1.7b"], choices=list(SHAPES),
                   help="shapes for the Phase 2 step (the naive step at 4B does not fit 80 GB)")
    p.add_argument("--skip", nargs="*", default=[], choices=["generation", "phase2"])
    p.add_argument("--dry-run", action="store_true", help="the tiny shape on CPU, small sizes, no compilation")
    p.add_argument("--gen-batch", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--prompt-min", type=int, default=64)
    p.add_argument("--prompt-max", type=int, default=192)
    p.add_argument("--p2-batch", type=int, default=4)
    p.add_argument("--p2-prompt", type=int, default=256)
    p.add_argument("--p2-tokens", type=int, default=2048)
    p.add_argument("--chunk", type=int, default=1024, help="response positions per chunk of the LM head")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--vllm-gpu-memory", type=float, default=0.5, help="vLLM's share of the GPU, where it is installed")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="the card's dense bf16 peak (default: by name)")
    args = p.parse_args(argv)
    if args.dry_run:
        args.shapes = args.p2_shapes = ["tiny"]
        args.gen_batch, args.new_tokens, args.prompt_min, args.prompt_max = 4, 8, 4, 12
        args.p2_batch, args.p2_prompt, args.p2_tokens, args.chunk, args.repeats = 2, 16, 32, 16, 2
    device = torch.device("cpu") if args.dry_run or not torch.cuda.is_available() else torch.device("cuda")
    name, peak = card(device)
    peak = args.peak_tflops * 1e12 or peak
    commit = train.git_commit()
    report = {"card": name, "peak_bf16_tflops": peak / 1e12 if peak else None, "commit": commit,
              "torch": torch.__version__, "dry_run": args.dry_run, "generation": {}, "phase2": {}}
    import transformers
    report["transformers"] = transformers.__version__
    print(f"{name}, torch {torch.__version__}, transformers {transformers.__version__}, commit {commit}", flush=True)
    t0 = time.time()
    for part, shapes, fn in (("generation", args.shapes, lambda s: bench_generation(s, device, args)),
                             ("phase2", args.p2_shapes, lambda s: bench_phase2(s, device, args, peak))):
        if part in args.skip:
            continue
        for shape in shapes:
            try:
                report[part][shape] = fn(shape)
            except Exception as e:  # one failing part must not lose the others' numbers
                report[part][shape] = {"error": f"{type(e).__name__}: {e}"[:500]}
            print(f"{part} {shape}: {json.dumps(report[part][shape])}", flush=True)
            if "roofline_steps_per_s" in report[part][shape]:
                print(roofline_line(report[part][shape]), flush=True)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report["seconds"] = time.time() - t0
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
