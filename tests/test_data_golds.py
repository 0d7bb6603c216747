"""Golds of the files a user names (data/registry.py user_math_gold, data/load.py): GSM8K's `####` read as the
gsm8k mapping reads it, a boxed solution as its box, a prose gold refused naming the row and the flag, the
real golds of bench/ and the fixtures accepted, the README's local-file rows loading, and a malformed code
row's note showing the shape expected."""
import json
import re
from pathlib import Path

import pytest

import data
import verify
from data import load, registry
from data.load import rows_from

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "datasets"

GSM8K_ROWS = [  # GSM8K's own format: the worked solution, then "#### <final answer>"
    {"question": "Tom has 29 apples and buys 14 more. How many apples does he have?",
     "answer": "He has 29 + 14 = <<29+14=43>>43 apples.\n#### 43"},
    {"question": "A shop sold 1,200 pens on Monday and 300 on Tuesday. How many pens did it sell?",
     "answer": "It sold 1,200 + 300 = <<1200+300=1500>>1,500 pens.\n#### 1,500"},
    {"question": "Mia reads 5 pages a day for 7 days. How many pages does she read?",
     "answer": "She reads 5 * 7 = <<5*7=35>>35 pages.\n#### 35"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def all_examples(got):
    return [ex for k in ("eval", "n1", "n2") for ex in got[k]]


def test_gsm8k_format_local_golds_are_the_final_number_and_score(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", GSM8K_ROWS)
    got = data.load_task("math", path, 1, 1, 1)
    assert not got.skipped
    by_question = {ex.question: ex.answer for ex in all_examples(got)}
    assert by_question == {GSM8K_ROWS[0]["question"]: "43", GSM8K_ROWS[1]["question"]: "1500",
                           GSM8K_ROWS[2]["question"]: "35"}
    tom = next(ex for ex in all_examples(got) if ex.answer == "43")
    assert verify.check_math("29 + 14 = 43, so the answer is \\boxed{43}.", tom.answer).correct
    assert not verify.check_math("\\boxed{42}", tom.answer).correct


def test_local_gsm8k_golds_read_as_the_gsm8k_mapping_reads_them(tmp_path):
    lines = (FIXTURES / "gsm8k.jsonl").read_text().splitlines()
    rows = [r for r in (json.loads(line) for line in lines if line.strip()) if "####" in r["answer"]]
    named, _ = rows_from("gsm8k", rows)
    got = data.load_task("math", write_jsonl(tmp_path / "g.jsonl", rows), len(rows), 0, 0, seed=None)
    assert sorted(ex.answer for ex in got["n1"]) == sorted(ex.answer for ex in named) == ["12", "1500"]


def test_a_boxed_gold_is_its_box_end_to_end(tmp_path):
    rows = [{"question": "Simplify 6/8.", "answer": "Divide both by 2: $\\boxed{\\frac{3}{4}}$."},
            {"question": "Who is fastest?", "answer": "So $\\boxed{\\text{Evelyn}}$ is our answer."}]
    got = data.load_task("math", write_jsonl(tmp_path / "b.jsonl", rows), 2, 0, 0)
    answers = {ex.question: ex.answer for ex in got["n1"]}
    assert answers == {"Simplify 6/8.": "\\frac{3}{4}", "Who is fastest?": "\\text{Evelyn}"}
    assert verify.check_math("6/8 = 3/4, so \\boxed{\\frac{3}{4}}", answers["Simplify 6/8."]).correct
    assert verify.check_math("The answer is \\boxed{Evelyn}.", answers["Who is fastest?"]).correct


PROSE = "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April and May."


def test_a_prose_gold_is_refused_naming_the_file_row_and_flag(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"q": "What is 1 + 1?", "sol": "2"}, {"q": "What is 2 + 2?", "sol": "4"},
                                              {"q": "How many clips?", "sol": PROSE}])
    with pytest.raises(ValueError) as e:
        data.load_task("math", path, 1, 0, 0, question_field="q", answer_field="sol")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"--dataset {path}: row 3, field 'sol' (--answer-field) is prose, not a final answer")
    assert "'Natalia sold 48/2" in message and "\\boxed{42}" in message and "####" in message
    with pytest.raises(ValueError, match=r"^--eval-dataset .*p\.jsonl: row 3, field 'sol' \(--answer-field\)"):
        data.load_task("math", None, 1, 0, 2, eval_dataset=path, question_field="q", answer_field="sol")
    # --reward: the user's callable grades, and reads its golds its own way
    got = data.load_task("math", path, 3, 0, 0, question_field="q", answer_field="sol", verify_gold=False)
    assert PROSE in [ex.answer for ex in got["n1"]]


