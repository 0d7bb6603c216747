"""Peak host memory of the Phase 2 loss on CPU: naive full logits vs `distill.chunked_distill_loss`.

    python bench/distill_memory.py                       # V=151,936, T=4,096, H=1,024, top-64: ~10 GB peak
    python bench/distill_memory.py --T 64 --V 512 --H 32 --k 8 --chunk 16    # seconds

Both modes run one Phase 2 loss step (teacher side included) on the same seeded inputs: the student's
hidden states [1, T, H] and LM-head weight [V, H] (fp32, requiring grad, logits std ~3); the frozen
teacher's hidden states (the student's plus noise: it reads y in another context) and LM-head weight
(the student's plus noise); a mask with a padded tail.

    naive    logits_T = h_T @ W_T^T, logits_S = h_S @ W_S^T (both [T, V] fp32),
             masked_mean(per_token_divergence(logits_S, logits_T, topk=k)), backward
    chunked  train.py's path: chunked_teacher_topk(h_T, W_T, mask, k, chunk) (only [T, k] survives),
             chunked_distill_loss(h_S, W_S, logp, idx, mask, chunk), backward

Each mode runs in its own subprocess (`--mode naive|chunked --out FILE`), so its peak RSS
(getrusage ru_maxrss, the raw high-water mark of the whole process, setup included) is its own. It
also reports the RSS right before the loss computation and the peak minus that (the loss's own
footprint), and the peak as it stood before the loss (setup, to show the raw peak is the loss's).
Both children first run both losses once on a tiny problem, so lazy imports are not counted.
The child saves the loss and the gradients of hidden and W to FILE; the parent compares them,
prints a table, and as its last line a JSON object:
{"naive_peak_mib", "chunked_peak_mib", "naive_loss_delta_mib", "chunked_loss_delta_mib", "max_abs_diff"},
max_abs_diff = max(|loss difference|, max |grad hidden difference|, max |grad W difference|).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MIB = 1024 * 1024


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_inputs(args):
    """Seeded student (hidden, W) requiring grad, the frozen teacher's (hidden, W) and the mask."""
    import torch

    torch.manual_seed(args.seed)
    T, V, H = args.T, args.V, args.H
    scale = args.logit_std / H ** 0.5  # hidden ~ N(0, 1), W ~ N(0, scale^2): logits std ~ logit_std
    hidden = torch.randn(1, T, H)                                        # [1, T, H] student, y after x
    # The teacher reads y after x + y' + phrase: its own hidden states, near the student's.
    hidden_t = hidden + 0.3 * torch.randn(1, T, H)                       # [1, T, H]
    weight = torch.randn(V, H, generator=torch.Generator().manual_seed(args.seed + 1)).mul_(scale)  # [V, H]
    # The teacher's LM head: a frozen copy (the paper's default) that has drifted from the student's.
    weight_t = weight.clone()                                            # [V, H]
    g = torch.Generator().manual_seed(args.seed + 2)
    for start in range(0, V, 8192):  # noise in row blocks: no second [V, H] temporary
        rows = weight_t[start:start + 8192]
        rows.add_(torch.randn(rows.shape, generator=g).mul_(0.5 * scale))
    mask = torch.ones(1, T, dtype=torch.bool)                            # [1, T]
    if T > 1:
        mask[0, T - max(T // 32, 1):] = False                            # a padded tail, as in a batch
    hidden.requires_grad_(True)
    weight.requires_grad_(True)
    return hidden, weight, hidden_t, weight_t, mask


def naive_step(hidden, weight, hidden_t, weight_t, mask, args):
    """What a straightforward implementation writes: both models' full logits, then the top-k loss."""
    import torch

    from distill import masked_mean, per_token_divergence

    with torch.no_grad():
        logits_t = hidden_t @ weight_t.T                                  # [1, T, V] fp32
    logits = hidden @ weight.T                                            # [1, T, V] fp32
    loss = masked_mean(per_token_divergence(logits, logits_t, topk=args.k), mask)
    loss.backward()
    return loss


def chunked_step(hidden, weight, hidden_t, weight_t, mask, args):
    """What train.py's Phase 2 does: the teacher reduced to top-k chunk by chunk, then the chunked loss."""
    from distill import chunked_distill_loss, chunked_teacher_topk

    logp, idx = chunked_teacher_topk(hidden_t, weight_t, mask, args.k, chunk=args.chunk)  # [1, T, k] x2
    loss, _ = chunked_distill_loss(hidden, weight, logp, idx, mask, chunk=args.chunk)
    loss.backward()
    return loss


def run_mode(args) -> None:
    import torch

    t0 = time.perf_counter()
    step = naive_step if args.mode == "naive" else chunked_step
    # Warm-up on a tiny problem, both paths: lazy imports and one-time allocations (autograd,
    # custom functions) land before the baseline instead of in the measured step.
    tiny = argparse.Namespace(k=4, chunk=2)
    for warm in (naive_step, chunked_step):
        warm(torch.randn(1, 4, 8, requires_grad=True), torch.randn(16, 8, requires_grad=True),
             torch.randn(1, 4, 8), torch.randn(16, 8), torch.ones(1, 4, dtype=torch.bool), tiny)

    hidden, weight, hidden_t, weight_t, mask = make_inputs(args)
    gc.collect()
    setup_peak = peak_rss_bytes()
    before = current_rss_bytes()
    t1 = time.perf_counter()
    loss = step(hidden, weight, hidden_t, weight_t, mask, args)
    t2 = time.perf_counter()
    peak = peak_rss_bytes()
    result = {
        "mode": args.mode,
        "peak_bytes": peak,
        "rss_before_loss_bytes": before,
        "setup_peak_bytes": setup_peak,
        "loss_delta_bytes": peak - before,
        "setup_s": t1 - t0,
        "loss_s": t2 - t1,
        "loss": loss.detach(),
        "grad_hidden": hidden.grad,
        "grad_weight": weight.grad,
    }
    torch.save(result, args.out)


def spawn(mode: str, args, out: Path) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--mode", mode, "--out", str(out),
           "--T", str(args.T), "--V", str(args.V), "--H", str(args.H), "--k", str(args.k),
           "--chunk", str(args.chunk),
           "--seed", str(args.seed), "--logit-std", str(args.logit_std)]
    subprocess.run(cmd, check=True)


def compare(naive: dict, chunked: dict) -> float:
    diffs = [(naive["loss"].double() - chunked["loss"].double()).abs().item()]
    for name in ("grad_hidden", "grad_weight"):
        a, b = naive[name], chunked[name]
        if a.shape != b.shape:
            raise ValueError(f"{name}: shapes differ {tuple(a.shape)} vs {tuple(b.shape)}")
        a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        m = 0.0
        for start in range(0, a2.shape[0], 4096):  # row blocks: never a full-size difference tensor
            d = (a2[start:start + 4096] - b2[start:start + 4096]).abs().max().item()
            if d != d:  # nan
                return float("nan")
            m = max(m, d)
        diffs.append(m)
    return max(diffs) if all(d == d for d in diffs) else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=["naive", "chunked"], help="internal: run one mode and save to --out")
    p.add_argument("--out", help="with --mode: where the child saves its result (.pt)")
    p.add_argument("--T", type=int, default=4096, help="response tokens (batch 1)")
    p.add_argument("--V", type=int, default=151936, help="vocabulary size")
    p.add_argument("--H", type=int, default=1024, help="hidden size")
    p.add_argument("--k", type=int, default=64, help="teacher top-k")
    p.add_argument("--chunk", type=int, default=256, help="chunked_distill_loss chunk (positions)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logit-std", type=float, default=3.0, help="target std of the student's logits")
    args = p.parse_args()

    if args.mode:
        if not args.out:
            p.error("--mode needs --out")
        run_mode(args)
        return

    import torch

    results, walls = {}, {}
    with tempfile.TemporaryDirectory(prefix="distill_memory_") as tmp:
        for mode in ("naive", "chunked"):  # one after the other: one heavy process at a time
            out = Path(tmp) / f"{mode}.pt"
            t = time.perf_counter()
            spawn(mode, args, out)
            walls[mode] = time.perf_counter() - t
            results[mode] = torch.load(out, mmap=True, weights_only=True)
        max_abs_diff = compare(results["naive"], results["chunked"])
        rows = {m: {key: results[m][key] for key in ("peak_bytes", "rss_before_loss_bytes", "setup_peak_bytes",
                                                      "loss_delta_bytes", "setup_s", "loss_s")}
                for m in results}
        losses = {m: results[m]["loss"].item() for m in results}
        del results

    print(f"T={args.T} V={args.V} H={args.H} k={args.k} chunk={args.chunk} fp32 CPU, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'mode':<8} {'peak MiB':>10} {'before MiB':>11} {'delta MiB':>10} {'setup pk MiB':>13} "
          f"{'loss+bwd s':>11} {'wall s':>8} {'loss':>12}")
    for m, r in rows.items():
        print(f"{m:<8} {r['peak_bytes'] / MIB:>10.1f} {r['rss_before_loss_bytes'] / MIB:>11.1f} "
              f"{r['loss_delta_bytes'] / MIB:>10.1f} {r['setup_peak_bytes'] / MIB:>13.1f} "
              f"{r['loss_s']:>11.2f} {walls[m]:>8.1f} {losses[m]:>12.6f}")
    print(f"max_abs_diff (loss, grad hidden, grad W) = {max_abs_diff:.3e}")
    print(json.dumps({
        "naive_peak_mib": round(rows["naive"]["peak_bytes"] / MIB, 1),
        "chunked_peak_mib": round(rows["chunked"]["peak_bytes"] / MIB, 1),
        "naive_loss_delta_mib": round(rows["naive"]["loss_delta_bytes"] / MIB, 1),
        "chunked_loss_delta_mib": round(rows["chunked"]["loss_delta_bytes"] / MIB, 1),
        "max_abs_diff": max_abs_diff,
    }))


if __name__ == "__main__":
    main()
