"""Model loading and batched generation: seeds per rollout, stopping, prefix sharing, agreement with HF generate."""
import shutil

import pytest
import torch

import sdzero
import tasks


def _prompts(tok, questions, fewshot=False):
    return [sdzero.chat_prompt_ids(tok, tasks.prompt_messages(q, fewshot)) for q in questions]


QUESTIONS = ["What is 1 + 2?", "What is 13 + 4?", "What is 7 + 8?", "What is 29 + 30?", "What is 5 + 5?"]


def test_rollout_does_not_depend_on_its_batch(micro):
    model, tok = micro
    prompts = _prompts(tok, QUESTIONS)
    seeds = [11, 22, 33, 44, 55]
    together = sdzero.generate(model, tok, prompts, max_new_tokens=12, temperature=1.0, seeds=seeds, batch_size=8)
    alone = [sdzero.generate(model, tok, [p], max_new_tokens=12, temperature=1.0, seeds=[s])[0]
             for p, s in zip(prompts, seeds)]
    assert [r.response_ids for r in together] == [r.response_ids for r in alone]
    again = sdzero.generate(model, tok, prompts, max_new_tokens=12, temperature=1.0, seeds=seeds, batch_size=2)
    assert [r.response_ids for r in again] == [r.response_ids for r in together]
    other = sdzero.generate(model, tok, prompts, max_new_tokens=12, temperature=1.0, seeds=[1, 2, 3, 4, 5])
    assert [r.response_ids for r in other] != [r.response_ids for r in together]


def test_greedy_matches_hf_generate(micro):
    """Our KV-cached loop (left padding, prefix sharing) picks the same tokens as transformers' generate."""
    model, tok = micro
    prompts = _prompts(tok, QUESTIONS, fewshot=True)  # long shared prefix: exercises the shared-prefix path
    ours = sdzero.generate(model, tok, prompts, max_new_tokens=10, temperature=0.0, batch_size=8)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    for p, r in zip(prompts, ours):
        ref = model.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False, eos_token_id=eot,
                             pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
        if eot in ref:
            ref = ref[:ref.index(eot) + 1]
        assert r.response_ids == ref
        assert r.prompt_ids == p


def test_stops_at_end_of_turn_and_flags_truncation(micro):
    model, tok = micro
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    prompts = _prompts(tok, QUESTIONS)
    rollouts = sdzero.generate(model, tok, prompts, max_new_tokens=40, temperature=0.7, seeds=list(range(5)))
    for r in rollouts:
        if r.truncated:
            assert len(r.response_ids) == 40 and eot not in r.response_ids
        else:
            assert r.response_ids[-1] == eot and eot not in r.response_ids[:-1]
            assert "<|im_end|>" not in r.text
    assert any(not r.truncated for r in rollouts)  # the fixture model answers and stops
    short = sdzero.generate(model, tok, prompts[:2], max_new_tokens=3, temperature=0.7, seeds=[0, 1])
    assert all(r.truncated and len(r.response_ids) == 3 for r in short)


def test_prefix_shared_prefill_equals_plain(micro):
    model, tok = micro
    prompts = _prompts(tok, QUESTIONS, fewshot=True)
    assert sdzero._common_prefix_len(prompts) >= 16
    _, shared, _, _ = sdzero._prefill(model, prompts, tok.pad_token_id, torch.device("cpu"))
    _, plain, _, _ = sdzero._prefill(model, prompts, tok.pad_token_id, torch.device("cpu"), min_shared=10**9)
    with torch.no_grad():
        single = torch.stack([model(input_ids=torch.tensor([p])).logits[0, -1] for p in prompts])
    torch.testing.assert_close(shared, single, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(plain, single, atol=1e-4, rtol=1e-4)


def test_chat_prompt_ids_uses_template(micro):
    _, tok = micro
    ids = sdzero.chat_prompt_ids(tok, "What is 2 + 3?")
    assert tok.decode(ids) == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"


def test_load_model_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match="HF_HUB_OFFLINE"):
        sdzero.load_model("no-such-org/no-such-model")
    with pytest.raises(SystemExit, match="not a model folder"):
        sdzero.load_model(str(tmp_path / "missing"))