def test_a_prose_gold_of_a_hub_id_is_refused_too(monkeypatch):
    rows = [{"problem": "What is 1 + 1?", "solution": "1 + 1 = <<1+1=2>>2\n#### 2"},
            {"problem": "What is 2 + 3?", "solution": "We add them and get five, the sum."}]
    monkeypatch.setattr(load, "_hub_split", lambda label, hub_id, config, split, **kw: (rows, f"{hub_id} (test)"))
    with pytest.raises(ValueError, match=r"^--dataset someone/set: row 1, field 'solution' \(--answer-field\) is pr"):
        data.load_task("math", "someone/set", 2, 0, 0, seed=None, question_field="problem", answer_field="solution")
    got = data.load_task("math", "someone/set", 1, 0, 0, seed=None, question_field="problem", answer_field="solution")
    assert got["n1"][0].answer == "2"


def real_golds():
    """Every gold of the fixtures and bench/ (the verifier's cases, from MATH, GSM8K, AIME, OpenR1 and the
    Math-Verify suite) and the short answers MATH writes: each must stay a gold a local file can hold."""
    golds = []
    files = [*sorted(FIXTURES.glob("*.jsonl")), *sorted((REPO / "bench").glob("*.jsonl")),
             REPO / "examples" / "physics.jsonl"]
    for path in files:
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            golds += [row[k] for k in ("gold", "answer") if isinstance(row.get(k), str)]
    return golds + ["\\text{Evelyn}", "\\text{(C)}", "Monday", "x \\in [2, 5)", "2\\sqrt{3}", "5 \\text{ cm}",
                    "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "(-\\infty, -2) \\cup (2, \\infty)",
                    "\\text{No solution}", "all real numbers", "ab + bc + ca", "Alice and Bob", "25 square cm"]


def test_real_golds_are_accepted_and_only_solutions_are_prose():
    golds = real_golds()
    assert len(golds) > 500
    refused = []
    for gold in golds:
        try:
            registry.user_math_gold(gold, "--dataset x.jsonl: row 1", "answer")
        except ValueError:
            refused.append(gold)
    # the one: the gsm8k fixture's row without its "####", which the gsm8k mapping skips as no_####_answer
    assert refused == ["She reads 5*7=35 pages."]
    for prose in (PROSE, "The answer is 42.", "We have $x + 1 = 3$, so $x = 2$.",
                  "Add the two numbers\nthen divide by 2", "There are six of them and each of them costs two dollars"):
        assert registry.is_prose(prose), prose


def test_math_golds_that_are_numbers_load_and_other_types_are_refused_by_name(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [{"question": "What is 1 + 1?", "answer": 2},
                                              {"question": "What is 1 / 2?", "answer": 0.5}])
    got = data.load_task("math", path, 2, 0, 0)
    assert sorted(ex.answer for ex in got["n1"]) == ["0.5", "2"]
    for value, kind in (([1, 2], "list"), ({"value": 2}, "dict"), (True, "bool")):
        path = write_jsonl(tmp_path / "t.jsonl", [{"question": "What is 1 + 1?", "answer": "2"},
                                                  {"question": "Which?", "answer": value}])
        with pytest.raises(ValueError, match=rf"t\.jsonl: row 2, field 'answer' \(--answer-field\) is a {kind}; "
                                             "a math answer is a string or a number"):
            data.load_task("math", path, 1, 0, 0)


# ------------------------------------------------------------------------------ README and code rows

