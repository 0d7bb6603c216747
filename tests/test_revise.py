"""Token-exact reviser contexts, teacher inputs (the layout revise.teacher_input_ids documents), SRT masks (Eq. 1-2)."""
import pytest

import revise
import sdzero


@pytest.fixture(scope="module")
def smol_tok():
    """SmolLM2's real tokenizer (from the embedded GGUF, converted once into the cache)."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(sdzero.embedded_model_dir("smollm2-135m"))


def _tokenizers(micro_model_dir, smol_tok):
    from transformers import AutoTokenizer
    return {"micro": AutoTokenizer.from_pretrained(micro_model_dir), "smollm2": smol_tok}


@pytest.mark.parametrize("which", ["micro", "smollm2"])
@pytest.mark.parametrize("reward", [0, 1])
@pytest.mark.parametrize("ends_with_eot", [True, False])
@pytest.mark.parametrize("style", ["paper", "qwen", "olmo"])
def test_teacher_input_ids_layout(micro_model_dir, smol_tok, which, reward, ends_with_eot, style):
    tok = _tokenizers(micro_model_dir, smol_tok)[which]
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    prompt = sdzero.chat_prompt_ids(tok, "What is 12 + 7? Put the final answer in \\boxed{}.")
    y_text = "12 + 7 = 19.\n\nSo, the final answer is 19."
    y = tok.encode(y_text, add_special_tokens=False) + ([eot] if ends_with_eot else [])

    ids, start = revise.teacher_input_ids(tok, prompt, y, reward, style)

    phrase = tok.encode("\n\n" + revise.CONTROL_PHRASES[style][reward] + "\n\n", add_special_tokens=False)
    y_prime = y[:-1] if ends_with_eot else y
    assert ids == prompt + y_prime + phrase + y  # the contract, id for id
    assert ids[start:] == y
    assert start == len(prompt) + len(y_prime) + len(phrase)
    # No end-of-turn token inside the assistant turn before the second copy: the turn continues.
    assert eot not in ids[len(prompt):start]
    # The text between prompt and second copy is y_init + "\n\n" + P_r + "\n\n", exactly.
    assert tok.decode(ids[len(prompt):start]) == y_text + "\n\n" + revise.CONTROL_PHRASES[style][reward] + "\n\n"
    # The reviser context used in Phase 1 is the teacher input without the second copy.
    assert revise.reviser_context_ids(tok, prompt, y, reward, style) == ids[:start]


def test_smollm2_retokenising_would_differ(smol_tok):
    """Why ids are concatenated: BPE merges across the join, so text round-trips change the tokens."""
    y = smol_tok.encode("The answer is 19.", add_special_tokens=False)
    joined = y + revise.phrase_ids(smol_tok, 0) + y
    retok = smol_tok.encode(smol_tok.decode(joined), add_special_tokens=False)
    assert smol_tok.decode(retok) == smol_tok.decode(joined)
    # The phrase block ends in "\n\n", one token on its own; followed by text it splits in two.
    assert retok != joined


def test_control_phrases_match_spec():
    assert revise.CONTROL_PHRASES["paper"][0] == "Wait, this response is not correct, let me start over."
    assert revise.CONTROL_PHRASES["paper"][1] == "Let me rephrase the above solution."
    assert revise.CONTROL_PHRASES["qwen"][0] == "Wait, this response is wrong. Let me correct it."
    assert revise.CONTROL_PHRASES["olmo"][0] == "Wrong. I need to redo all."
    with pytest.raises(ValueError, match="phrase-style"):
        revise.phrase_ids(None, 0, "nope")


@pytest.mark.parametrize("reward", [0, 1])
def test_srt_example_masks(micro_model_dir, reward):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    prompt = sdzero.chat_prompt_ids(tok, "What is 3 + 4?")
    y_init = tok.encode("3 + 4 = 8.", add_special_tokens=False) + [eot]
    y_rev = tok.encode("3 + 4 = 7.", add_special_tokens=False) + [eot]
    ex = revise.srt_example(tok, prompt, y_init, reward, y_rev)
    phrase = revise.phrase_ids(tok, reward)
    assert ex.input_ids == prompt + y_init[:-1] + phrase + y_rev
    n = len(ex.input_ids)
    assert len(ex.rev_mask) == len(ex.gen_mask) == n
    # Eq. 1: exactly the y_rev tokens (its end-of-turn token included: the reviser learns to stop).
    assert [t for t, m in zip(ex.input_ids, ex.rev_mask) if m] == y_rev
    # Eq. 2: the whole assistant turn y_init + phrase + y_rev, nothing of the prompt.
    assert [t for t, m in zip(ex.input_ids, ex.gen_mask) if m] == y_init[:-1] + phrase + y_rev
    assert ex.gen_mask[:len(prompt)] == [0] * len(prompt)
    assert ex.reward == reward


def test_end_ids_from_the_generation_config_are_stripped_from_y_prime(smol_tok):
    """A model whose generation_config stops on an id its tokenizer does not call eos (Qwen3 stops on both
    <|im_end|> and <|endoftext|>): y ends in that id, and y' in every context drops it, as generation stopped."""
    from types import SimpleNamespace
    tok = smol_tok
    im_end, endoftext = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[im_end, endoftext]))
    end_ids = sdzero.end_of_turn_ids(tok, model)
    assert endoftext in end_ids and endoftext not in sdzero.end_of_turn_ids(tok)  # the tokenizer alone misses it
    prompt = sdzero.chat_prompt_ids(tok, "What is 3 + 4?")
    y = tok.encode("3 + 4 = 7.", add_special_tokens=False) + [endoftext]
    phrase = revise.phrase_ids(tok, 1)
    ids, start = revise.teacher_input_ids(tok, prompt, y, 1, "paper", end_ids)
    assert ids == prompt + y[:-1] + phrase + y and start == len(prompt) + len(y) - 1 + len(phrase)
    assert revise.reviser_context_ids(tok, prompt, y, 1, "paper", end_ids) == ids[:start]
    ex = revise.srt_example(tok, prompt, y, 1, y, "paper", end_ids)
    assert ex.input_ids == ids and endoftext not in ex.input_ids[len(prompt):start]