def test_load_local_folder(micro_model_dir):
    model, tok = sdzero.load_model(str(micro_model_dir), device=torch.device("cpu"))
    assert model.config.model_type == "qwen3" and tok.pad_token_id is not None


@pytest.mark.slow
def test_embedded_smollm2_converts_once_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("SDZERO_CACHE", str(tmp_path))
    path = sdzero.embedded_model_dir("smollm2-135m")
    assert (path / "config.json").exists() and path.parent == tmp_path
    model, tok = sdzero.load_model("smollm2-135m", device=torch.device("cpu"))
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert tok.eos_token == "<|im_end|>"
    assert sdzero.embedded_model_dir("smollm2-135m") == path  # cached: no second conversion
    ids = sdzero.chat_prompt_ids(tok, tasks.prompt_messages("What is 12 + 7?", fewshot=True))
    out = sdzero.generate(model, tok, [ids], max_new_tokens=24, temperature=0.0)[0]
    assert "\\boxed{" in out.text  # the few-shot turn makes the embedded model box its answer


def test_shared_prefix_hidden_matches_plain_forward_and_grads(micro):
    model, tok = micro
    model.train()
    seqs = _prompts(tok, QUESTIONS[:3], fewshot=True)
    seqs = [s + tok.encode(f" answer {i}" * (i + 1), add_special_tokens=False) for i, s in enumerate(seqs)]
    keep_from = min(len(s) for s in seqs) - 4
    hidden, shared = sdzero.shared_prefix_hidden(model, seqs, tok.pad_token_id, keep_from=keep_from)
    assert 16 <= shared <= keep_from
    loss = sum(hidden[b, :len(s) - shared].pow(2).sum() for b, s in enumerate(seqs))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ref_loss = 0
    for b, s in enumerate(seqs):
        h = model.model(input_ids=torch.tensor([s])).last_hidden_state[0]  # [L, H]
        torch.testing.assert_close(hidden[b, :len(s) - shared], h[shared:], atol=1e-5, rtol=1e-4)
        ref_loss = ref_loss + h[shared:].pow(2).sum()
    ref_loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------------------------ the static (GPU) path on CPU

def test_static_greedy_matches_eager(micro):
    """The static-cache loop (left padding to a multiple of pad_to, fixed-shape decode, finished rows kept)
    picks the same greedy tokens as the eager loop, with its own batching."""
    model, tok = micro
    prompts = _prompts(tok, QUESTIONS, fewshot=True) + _prompts(tok, ["Hi", "What is 100 + 200 + 300?"])
    eager = sdzero.generate(model, tok, prompts, max_new_tokens=20, temperature=0.0, backend="eager")
    static = sdzero.generate(model, tok, prompts, max_new_tokens=20, temperature=0.0, backend="static",
                             batch_size=3)
    assert [r.response_ids for r in static] == [r.response_ids for r in eager]
    assert [r.truncated for r in static] == [r.truncated for r in eager]
    assert [r.text for r in static] == [r.text for r in eager]


def test_static_sampling_depends_only_on_the_seed(micro):
    model, tok = micro
    prompts = _prompts(tok, QUESTIONS)
    seeds = [11, 22, 33, 44, 55]
    kw = dict(max_new_tokens=12, temperature=1.0, backend="static")
    together = sdzero.generate(model, tok, prompts, seeds=seeds, batch_size=8, **kw)
    alone = [sdzero.generate(model, tok, [p], seeds=[s], **kw)[0] for p, s in zip(prompts, seeds)]
    assert [r.response_ids for r in together] == [r.response_ids for r in alone]
    other = sdzero.generate(model, tok, prompts, seeds=[1, 2, 3, 4, 5], **kw)
    assert [r.response_ids for r in other] != [r.response_ids for r in together]