def readme_rows() -> list[dict]:
    """The example rows of the README's "Local files" section, from its jsonl blocks."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Local files"):]
    section = section[:section.index("\n## ")]
    blocks = re.findall(r"^(`{3,})jsonl\n(.*?)^\1$", section, re.S | re.M)
    return [json.loads(line) for _, block in blocks for line in block.splitlines() if line.strip()]


def test_the_readme_local_file_rows_load(tmp_path, sandbox_works):
    rows = readme_rows()
    math = [r for r in rows if "question" in r and isinstance(r["answer"], str)]
    code = [r for r in rows if isinstance(r["answer"], dict)]
    chat = [r for r in rows if "prompt" in r]
    assert (len(math), len(code), len(chat)) == (3, 3, 1)
    got = data.load_task("math", write_jsonl(tmp_path / "m.jsonl", math), 3, 0, 0, seed=None)
    assert [ex.answer for ex in got["n1"]] == ["42", "\\frac{3}{4}", "43"] and not got.skipped
    got = data.load_task("code", write_jsonl(tmp_path / "c.jsonl", code), 3, 0, 0, seed=None)
    assert [ex.answer["kind"] for ex in got["n1"]] == ["stdio", "call", "assert"] and not got.skipped
    assert [ex.answer for ex in got["n1"]] == [json.loads(t) for t in load.CODE_TASK_EXAMPLES]
    programs = ["a, b = map(int, input().split())\nprint(a + b)\n", "def add(a, b):\n    return a + b\n",
                "def add(a, b):\n    return a + b\n"]
    for ex, program in zip(got["n1"], programs):
        assert verify.check_code(f"```python\n{program}```", ex.answer).correct, ex.answer
    got = data.load_task("math", write_jsonl(tmp_path / "t.jsonl", chat), 1, 0, 0, question_field="prompt")
    assert got["n1"][0].question == "What is 17 + 25?" and got["n1"][0].answer == "42"


def test_a_malformed_code_row_is_counted_and_the_first_is_shown_with_the_shape(tmp_path):
    ok = {"kind": "call", "entry_point": "f", "tests": [{"args": [1], "expected": 2}]}
    path = write_jsonl(tmp_path / "c.jsonl", [{"question": "Write f.", "answer": ok},
                                              {"question": "Broken.", "answer": "{'kind': 'call'"},
                                              {"question": "No tests.", "answer": {"kind": "call", "tests": []}}])
    got = data.load_task("code", None, 1, 0, -1, eval_dataset=path)  # the held-out set: every row examined
    assert [ex.answer for ex in got["eval"]] == [ok]
    bad_task = registry.gold_problem("code", {"kind": "call", "tests": []})
    assert got.skipped == {"eval/malformed_code_task": 1, f"eval/{bad_task}": 1}  # each counted
    assert len(got.notes) == 1  # the first one examined is shown
    note = got.notes[0]
    assert re.match(rf"{re.escape(path)}: row (2|3) is skipped: its 'answer' \(--answer-field\) is not (JSON|a task)",
                    note)
    assert all(shape in note for shape in load.CODE_TASK_EXAMPLES) and "\n" not in note
    for shape in load.CODE_TASK_EXAMPLES:
        assert verify.task_problem(json.loads(shape)) is None, shape
    # the first malformed row in the order examined: here the one the sandbox would refuse
    write_jsonl(tmp_path / "c.jsonl", [{"question": "No tests.", "answer": {"kind": "call", "tests": []}},
                                       {"question": "Write f.", "answer": ok}])
    got = data.load_task("code", path, 1, 0, 0, seed=None)
    assert got.notes[0].startswith(f"{path}: row 1 is skipped: its 'answer' (--answer-field) is not a task the "
                                   f"sandbox can run: {bad_task}; a code task is a JSON object")


@pytest.mark.parametrize("gold, stated", [
    ("Answer: 43", "43"), ("The answer is 56", "56"), ("Final answer: 7", "7"), ("The correct answer is 5.", "5"),
    ("He has 29 + 14 = <<29+14=43>>43 apples.\n#### 43", "43"), ("#### 1,550", "1550"), ("Monday", "Monday"),
    ("AB = 4, CD = 5", "AB = 4, CD = 5"), ("\\pi/2", "\\pi/2"), ("5 cm", "5 cm"), ("x = 5", "x = 5")])
def test_a_gold_is_the_final_answer_it_states_for_the_loader_and_check_math_alike(gold, stated):
    """Answer markers in a gold are read as a response's are; check_math reads a gold as the loader does, so a
    --reward that passes a GSM8K solution as the gold scores the right answer."""
    assert registry.user_math_gold(gold, "--dataset x.jsonl: row 1", "answer") == stated
    assert verify.gold_answer(gold) == stated
    assert verify.check_math(f"So the result is \\boxed{{{stated}}}.", gold).correct


@pytest.mark.parametrize("gold", ["Tom has 43.", "It is 7", "so x = 5", "He sold 1,550 pencils in all."])
def test_a_number_said_in_a_sentence_is_prose(gold):
    with pytest.raises(ValueError, match="is prose, not a final answer"):
        registry.user_math_gold(gold, "--dataset x.jsonl: row 1", "answer")
