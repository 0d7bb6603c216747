"""What the Phase 2 teacher sees beside the student's answer y (--teacher-context): the one thing that tells
SD-Zero's Phase 2 apart from its 2026 siblings, which share the rest (the student samples y, the same model
scores y in a privileged context, Eq. 4 distils that back).

    revise    SD-Zero (arXiv 2604.12002): chat(x) + y' + "\\n\\n" + P_r + "\\n\\n" + y, P_r chosen by the
              reward: the reviser continues its own answer (revise.teacher_input_ids). Phase 1 trains it.
    answer    OPSD ("Self-Distilled Reasoner: On-Policy Self-Distillation", arXiv 2601.18734):
              chat(x + ANSWER_HINT) + y, the hint naming the gold final answer (math) or holding a reference
              solution (code): the teacher knows where it must arrive.       --method opsd
    feedback  SDPO (Huebotter et al., "Reinforcement Learning via Self-Distillation", arXiv 2601.20802):
              chat(x + FEEDBACK_HINT) + y, the hint the verifier's feedback on y (math: its final answer and
              whether it is right; code: the first failing test's input, expected and actual output or
              error, from the sandbox's Verdict.detail; under --reward, what its verdict holds, at least
              whether y is right).                                           --method sdpo

The privileged text goes into the question's user turn, after the question, and the model's chat template
is applied to that turn: both papers put it in the teacher's prompt. The few-shot turns stay as they are.
y enters as the sampled ids, appended to the template's ids, never re-tokenised (revise.py says why), so
the teacher scores exactly the tokens the student sampled. answer and feedback start from the base model
(no Phase 1), as their papers do; the student's side is chat(x) + y in all three.

The templates are ours: each paper words its own, for its own models (OPSD: "Here is a reference
solution ...", SDPO: feedback "from your unsuccessful earlier attempt"); ours say the same in one sentence.
"""
from __future__ import annotations

import revise
import sdzero

TEACHER_CONTEXTS = ("revise", "answer", "feedback")
METHOD_CONTEXT = {"opsd": "answer", "sdpo": "feedback"}  # the named methods and the context each one is
CONTEXT_METHOD = {c: m for m, c in METHOD_CONTEXT.items()}

ANSWER_HINT = {"math": "For reference, the correct final answer is {answer}. Write a solution that reaches it.",
               "code": "For reference, here is a correct solution:\n```python\n{answer}\n```\n"
                       "Write your own solution."}
FEEDBACK_HINT = "Feedback from the verifier on your previous answer: {feedback}\nNow answer correctly."
MAX_FINAL_ANSWER_CHARS = 200  # the math feedback's quote of y's final answer
MAX_FEEDBACK_CHARS = 1500  # the code feedback (the sandbox caps its detail at 1200)


def reference_answer(task: str, example) -> str | None:
    """What OPSD's teacher is given: the gold final answer (math), or the task's reference solution (code,
    example.meta["reference"]: the embedded problems, HumanEval, MBPP); None when the dataset has none."""
    if task == "math":
        return str(example.answer)
    reference = example.meta.get("reference")
    return reference.strip() if isinstance(reference, str) and reference.strip() else None


def check_references(task: str, rows: list, dataset: str) -> None:
    """--teacher-context answer needs a reference for every Phase 2 question: say which are missing, once."""
    missing = [i for i, ex in enumerate(rows) if reference_answer(task, ex) is None]
    if missing:
        raise SystemExit(
            f"--teacher-context answer (OPSD): {len(missing)} of the {len(rows)} Phase 2 questions of --dataset "
            f"{dataset} have no reference solution (the first: row {missing[0]}); the code datasets with one are "
            "embedded, humaneval and mbpp. Use --teacher-context feedback (SDPO) or revise (SD-Zero).")


def feedback(task: str, verdict) -> str:
    """The verifier's feedback on y, in words: what SDPO's teacher is told. Only what the verdict knows: one from
    a --reward that returns a bool holds no answer, program or detail, so it says correct or not correct."""
    if task == "math":
        if verdict.extracted is not None:
            quoted = _cut(verdict.extracted, MAX_FINAL_ANSWER_CHARS)
            return f"The final answer {quoted} is {'correct' if verdict.correct else 'not correct'}."
        if verdict.correct:
            return "The answer is correct."
        return "The answer states no final answer." if verdict.reason == "no_answer" else "The answer is not correct."
    if verdict.correct:
        return "The program passed every test." if verdict.extracted is not None else "The answer is correct."
    if verdict.detail:
        return _cut(verdict.detail, MAX_FEEDBACK_CHARS)
    if verdict.reason == "no_answer":
        return "The answer contains no program."
    if verdict.extracted is None:  # no program checked, no detail: a --reward that said only "not correct"
        return "The answer is not correct."
    return {"parse_error": "The program does not compile.", "timeout": "The program ran out of time."}.get(
        verdict.reason, f"The program failed ({verdict.reason}).")


def hint(context: str, task: str, example, verdict) -> str:
    """The privileged text the teacher's user turn gets ("" for revise, whose privilege is y and P_r)."""
    if context == "answer":
        return ANSWER_HINT[task].format(answer=reference_answer(task, example))
    if context == "feedback":
        return FEEDBACK_HINT.format(feedback=feedback(task, verdict))
    return ""


def hinted_messages(messages: list[dict], text: str) -> list[dict]:
    """chat(x)'s messages with `text` after the question in its (last, user) turn."""
    last = messages[-1]
    return [*messages[:-1], {**last, "content": f"{last['content']}\n\n{text}"}]


def teacher_input(context: str, tokenizer, prompt_ids: list[int], messages: list[dict], response_ids: list[int],
                  reward: int, cap: int, *, hint_text: str = "", style: str = "paper", end_ids=None,
                  keep_end: bool = False, enable_thinking: bool = False) -> tuple[list[int], int, int]:
    """(ids, start, kept): the teacher's input for y cut to its first `kept` tokens so that the input fits `cap`
    (--teacher-max-len; the caller cuts the student's y alike), and where that y starts in it. kept == 0: not
    one token fits, and the sample carries no loss (one token stays so the shapes hold)."""
    if context == "revise":
        n_phrase = len(revise.phrase_ids(tokenizer, reward, style))
        kept = revise.teacher_y_length(len(prompt_ids), len(response_ids), n_phrase, cap)
        ids, start = revise.teacher_input_ids(tokenizer, prompt_ids, response_ids[:max(1, kept)], reward, style,
                                              end_ids, keep_end)
        return ids, start, kept
    if context not in TEACHER_CONTEXTS:
        raise ValueError(f"--teacher-context {context!r}: expected one of {', '.join(TEACHER_CONTEXTS)}")
    prompt = sdzero.chat_prompt_ids(tokenizer, hinted_messages(messages, hint_text), enable_thinking)
    kept = min(len(response_ids), max(0, cap - len(prompt)))
    return prompt + list(response_ids[:max(1, kept)]), len(prompt), kept


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + f" ... ({len(text) - n} more characters)"