def test_gumbel_sample_draws_from_the_tempered_softmax():
    """Gumbel-max over counter-based uniforms is an exact categorical draw: frequencies over 40K seeds match
    softmax(logits / T) within 4 standard errors, at two temperatures; T <= 0 is argmax."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    n = 40_000
    seeds = torch.arange(n, dtype=torch.long) * 7919 + 3
    for temperature in (1.0, 0.5):
        draws = sdzero.gumbel_sample(logits.expand(n, -1), temperature, seeds, torch.tensor(4))
        freq = torch.bincount(draws, minlength=5).double() / n
        p = torch.softmax(logits.double() / temperature, -1)
        assert torch.all((freq - p).abs() <= 4 * (p * (1 - p) / n).sqrt() + 1e-9), (freq, p)
    assert torch.equal(sdzero.gumbel_sample(logits.expand(3, -1), 0.0, seeds[:3], torch.tensor(0)),
                       torch.zeros(3, dtype=torch.long))


def test_uniforms_are_strictly_inside_0_1_for_every_value_the_hash_makes():
    """B1: every 24-bit prefix the hash can produce (the transform reads the top 23 bits of 32) gives u in
    (0, 1) and a finite Gumbel. With 24 bits, (2^24 - 1 + 0.5) rounded up to 2^24 in fp32: u = 1.0, noise +inf."""
    z = torch.arange(1 << 24, dtype=torch.long) << 8  # [2^24], every value of z >> 8
    u = sdzero.uniform_from_bits(z | 0xFF)  # the low bits never matter
    assert torch.equal(u, sdzero.uniform_from_bits(z))
    assert u.min().item() == 2.0 ** -24 and u.max().item() == 1 - 2.0 ** -24
    g = sdzero.gumbel_from_uniform(u)
    assert bool(torch.isfinite(g).all()) and g.max().item() < 16.7 and g.min().item() > -2.9
    assert bool((g[1:] >= g[:-1]).all())  # monotone: order preserved, so argmax is Gumbel-max


def test_a_near_certain_token_is_drawn_at_the_hash_s_largest_value():
    """B1 end to end: at seed 66, step 2 the hash gives token 60222 its largest value (z >> 8 = 2^24 - 1),
    which drew that token under the old transform whatever its logit; now the near-certain token wins."""
    z = sdzero.counter_bits(torch.tensor([66]), torch.tensor(2), 1 << 16)
    assert (z[0, 60222] >> 8).item() == (1 << 24) - 1
    logits = torch.full((1, 1 << 16), -30.0)
    logits[0, 7] = 0.0  # p(7) = 1 - 6e-9
    assert sdzero.gumbel_sample(logits, 1.0, torch.tensor([66]), torch.tensor(2)).item() == 7


def test_sampler_frequencies_with_a_token_near_probability_one():
    """The draw matches softmax(l / T) where one token holds 1 - 3e-21 of the mass: the others (a vocabulary of
    SmolLM2's size) are drawn never, not at V / 2^24 of steps (one of these 1,000 under the old transform)."""
    vocab, n = 49_152, 1_000
    logits = torch.full((vocab,), -60.0)
    logits[3] = 0.0
    draws = torch.cat([sdzero.gumbel_sample(logits.expand(200, -1), 1.0, torch.arange(200) + 1000 * s,
                                            torch.tensor(s)) for s in range(n // 200)])
    assert draws.numel() == n and bool((draws == 3).all())


def test_truncate_logits_by_hand():
    """Top-k then top-p on p = (0.5, 0.3, 0.15, 0.05): top-p 0.75 keeps the tokens whose more probable ones
    hold less than 0.75 (0.5 and 0.3); top-k 3 drops the last; both off change nothing."""
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    inf = float("-inf")
    assert torch.equal(sdzero.truncate_logits(logits), logits)
    assert sdzero.truncate_logits(logits, top_p=0.75)[0, 2:].tolist() == [inf, inf]
    assert torch.isfinite(sdzero.truncate_logits(logits, top_p=0.75)[0, :2]).all()
    assert sdzero.truncate_logits(logits, top_k=3)[0].isinf().tolist() == [False, False, False, True]
    assert sdzero.truncate_logits(logits, top_p=0.01)[0].isinf().tolist() == [False, True, True, True]
    shuffled = logits[:, [2, 0, 3, 1]]  # order of the vocabulary does not matter
    assert sdzero.truncate_logits(shuffled, top_p=0.75)[0].isinf().tolist() == [True, False, True, False]


@pytest.mark.parametrize("top_p,top_k,want", [(0.75, 0, [0.625, 0.375, 0, 0]), (1.0, 3, [0.5 / 0.95, 0.3 / 0.95,
                                                                                          0.15 / 0.95, 0])])
def test_both_samplers_draw_from_the_truncated_softmax(top_p, top_k, want):
    """The eager sampler (per-row generators) and the counter-based one draw from the renormalised kept mass."""
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    n = 20_000
    seeds = torch.arange(n, dtype=torch.long) * 7919 + 3
    gumbel = sdzero.gumbel_sample(logits.expand(n, -1), 1.0, seeds, torch.tensor(1), top_p, top_k)
    eager = sdzero._sample_rows(logits.expand(n, -1), 1.0, [torch.Generator().manual_seed(i) for i in range(n)],
                                top_p, top_k)
    p = torch.tensor(want, dtype=torch.double)
    for draws in (gumbel, eager):
        freq = torch.bincount(draws, minlength=4).double() / n
        assert torch.all((freq - p).abs() <= 4 * (p * (1 - p) / n).sqrt() + 1e-9), (freq, p)


@pytest.mark.parametrize("backend", ["eager", "static"])
def test_generate_with_top_k_1_is_greedy(micro, backend):
    """top_k reaches the sampler on both backends: top-k 1 at temperature 0.7 decodes what greedy decodes."""
    model, tok = micro
    prompts = _prompts(tok, QUESTIONS[:3])
    kw = dict(max_new_tokens=12, backend=backend, **({"compile": False} if backend == "static" else {}))
    greedy = sdzero.generate(model, tok, prompts, temperature=0.0, **kw)
    top1 = sdzero.generate(model, tok, prompts, temperature=0.7, top_k=1, seeds=[5, 6, 7], **kw)
    assert [r.response_ids for r in top1] == [r.response_ids for r in greedy]


def test_counter_uniforms_are_a_function_of_seed_step_token():
    seeds = torch.tensor([0, 1, 2**62 + 5, -7 % 2**63], dtype=torch.long)
    u = sdzero.counter_uniforms(seeds, torch.tensor(3), 1000)
    assert u.shape == (4, 1000) and u.dtype == torch.float32
    assert bool((u > 0).all() and (u < 1).all())
    assert abs(u.mean().item() - 0.5) < 0.02 and abs(u.var().item() - 1 / 12) < 0.01
    assert torch.equal(u, sdzero.counter_uniforms(seeds, torch.tensor(3), 1000))  # deterministic
    assert torch.equal(u[1:2], sdzero.counter_uniforms(seeds[1:2], torch.tensor(3), 1000))  # row-independent
    assert not torch.equal(u, sdzero.counter_uniforms(seeds, torch.tensor(4), 1000))  # a new step, new draws
    assert (u[0] != u[1]).float().mean() > 0.99  # neighbouring seeds are unrelated


def test_kv_cache_size_of_a_real_shape():
    from transformers import Qwen3Config
    # Qwen3-4B: 36 layers, 8 KV heads of 128 dims; K and V in bf16: 2 x 36 x 8 x 128 x 2 bytes per token.
    cfg = Qwen3Config(num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                      hidden_size=2560)
    assert sdzero.kv_bytes_per_token(cfg, torch.bfloat16) == 147_456
    assert sdzero.rows_that_fit(None, 1024, 64, torch.device("cpu")) == 64  # no cap off CUDA


def test_generate_rejects_an_unknown_backend(micro):
    model, tok = micro
    with pytest.raises(ValueError, match="backend"):
        sdzero.generate(model, tok, _prompts(tok, QUESTIONS[:1]), max_new_tokens=2, temperature=0, backend="vllm")


def test_stop_strings_cut_at_the_completing_token(micro):
    """A row ends at the token that completes a stop string, on both backends, with the same tokens."""
    model, tok = micro
    prompts = _prompts(tok, QUESTIONS)
    free = sdzero.generate(model, tok, prompts, max_new_tokens=40, temperature=0.0, backend="eager")
    text = free[0].text
    stop = text[len(text) // 2:len(text) // 2 + 3]  # a piece from the middle of the first answer
    assert len(stop) == 3 and stop in text
    for backend in ("eager", "static"):
        cut = sdzero.generate(model, tok, prompts, max_new_tokens=40, temperature=0.0, backend=backend,
                              stop_strings=[stop])
        for full, r in zip(free, cut):
            if stop in full.text:
                assert stop in r.text and not r.truncated
                assert stop not in tok.decode(r.response_ids[:-1], skip_special_tokens=True)  # no token earlier
                assert full.response_ids[:len(r.response_ids)] == r.response_ids
            else:
                assert r.response_ids == full.response_ids


def test_activation_checkpointing_switch(micro_model_dir):
    model, _ = sdzero.load_model(str(micro_model_dir), device=torch.device("cpu"))
    assert not sdzero.activation_checkpointing_on(model)
    sdzero.enable_activation_checkpointing(model)
    assert sdzero.activation_checkpointing_on(model)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None,
                    reason="inductor needs a C++ compiler")
def test_compiled_sampler_draws_what_eager_draws():
    """The counter hash never overflows int64, so compiled code (undefined behaviour on signed overflow in
    C++) must reproduce eager draws exactly."""
    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(0))
    seeds = torch.tensor([0, 1, 12345, 2**62 + 7, 2**63 - 1])
    compiled = torch.compile(sdzero.gumbel_sample)
    for step in (0, 1, 2**31 + 3):
        assert torch.equal(compiled(logits, 0.7, seeds, torch.tensor(step)),
                           sdzero.gumbel_sample(logits, 0.7, seeds, torch.tensor(step)))


def test_static_falls_back_when_compiled_decoding_fails(micro, monkeypatch):
    model, tok = micro
    prompts = _prompts(tok, QUESTIONS[:3])

    def broken(*args):
        raise RuntimeError("inductor: no kernel for you")
    monkeypatch.setitem(sdzero._COMPILED, "step", broken)
    with pytest.warns(UserWarning, match="compiled decoding failed .*no kernel"):
        got = sdzero.generate_static(model, tok, prompts, max_new_tokens=8, temperature=1.0, seeds=[1, 2, 3],
                                     compile=True)
    want = sdzero.generate_static(model, tok, prompts, max_new_tokens=8, temperature=1.0, seeds=[1, 2, 3],
                                  compile=False)
    assert [r.response_ids for r in got] == [r.response_ids for r in want]
    assert sdzero._COMPILED["step"] is sdzero._decode_step  # later calls decode uncompiled


def test_a_folder_that_is_no_model_is_one_line(tmp_path):
    """A run folder, adapter/ or any other folder given as --model: one line, not transformers' traceback."""
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SystemExit) as e:
        sdzero.load_model(str(tmp_path), device=torch.device("cpu"))
    msg = str(e.value)
    assert msg.startswith(f"--model {tmp_path}: this folder holds no model") and "model/ folder" in msg
    assert "\n" not in msg
