"""Build the tiny random-init causal LM + tokenizer used by the test suite.

Run once (deterministic); its output in tests/fixtures/micro/ is committed:

    python tests/make_micro_model.py

Produces a byte-level BPE tokenizer (vocab ~2048, trained on a small built-in
arithmetic corpus) with a ChatML chat template, and a 2-layer Qwen3 model
(hidden 64) initialised from torch.manual_seed(0), then briefly pre-trained
(TRAIN_STEPS AdamW steps, single thread, seeded; ~15 s of CPU) on chat-formatted
"What is a + b? Put the final answer in \\boxed{}." questions with a, b in 1..9,
20% of them as revision turns (y_init + "\\n\\n" + control phrase + "\\n\\n" + y_rev,
built token-exactly like revise.reviser_context_ids). Training stops early on
purpose: the model is right only *sometimes* (about half the time on 1..9
operands, rarely on larger ones) and ends its turns with <|im_end|>, so the
pipeline has both right and wrong rollouts to work with. Rebuilding is
bit-for-bit reproducible on the same torch build. Everything loads fully
offline with AutoTokenizer / AutoModelForCausalLM.from_pretrained(dir).
"""

from __future__ import annotations

import os
import random
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")  # tokenizer training: one thread

import time  # noqa: E402

import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

OUT_DIR = Path(__file__).resolve().parent / "fixtures" / "micro"
VOCAB_SIZE = 2048
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2

# Standard ChatML template (SmolLM2-Instruct's, minus the default system message).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

PHRASES = [
    "Let me rephrase the above solution.",
    "Wait, this response is not correct, let me start over.",
    "So, the final answer is",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "The answer is correct.",
    "First, we compute the sum.",
    "Therefore,",
    "Let's think step by step.",
]