def test_teacher_y_length_cuts_y_and_gives_no_room_zero():
    assert revise.teacher_y_length(10, 20, 5, 100) == 20  # 10 + 40 + 5 fits
    assert revise.teacher_y_length(10, 20, 5, 45) == 15  # (45 - 15) // 2
    assert revise.teacher_y_length(10, 20, 5, 16) == 0  # one token twice needs 17: no loss from this sample
    assert revise.teacher_y_length(10, 20, 5, 17) == 1


def test_end_at_stop_cuts_the_stop_and_ends_the_turn(smol_tok):
    """The authors' Phase 1 stops (vLLM drops the stop string; their SFT appends the end of turn): a text stop
    is cut at the token boundary before it, a special-token stop is replaced, anything else is unchanged."""
    import run
    tok = smol_tok
    im_end, im_start = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|im_start|>")
    special, text_stops = run.split_stops(tok, "<|im_end|>,<|endoftext|>,<|im_start|>,Question:")
    assert special == {im_end, im_start, tok.convert_tokens_to_ids("<|endoftext|>")} and text_stops == ["Question:"]
    ids = tok.encode("So the answer is 7.\n\nQuestion:", add_special_tokens=False)
    y = sdzero.Rollout([1], ids, tok.decode(ids), truncated=False)
    cut = sdzero.end_at_stop(tok, y, {im_start}, ["Question:"], im_end)
    assert cut.response_ids[-1] == im_end and cut.text == "So the answer is 7.\n\n" and not cut.truncated
    assert cut.response_ids[:-1] == ids[:len(cut.response_ids) - 1]
    ids = tok.encode("So the answer is 7.", add_special_tokens=False)
    y = sdzero.Rollout([1], ids + [im_start], tok.decode(ids), truncated=False)
    assert sdzero.end_at_stop(tok, y, {im_start}, ["Question:"], im_end).response_ids == ids + [im_end]
    plain = sdzero.Rollout([1], ids + [im_end], tok.decode(ids), truncated=False)
    assert sdzero.end_at_stop(tok, plain, {im_start}, ["Question:"], im_end) is plain
    long = sdzero.Rollout([1], ids, tok.decode(ids), truncated=True)
    assert sdzero.end_at_stop(tok, long, {im_start}, ["Question:"], im_end) is long


