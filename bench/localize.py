"""Token-level self-localization (the paper's analysis): where does the reviser disagree with the generator?

For a response y to question x with reward r, the per-token score is the Phase 2 divergence
KL_t = KL(pi_S(.|x, y<t) || pi_T(.|x, y, P_r, y<t)) (reverse KL over the teacher's top-k, as in training).
On wrong answers the mass should sit on the few tokens that made them wrong; on right answers it should be
flat and low. `token_scores` computes it for any (student, teacher) pair; `render_svg` draws a response with
each token shaded by its score (SVG: no dependencies, shows up in a README); the CLI renders a Phase 2
sample that train.py logged to samples.jsonl:

    python bench/localize.py runs/demo/samples.jsonl --out selfloc.svg      # the last wrong sample
"""
from __future__ import annotations

import argparse
import json
import sys
from html import escape
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import distill  # noqa: E402
import revise  # noqa: E402


@torch.no_grad()
def token_scores(student, teacher, tokenizer, prompt_ids: list[int], response_ids: list[int], reward: int, *,
                 style: str = "paper", divergence: str = "reverse", topk: int = 64, n_prefer: int = 3) -> dict:
    """Per-token divergence of one response, with the teacher's preferred tokens at each position.

    Returns {"tokens", "kl", "logp_student", "logp_teacher" (of the sampled token, full vocabulary),
    "teacher_top": [[(token, prob), ...] per position]}.
    """
    t_ids, t_start = revise.teacher_input_ids(tokenizer, prompt_ids, response_ids, reward, style)
    n = len(response_ids)

    def response_logits(model, ids, start):
        out = model(input_ids=torch.tensor([ids], device=next(model.parameters()).device)).logits[0]  # [L, V]
        return out[start - 1:start - 1 + n].float()  # [n, V]: position i predicts token i + 1

    logits_s = response_logits(student, list(prompt_ids) + list(response_ids), len(prompt_ids))  # [n, V]
    logits_t = response_logits(teacher, t_ids, t_start)  # [n, V]
    kl = distill.per_token_divergence(logits_s, logits_t, divergence=divergence, topk=topk or None)  # [n]
    y = torch.tensor(response_ids, device=logits_s.device)[:, None]  # [n, 1]
    p_t = logits_t.softmax(-1)  # [n, V]
    top_p, top_i = p_t.topk(n_prefer, dim=-1)  # [n, n_prefer]
    return {
        "tokens": tokenizer.convert_ids_to_tokens(list(response_ids)),
        "kl": kl.tolist(),
        "logp_student": logits_s.log_softmax(-1).gather(-1, y)[:, 0].tolist(),
        "logp_teacher": p_t.log().gather(-1, y)[:, 0].tolist(),
        "teacher_top": [[(tokenizer.convert_ids_to_tokens(int(i)), float(p)) for p, i in zip(ps, idx)]
                        for ps, idx in zip(top_p.tolist(), top_i.tolist())],
    }


def display_token(token: str) -> str:
    """Byte-level BPE marks (Ġ space, Ċ newline) as readable text."""
    return token.replace("Ġ", " ").replace("Ċ", "\u21b5").replace("ĉ", "\u21e5")


def render_svg(tokens: list[str], scores: list[float], *, title: str = "", notes: list[str] = (),
               vmax: float | None = None, width: int = 760, font_size: int = 14) -> str:
    """A response drawn token by token, each shaded red in proportion to its score: full red at `vmax`
    (default: this response's highest score; pass the same vmax to compare pictures)."""
    char_w, line_h, pad = font_size * 0.6, font_size * 1.9, 10
    top = pad + (line_h if title else 0)
    peak = max(vmax if vmax is not None else max(scores, default=0.0), 1e-12)
    boxes, x, y = [], pad, top
    for tok, s in zip(tokens, scores):
        text = display_token(tok)
        w = max(1, len(text)) * char_w
        if x + w > width - pad:
            x, y = pad, y + line_h
        alpha = min(1.0, max(0.0, s / peak))
        boxes.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{line_h - 4:.1f}" '
            f'fill="rgb(214,39,40)" fill-opacity="{alpha:.3f}"><title>{escape(tok)}: {s:.4f}</title></rect>'
            f'<text x="{x:.1f}" y="{y + font_size + 2:.1f}" xml:space="preserve">{escape(text)}</text>')
        x += w
        if tok.endswith("Ċ"):  # a newline token ends the line
            x, y = pad, y + line_h
    y += line_h + font_size  # a gap between the response and the notes
    lines = [f'<text x="{pad}" y="{y + i * (font_size + 6):.1f}">{escape(note)}</text>' for i, note in enumerate(notes)]
    height = y + len(notes) * (font_size + 6) + pad
    head = f'<text x="{pad}" y="{pad + font_size}" font-weight="bold">{escape(title)}</text>' if title else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0f}" '
            f'font-family="DejaVu Sans Mono, Menlo, monospace" font-size="{font_size}">'
            f'<rect width="100%" height="100%" fill="white"/>{head}{"".join(boxes)}{"".join(lines)}</svg>')


def render_sample(sample: dict, n_top: int = 3, vmax: float | None = None) -> str:
    """SVG of one Phase 2 sample from samples.jsonl, with its highest-KL tokens listed below."""
    tokens, kl = sample["tokens"], sample["kl"]
    order = sorted(range(len(kl)), key=lambda i: -kl[i])[:n_top]
    notes = []
    for i in order:
        note = f"KL {kl[i]:.3f} at token {i}: {display_token(tokens[i])!r}"
        if sample.get("teacher_top"):
            note += f", teacher preferred {display_token(sample['teacher_top'][i])!r}"
        notes.append(note)
    verdict = "correct" if sample["r"] else "wrong"
    title = f"{sample['question']} (gold {sample['answer']}; this answer is {verdict}; Phase 2 step {sample['step']})"
    if vmax is not None:
        notes.append(f"shading: full red = KL {vmax:g}")
    return render_svg(tokens, kl, title=title, notes=notes, vmax=vmax)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Render a Phase 2 sample's per-token KL from samples.jsonl as SVG")
    p.add_argument("samples", help="samples.jsonl of a run")
    p.add_argument("--out", default="selfloc.svg")
    p.add_argument("--step", type=int, help="Phase 2 step of the sample (default: the last wrong sample)")
    p.add_argument("--index", type=int, default=0, help="which sample of that step")
    p.add_argument("--vmax", type=float, help="KL shaded full red (default: the sample's highest)")
    args = p.parse_args(argv)
    rows = [json.loads(line) for line in Path(args.samples).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("phase") == "p2" and "kl" in r]
    if args.step is not None:
        rows = [r for r in rows if r["step"] == args.step][args.index:args.index + 1]
    else:
        rows = [r for r in rows if r["r"] == 0][-1:]
    if not rows:
        raise SystemExit(f"{args.samples}: no matching Phase 2 sample (--step {args.step}, --index {args.index})")
    Path(args.out).write_text(render_sample(rows[0], vmax=args.vmax))
    print(f"wrote {args.out}: {rows[0]['question']} step {rows[0]['step']}")


if __name__ == "__main__":
    main()
