"""bench/localize.py, self-localization: per-token scores against the training loss, and the SVG renderer."""
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

import distill
import revise
import sdzero

sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))  # appended: top-level modules come first
import localize  # noqa: E402


def test_token_scores_match_the_phase2_divergence(micro):
    model, tok = micro
    teacher = model  # the same weights: only the context differs
    prompt = sdzero.chat_prompt_ids(tok, "What is 3 + 4?")
    y = tok.encode("3 + 4 = 8. The final answer is \\boxed{8}.", add_special_tokens=False) + [tok.eos_token_id]
    out = localize.token_scores(model, teacher, tok, prompt, y, reward=0, topk=16)
    assert out["tokens"] == tok.convert_ids_to_tokens(y)
    assert len(out["kl"]) == len(out["teacher_top"]) == len(y)
    # Reference: the same KL computed by hand from the two contexts.
    with torch.no_grad():
        ls = model(input_ids=torch.tensor([prompt + y])).logits[0, len(prompt) - 1:len(prompt) - 1 + len(y)]
        t_ids, start = revise.teacher_input_ids(tok, prompt, y, 0)
        lt = model(input_ids=torch.tensor([t_ids])).logits[0, start - 1:start - 1 + len(y)]
    ref = distill.per_token_divergence(ls, lt, topk=16)
    assert out["kl"] == pytest.approx(ref.tolist(), abs=1e-5)
    assert all(v >= -1e-6 for v in out["kl"])
    # The teacher's preferred tokens come sorted by probability.
    for prefs in out["teacher_top"]:
        probs = [p for _, p in prefs]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    # Same model on both sides, but a different context: the scores are not all zero, and they depend on r.
    other = localize.token_scores(model, teacher, tok, prompt, y, reward=1, topk=16)
    assert other["kl"] != out["kl"]


def test_render_svg_shades_the_highest_score_darkest():
    tokens = ["2", "Ġ+", "Ġ2", "Ġ=", "Ġ5", ".", "Ċ", "<done>&"]
    scores = [0.0, 0.1, 0.0, 0.2, 2.0, 0.0, 0.0, 0.5]
    svg = localize.render_svg(tokens, scores, title="What is 2 + 2?", notes=["KL 2.000 at token 4"])
    root = ET.fromstring(svg)  # well-formed XML, special characters escaped
    ns = "{http://www.w3.org/2000/svg}"
    rects = [r for r in root.iter(ns + "rect") if r.get("fill-opacity") is not None]
    assert len(rects) == len(tokens)
    alphas = [float(r.get("fill-opacity")) for r in rects]
    assert alphas.index(max(alphas)) == 4 and max(alphas) == 1.0 and alphas[0] == 0.0
    texts = "".join(t.text or "" for t in root.iter(ns + "text"))
    assert " 5" in texts and "<done>&" in texts and "\u21b5" in texts


def test_cli_renders_the_last_wrong_sample(tmp_path):
    rows = [{"phase": "p2", "step": s, "question": f"What is {s} + 1?", "answer": str(s + 1), "y": "x", "r": r,
             "tokens": ["Ġ7"], "kl": [0.3], "teacher_top": ["Ġ8"]} for s, r in ((1, 0), (2, 1), (3, 0), (4, 1))]
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "fig.svg"
    localize.main([str(path), "--out", str(out)])
    svg = out.read_text()
    assert "What is 3 + 1?" in svg and "teacher preferred" in svg
    with pytest.raises(SystemExit, match="no matching"):
        localize.main([str(path), "--step", "9", "--out", str(out)])