def test_teacher_keep_end_keeps_the_end_token_in_the_first_copy(smol_tok):
    """--teacher-keep-end (the authors' code): chat(x) + y + phrase + y, the end token in both copies."""
    tok = smol_tok
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    prompt = sdzero.chat_prompt_ids(tok, "What is 3 + 4?")
    y = tok.encode("3 + 4 = 7.", add_special_tokens=False) + [eot]
    phrase = revise.phrase_ids(tok, 0)
    ids, start = revise.teacher_input_ids(tok, prompt, y, 0, "paper", None, keep_end=True)
    assert ids == prompt + y + phrase + y and start == len(prompt) + len(y) + len(phrase)
    assert revise.teacher_input_ids(tok, prompt, y, 0)[0] == prompt + y[:-1] + phrase + y  # the paper's default


def test_trim_repeating_tail():
    """A tail of >= 3 copies of a 10..1500-character block is cut to one period from where the repetition
    starts (which can begin inside the first copy); other text is untouched."""
    assert revise.trim_repeating_tail("Hence: " + "The answer is 5. " * 30) == "Hence: The answer is 5."
    # "The answer is 5." ends like " So the answer is 5.": the period starts at its "h"
    assert revise.trim_repeating_tail("The answer is 5." + " So the answer is 5." * 30) == "The answer is 5. So t"
    assert revise.trim_repeating_tail("x" * 1000) == "x" * 10
    text = "Step 1: 2 + 3 = 5. Step 2: 5 + 1 = 6. The answer is 6."
    assert revise.trim_repeating_tail(text) is text
    two = "abcdefghij" * 2  # two copies are not a loop
    assert revise.trim_repeating_tail("Start. " + two) == "Start. " + two
    assert revise.trim_repeating_tail("") == ""


def test_strip_sycophantic_opening():
    cases = {"You're absolutely right \u2014 the sum is 19.": "The sum is 19.",
             "Good catch! Thank you for checking. the answer is 5.": "The answer is 5.",
             "Yes, you are right: 7.": "7.",
             "You are right to question that step. So 7.": "So 7.",
             "Great question \u2014 it is 7.": "It is 7."}
    for text, want in cases.items():
        assert revise.strip_sycophantic_opening(text) == want, text
    assert revise.strip_sycophantic_opening("You're right.") == ""  # the whole reply was the opening
    for text in ("The answer is 5.", "Greatness is 7.", "  Right, 7.", "Thank you"):
        assert revise.strip_sycophantic_opening(text) == text


def test_clean_response_ids_keeps_unchanged_ids_and_the_end_token(smol_tok):
    tok = smol_tok
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    ids = tok.encode("3 + 4 = 7.", add_special_tokens=False) + [eot]
    assert revise.clean_response_ids(tok, ids, True) == ids
    loop = tok.encode("Good catch! 3 + 4 = 7." + " The answer is 7." * 20, add_special_tokens=False) + [eot]
    cleaned = revise.clean_response_ids(tok, loop, True)
    # one period of the loop stays, from where it starts ("... = 7." ends like " The answer is 7.")
    assert cleaned[-1] == eot and tok.decode(cleaned[:-1]) == "3 + 4 = 7. The answer is"
    assert tok.decode(revise.clean_response_ids(tok, loop, False)[:-1]).startswith("Good catch!")  # y_init: tail only


def test_user_turn_revision_example_layout(smol_tok):
    """The authors' revision stage, token for token: chat(x + "\n\n" + y_init + "\n\n" + P_r) + y_rev, the loss
    on y_rev (its end token included) and nothing else."""
    tok = smol_tok
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    messages = [{"role": "user", "content": "What is 3 + 4?"}]
    y_init = tok.encode("3 + 4 = 8.", add_special_tokens=False) + [eot]
    y_rev = tok.encode("3 + 4 = 7.", add_special_tokens=False) + [eot]
    ex = revise.user_turn_revision_example(tok, messages, y_init, 0, y_rev, "qwen")
    prompt = sdzero.chat_prompt_ids(tok, [{"role": "user", "content": "What is 3 + 4?\n\n3 + 4 = 8.\n\n"
                                                                     "Wait, this response is wrong. Let me correct it."}])
    assert ex.input_ids == prompt + y_rev and ex.reward == 0
    assert [t for t, m in zip(ex.input_ids, ex.rev_mask) if m] == y_rev and ex.gen_mask == ex.rev_mask
    assert tok.decode(ex.input_ids).count("<|im_start|>assistant") == 1  # one assistant turn: the revision