def build_corpus(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    ops = [("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b)]
    lines: list[str] = []
    for _ in range(3000):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        sym, fn = rng.choice(ops)
        r = fn(a, b)
        q = f"What is {a} {sym} {b}?"
        sol = f"{a} {sym} {b} = {r}. So, the final answer is {r}. \\boxed{{{r}}}"
        style = rng.randrange(5)
        if style == 0:
            lines.append(f"{q} {sol}")
        elif style == 1:
            lines.append(f"{q}\n{sol}\n\n{rng.choice(PHRASES)}\n{sol}")
        elif style == 2:
            wrong = r + rng.randint(1, 9)
            lines.append(
                f"{q}\n{a} {sym} {b} = {wrong}.\n\nWait, this response is not correct, "
                f"let me start over.\n\n{sol}"
            )
        elif style == 3:
            lines.append(
                f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n{sol}<|im_end|>\n"
            )
        else:
            lines.append(
                f"Let me rephrase the above solution.\n\nWe have $\\frac{{{a}}}{{{b + 1}}}$ and "
                f"$x^{{{b % 9}}}$, so {a} {sym} {b} = {r}.\n\\boxed{{{r}}}"
            )
    names = ["Alice", "Bob", "Carol", "Dave", "Emma", "Frank", "Grace", "Henry", "Ivy", "Jack"]
    things = ["apples", "books", "coins", "marbles", "pencils", "cookies", "stickers", "cards"]
    verbs = ["buys", "finds", "gets", "gives away", "loses", "eats", "sells", "receives"]
    for _ in range(1500):
        n, t, v = rng.choice(names), rng.choice(things), rng.choice(verbs)
        a, b = rng.randint(2, 999), rng.randint(1, 99)
        lines.append(
            f"{n} has {a} {t}. {n} {v} {b} more {t}. How many {t} does {n} have now? "
            f"Let's think step by step. First, {n} has {a} {t}. Then {a} + {b} = {a + b}. "
            f"Therefore, the answer is \\boxed{{{a + b}}}."
        )
    lines.extend(PHRASES)
    lines.extend(" ".join(str(d) for d in range(10)) for _ in range(5))
    lines.extend(["0123456789", "{ } [ ] ( ) $ \\ ^ _ = + - * / . , ? ! : ;", "\n", "\n\n", "\n\n\n"])
    return lines


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(build_corpus(), trainer=trainer)
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def build_model(tok: PreTrainedTokenizerFast) -> Qwen3ForCausalLM:
    eos_id = tok.convert_tokens_to_ids("<|im_end|>")
    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=eos_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        torch_dtype="float32",
    )
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id, pad_token_id=tok.pad_token_id, bos_token_id=None
    )
    return model


# ---------------------------------------------------------------------------
# Brief deterministic pre-training, so the micro model is right *sometimes*.
# ---------------------------------------------------------------------------

MATH_INSTRUCTION = "Put the final answer in \\boxed{}."  # tasks.MATH_INSTRUCTION
REPHRASE = "Let me rephrase the above solution."  # revise.CONTROL_PHRASES["paper"][1]
RESTART = "Wait, this response is not correct, let me start over."  # revise.CONTROL_PHRASES["paper"][0]
TRAIN_MAX_OPERAND = 9
TRAIN_STEPS = 160  # tuned: about 50-60% greedy on 1..9 operands; by ~240 steps it is near 100%
TRAIN_BATCH = 32
TRAIN_LR = 3e-3
TWO_PART_SHARE = 0.2


def question(a: int, b: int) -> str:
    return f"What is {a} + {b}? {MATH_INSTRUCTION}"


def answer_text(a: int, b: int, c: int) -> str:
    return f"{a} + {b} = {c}. So, the final answer is \\boxed{{{c}}}."


def prompt_ids(tok, a: int, b: int) -> list[int]:
    return list(tok.apply_chat_template([{"role": "user", "content": question(a, b)}],
                                        add_generation_prompt=True, tokenize=True, return_dict=False))


def make_example(tok, rng: random.Random) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one chat-formatted example; labels are -100 outside the trained tokens.

    Built by concatenating token ids exactly as revise.reviser_context_ids does: chat(x) + y_init +
    ids("\\n\\n" + phrase + "\\n\\n") + y_rev + <|im_end|>. Loss is on the final answer and its
    <|im_end|> only: y_init and the phrase are context (so the model never learns to emit a phrase or a
    wrong answer itself, and always ends the turn after one answer).
    """
    a, b = rng.randint(1, TRAIN_MAX_OPERAND), rng.randint(1, TRAIN_MAX_OPERAND)
    c = a + b
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    ctx = prompt_ids(tok, a, b)
    if rng.random() < TWO_PART_SHARE:
        if rng.random() < 0.5:
            first, phrase = c, REPHRASE
        else:
            first = c + rng.choice([d for d in range(-4, 5) if d and c + d > 0])
            phrase = RESTART
        ctx = ctx + enc(answer_text(a, b, first)) + enc("\n\n" + phrase + "\n\n")
    target = enc(answer_text(a, b, c)) + [tok.eos_token_id]
    return ctx + target, [-100] * len(ctx) + target


def pretrain(model, tok, steps: int = TRAIN_STEPS, log_every: int = 0, callback=None) -> None:
    """Plain AdamW on freshly sampled batches; single-threaded and seeded, so bit-for-bit reproducible."""
    torch.manual_seed(0)
    rng = random.Random(0)
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR, weight_decay=0.0)
    model.train()
    for step in range(1, steps + 1):
        batch = [make_example(tok, rng) for _ in range(TRAIN_BATCH)]
        width = max(len(x) for x, _ in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (x, y) in enumerate(batch):  # right padding
            ids[i, :len(x)] = torch.tensor(x)
            labels[i, :len(y)] = torch.tensor(y)
            attn[i, :len(x)] = 1
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log_every and step % log_every == 0:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)
            if callback is not None:
                callback(step)
    model.eval()


@torch.no_grad()
def measure(model, tok, max_operand: int, *, n: int = 64, do_sample: bool = True,
            temperature: float = 0.7, seed: int = 0) -> tuple[float, float]:
    """(share whose text contains the correct \\boxed{c}, share that ended with <|im_end|>) on n questions."""
    rng = random.Random(1000 + max_operand)
    qs = [(rng.randint(1, max_operand), rng.randint(1, max_operand)) for _ in range(n)]
    tok.padding_side = "left"
    prompts = [tok.apply_chat_template([{"role": "user", "content": question(a, b)}],
                                       add_generation_prompt=True, tokenize=False) for a, b in qs]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    kw = {"do_sample": True, "temperature": temperature} if do_sample else {"do_sample": False}
    out = model.generate(**enc, max_new_tokens=24, **kw)
    gen = out[:, enc["input_ids"].shape[1]:]
    right = stopped = 0
    for (a, b), row in zip(qs, gen.tolist()):
        right += f"\\boxed{{{a + b}}}" in tok.decode(row, skip_special_tokens=True)
        stopped += tok.eos_token_id in row
    return right / n, stopped / n


def verify(out_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(out_dir)
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    ids = [tok.convert_tokens_to_ids(s) for s in SPECIAL_TOKENS]
    assert ids == [0, 1, 2], ids
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 0
    assert tok.bos_token is None
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True, tokenize=False
    )
    assert text == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n", repr(text)
    s = "What is 12 + 7? 12 + 7 = 19. So, the final answer is 19. \\boxed{19}\n\nOk<|im_end|>"
    assert tok.decode(tok(s)["input_ids"]) == s

    # Left-padded sampling stops at <|im_end|>.
    tok.padding_side = "left"
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True, tokenize=False)
        for c in ["What is 2 + 3?", "What is 12 + 7? Please reason step by step."]
    ]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert enc["input_ids"][0, 0].item() == tok.pad_token_id  # left padding
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, temperature=1.0, max_new_tokens=64)
    assert out.shape[0] == 2
    gen = out[:, enc["input_ids"].shape[1]:]
    for row in gen.tolist():
        if tok.eos_token_id in row:  # everything after the first eos must be padding
            k = row.index(tok.eos_token_id)
            assert all(t == tok.pad_token_id for t in row[k + 1:]), row
    # Force an eos early by biasing its logit: generation must stop there.
    from transformers import LogitsProcessor, LogitsProcessorList

    class _ForceEos(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] >= enc["input_ids"].shape[1] + 3:
                scores[:, tok.eos_token_id] = 1e4
            return scores

    out2 = model.generate(**enc, do_sample=True, max_new_tokens=64,
                          logits_processor=LogitsProcessorList([_ForceEos()]))
    assert out2.shape[1] == enc["input_ids"].shape[1] + 4, out2.shape
    for row in out2[:, enc["input_ids"].shape[1]:].tolist():  # a row may also end on its own earlier
        assert tok.eos_token_id in row, row
        k = row.index(tok.eos_token_id)
        assert all(t == tok.pad_token_id for t in row[k + 1:]), row

    # Forward + backward.
    model.train()
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    loss = model(**enc, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.model.embed_tokens.weight.grad is not None
    print(f"verify ok: loss={loss.item():.4f}, generated shape={tuple(out.shape)}")


def main() -> int:
    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    OUT_DIR.mkdir(parents=True)
    torch.set_num_threads(1)  # deterministic and light on shared CPUs
    tok = build_tokenizer()
    model = build_model(tok)
    t0 = time.perf_counter()
    pretrain(model, tok)
    print(f"pre-trained {TRAIN_STEPS} steps in {time.perf_counter() - t0:.1f} s")
    for max_operand in (TRAIN_MAX_OPERAND, 30):
        greedy, _ = measure(model, tok, max_operand, do_sample=False)
        sampled, stopped = measure(model, tok, max_operand)
        print(f"operands 1..{max_operand}: greedy acc {greedy:.2f}, sampled (T=0.7) acc {sampled:.2f}, "
              f"ended with <|im_end|> {stopped:.2f}")
    model.save_pretrained(OUT_DIR, safe_serialization=True)
    tok.save_pretrained(OUT_DIR)
    verify(OUT_DIR)
    total = sum(p.stat().st_size for p in OUT_DIR.iterdir())
    print(f"wrote {OUT_DIR} ({total / 1e6:.2f} MB): {sorted(p.name for p in OUT_DIR.iterdir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
