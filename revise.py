"""The Reviser: control phrases, reviser contexts, token-exact teacher inputs, SRT examples (Eq. 1-2).

All sequences are built by concatenating token ids. Re-tokenising joined text would not reproduce them:
BPE tokenizers merge across the join ("...19.\\n\\n" + "Wait" tokenises differently from the whole), so the
teacher would score tokens the student never sampled. Two of the authors' variants are text by design and
tokenise again: two-stage SRT's user turn (user_turn_revision_example) and --srt-clean (clean_response_ids).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sdzero import chat_prompt_ids, end_of_turn_ids

# P_r, chosen by the binary reward r: the paper's, and the authors' code's per model family (README, "The paper,
# equation by equation").
CONTROL_PHRASES = {
    "paper": {1: "Let me rephrase the above solution.",
              0: "Wait, this response is not correct, let me start over."},
    "qwen": {1: "Let me rephrase the above solution.",
             0: "Wait, this response is wrong. Let me correct it."},
    "olmo": {1: "Let me rephrase the above solution.",
             0: "Wrong. I need to redo all."},
}


def strip_end_of_turn(tokenizer, response_ids: list[int], end_ids=None) -> list[int]:
    """y': the response without its final end-of-turn token (if it has one), so the turn continues.

    end_ids: the ids generation stopped on, sdzero.end_of_turn_ids(tokenizer, model). Pass them: a model's
    generation_config can stop on ids its tokenizer does not call eos (Qwen3: <|endoftext|> beside <|im_end|>).
    """
    end_ids = end_of_turn_ids(tokenizer) if end_ids is None else end_ids
    if response_ids and response_ids[-1] in end_ids:
        return list(response_ids[:-1])
    return list(response_ids)


def phrase_ids(tokenizer, reward: int, style: str = "paper") -> list[int]:
    """ids("\\n\\n" + P_r + "\\n\\n"), tokenised on its own so every context uses the same ids."""
    if style not in CONTROL_PHRASES:
        raise ValueError(f"--phrase-style {style!r}: expected one of {sorted(CONTROL_PHRASES)}")
    return tokenizer.encode("\n\n" + CONTROL_PHRASES[style][int(reward)] + "\n\n", add_special_tokens=False)


def reviser_context_ids(tokenizer, prompt_ids: list[int], y_init_ids: list[int], reward: int,
                        style: str = "paper", end_ids=None) -> list[int]:
    """chat(x) + y_init + "\\n\\n" + P_r + "\\n\\n": the assistant turn continues, no new user turn."""
    return (list(prompt_ids) + strip_end_of_turn(tokenizer, y_init_ids, end_ids)
            + phrase_ids(tokenizer, reward, style))


def teacher_input_ids(tokenizer, prompt_ids: list[int], response_ids: list[int], reward: int,
                      style: str = "paper", end_ids=None, keep_end: bool = False) -> tuple[list[int], int]:
    """Phase 2 teacher input: chat(x) + y' + ids(phrase) + y, and the index where the second copy of y starts.

    The teacher's logits at positions start-1 .. len(ids)-2 predict y, i.e. pi_T(. | x, y, P_r, y_<t).
    keep_end: the first copy is y itself, its end-of-turn token included (the authors' code; --teacher-keep-end).
    """
    if keep_end:
        context = list(prompt_ids) + list(response_ids) + phrase_ids(tokenizer, reward, style)
    else:
        context = reviser_context_ids(tokenizer, prompt_ids, response_ids, reward, style, end_ids)
    return context + list(response_ids), len(context)


def teacher_y_length(n_prompt: int, n_y: int, n_phrase: int, cap: int) -> int:
    """How many tokens of y fit the teacher's input x + y' + phrase + y under `cap` (y cut for student and
    teacher alike), or 0 when not one token fits twice: that sample carries no loss (the authors zero it)."""
    if n_prompt + 2 * n_y + n_phrase <= cap:
        return n_y
    return max(0, (cap - n_prompt - n_phrase) // 2)


@dataclass
class SRTExample:
    """One kept tuple (x, y_init, P_r, y_rev) as a token sequence with the masks of Eq. 1 and Eq. 2.

    Eq. 1 (L_rev) and Eq. 2 (L_gen) score the same token sequence chat(x) + y_init + phrase + y_rev: they
    differ only in which tokens carry loss, so both terms come from one forward pass.
    mask[i] == 1 means token input_ids[i] is a target (predicted from input_ids[:i]).
    """
    input_ids: list[int]
    rev_mask: list[int]  # Eq. 1: y_rev tokens only
    gen_mask: list[int]  # Eq. 2: the whole assistant turn y_init + phrase + y_rev
    reward: int  # r of y_init


def srt_example(tokenizer, prompt_ids: list[int], y_init_ids: list[int], reward: int, y_rev_ids: list[int],
                style: str = "paper", end_ids=None) -> SRTExample:
    context = reviser_context_ids(tokenizer, prompt_ids, y_init_ids, reward, style, end_ids)
    ids = context + list(y_rev_ids)
    n_prompt, n_ctx = len(prompt_ids), len(context)
    rev_mask = [0] * n_ctx + [1] * len(y_rev_ids)
    gen_mask = [0] * n_prompt + [1] * (len(ids) - n_prompt)
    return SRTExample(ids, rev_mask, gen_mask, int(reward))


def user_turn_revision_example(tokenizer, messages: list[dict], y_init_ids: list[int], reward: int,
                               y_rev_ids: list[int], style: str = "paper", end_ids=None,
                               enable_thinking: bool = False) -> SRTExample:
    """The revision stage of the authors' two-stage SRT (prepare_data.py, stage 2): the question, y_init
    and P_r joined by "\\n\\n" in the user turn, y_rev the whole assistant answer, loss on y_rev only:
    chat(x + "\\n\\n" + y_init + "\\n\\n" + P_r) + y_rev. messages: chat(x)'s messages, the question last.
    y_init enters as text (theirs is vLLM's text, special tokens skipped)."""
    y_text = tokenizer.decode(strip_end_of_turn(tokenizer, y_init_ids, end_ids), skip_special_tokens=True)
    last = messages[-1]
    user = {**last, "content": f"{last['content']}\n\n{y_text}\n\n{CONTROL_PHRASES[style][int(reward)]}"}
    prompt = chat_prompt_ids(tokenizer, list(messages[:-1]) + [user], enable_thinking)
    mask = [0] * len(prompt) + [1] * len(y_rev_ids)
    return SRTExample(prompt + list(y_rev_ids), mask, list(mask), int(reward))


# ------------------------------------------------------------------------------ the authors' cleaning of D_rev
# Their prepare_data.py cleans the kept tuples' text before SFT (--srt-clean): a tail that repeats a block
# (the "loop until the token budget" failure) is cut to one copy, and a revision's chat-style opening ("You're
# absolutely right -", "Good catch.") is dropped, since the reviser continues its own answer and no user spoke.
# Text in, text out: the cleaned responses are tokenised again, as they are in the authors' SFT.

def trim_repeating_tail(text: str, min_block: int = 10, max_block: int = 1500, min_repeats: int = 3,
                        passes: int = 5) -> str:
    """Cut a tail made of >= min_repeats copies of one block (min_block..max_block characters, the shortest
    period first) down to one copy; again, up to `passes` times (a cut can expose a longer period)."""
    for _ in range(passes):
        n = len(text)
        for period in range(min_block, min(max_block, n // min_repeats) + 1):
            start = n - period  # the periodic tail: text[i] == text[i + period] for i >= start
            while start > 0 and text[start - 1] == text[start - 1 + period]:
                start -= 1
            if n - start >= min_repeats * period:
                text = text[:start + period]
                break
        else:
            return text
    return text


_SYCOPHANTIC_OPENING = re.compile(
    r"\A(?:"
    r"you(?:'re|\s+are)\s+(?:absolutely\s+)?right\s+to\s[^.!?\n]*[.!?]"  # "You're right to question ..."
    r"|(?:(?:yes|indeed)[,!.]?\s+)?you(?:'re|\s+are)\s+(?:absolutely\s+)?right\s*[-\u2014,:.]+"  # "You're right -"
    r"|thank\s+you\s+for[^.!?\n]*[.!?]"
    r"|great\s+question[^.!?\n]*?[.!?\u2014-]"
    r"|(?:good|nice)\s+(?:catch|point|observation)[^.!?\n]*?[.!?\u2014-]"
    r")\s*", re.IGNORECASE)


def strip_sycophantic_opening(text: str) -> str:
    """Drop chat-style openings addressed to a user, repeatedly; re-capitalise what is left if any went."""
    out, stripped = text.lstrip(), False
    while m := _SYCOPHANTIC_OPENING.match(out):
        out, stripped = out[m.end():].lstrip(), True
    if not stripped:
        return text
    return out[:1].upper() + out[1:]


def clean_response_ids(tokenizer, ids: list[int], revision: bool, end_ids=None) -> list[int]:
    """A kept response cleaned as text and tokenised again, its end-of-turn token (if any) kept at the end.
    Unchanged text keeps its ids exactly."""
    end_ids = end_of_turn_ids(tokenizer) if end_ids is None else end_ids
    end = [ids[-1]] if ids and ids[-1] in end_ids else []
    body = ids[:len(ids) - len(end)]
    text = tokenizer.decode(body)
    cleaned = trim_repeating_tail(text)
    if revision:
        cleaned = strip_sycophantic_opening(cleaned)
    if cleaned == text:
        return list(ids)
    return tokenizer.encode(cleaned, add_special_tokens=False) + end
