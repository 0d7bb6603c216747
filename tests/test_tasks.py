"""tasks.py: the embedded tasks, the prompts, HumanEval's test parser.

load_task (on embedded data, the Hub's datasets and local files) and the row mappings are tested in
test_data.py, HumanEval from its package through the mapping included.
"""
import ast
from pathlib import Path

import pytest

import tasks
import verify
from verifiers import sandbox

REPO = Path(__file__).resolve().parents[1]


def block(program):
    return f"Here it is.\n```python\n{program}```\n"


# ------------------------------------------------------------------------------------------ embedded math

def test_embedded_splits_are_disjoint_seeded_and_exact():
    s = tasks.embedded_math(50, 60, 70, seed=3)
    assert [len(s[k]) for k in ("n1", "n2", "eval")] == [50, 60, 70]
    questions = [ex.question for k in s for ex in s[k]]
    assert len(set(questions)) == len(questions)  # disjoint
    assert tasks.embedded_math(50, 60, 70, seed=3) == s  # a fixed function of the seed
    assert tasks.embedded_math(50, 60, 70, seed=4)["eval"] != s["eval"]
    for ex in s["n1"] + s["eval"]:
        a, op, b = ex.meta["a"], ex.meta["op"], ex.meta["b"]
        assert ex.question == f"What is {a} {op} {b}?" and int(ex.answer) == a + b
        assert verify.check_math(f"The final answer is \\boxed{{{ex.answer}}}.", ex.answer).correct


def test_held_out_set_does_not_depend_on_training_sizes():
    assert tasks.embedded_math(10, 20, 30)["eval"] == tasks.embedded_math(100, 5, 30)["eval"]


def test_fewshot_questions_never_appear_in_splits():
    s = tasks.embedded_math(300, 300, 290, max_operand=30)
    shots = {q for q, _, _ in tasks.FEWSHOT}
    assert not shots & {ex.question for k in s for ex in s[k]}


def test_operators_and_size_errors():
    s = tasks.embedded_math(20, 20, 20, ops="+-*", max_operand=9)
    for ex in s["n1"]:
        a, op, b = ex.meta["a"], ex.meta["op"], ex.meta["b"]
        assert int(ex.answer) == {"+": a + b, "-": a - b, "*": a * b}[op] and int(ex.answer) >= 0
    with pytest.raises(ValueError, match="--math-max-operand"):
        tasks.embedded_math(100, 100, 100, max_operand=5)
    with pytest.raises(ValueError, match="--math-ops"):
        tasks.embedded_math(1, 1, 1, ops="/")


# ---------------------------------------------------------------------------------------------- prompts

def test_prompt_messages():
    plain = tasks.prompt_messages("What is 1 + 2?")
    assert plain == [{"role": "user", "content": "What is 1 + 2? Put the final answer in \\boxed{}."}]
    shot = tasks.prompt_messages("What is 1 + 2?", fewshot=True, wrong_phrase="Wrong. I need to redo all.")
    assert shot[-1] == plain[-1] and shot[0]["role"] == "system"
    assert "\n\nWrong. I need to redo all.\n\n" in shot[-2]["content"]  # the run's own r=0 phrase
    assert tasks.prompt_messages("What is 1 + 2?", True, "P", task="math") == tasks.prompt_messages("What is 1 + 2?", True, "P")


def test_code_prompt_and_fewshot(sandbox_works):
    q = tasks.embedded_code(0, 0, 1)["eval"][0].question
    assert q.endswith(tasks.CODE_INSTRUCTION)
    assert tasks.prompt_messages(q, task="code") == [{"role": "user", "content": q}]
    shot = tasks.prompt_messages(q, fewshot=True, wrong_phrase="Wait, wrong.", task="code")
    assert shot[0]["role"] == "system" and shot[-1] == {"role": "user", "content": q} and len(shot) == 6
    revised = shot[-2]["content"]
    assert "\n\nWait, wrong.\n\n" in revised and revised.count("```python") == 2
    # The shown answers are right where they should be: the plain one and the revision (the last block).
    first_char = {"kind": "call", "entry_point": "first_char", "tests": [{"args": ["abc"], "expected": "a"}]}
    assert verify.check_code(revised, first_char).correct
    assert not verify.check_code(revised.split("Wait, wrong.")[0], first_char).correct
    times_ten = {"kind": "call", "entry_point": "times_ten", "tests": [{"args": [3], "expected": 30}]}
    assert verify.check_code(shot[2]["content"], times_ten).correct
    stdio_q = tasks.code_question("Print the sum of two numbers.", "stdio")
    assert "standard input" in stdio_q and stdio_q.endswith(tasks.CODE_INSTRUCTION)
    shot = tasks.prompt_messages(stdio_q, fewshot=True, wrong_phrase="Wait, wrong.", task="code")
    assert [m["content"] for m in shot[1::2]] == [q for q, _, _ in tasks.FEWSHOT_STDIO] + [stdio_q]
    first_char = {"kind": "stdio", "tests": [{"input": "hello\n", "output": "h\n"}]}
    assert verify.check_code(shot[-2]["content"], first_char).correct


# ------------------------------------------------------------------------------------------ embedded code

def test_embedded_code_splits_are_disjoint_seeded_and_balanced():
    s = tasks.embedded_code(40, 50, 64, seed=1)
    assert [len(s[k]) for k in ("eval", "n1", "n2")] == [64, 40, 50]
    questions = [ex.question for k in s for ex in s[k]]
    assert len(set(questions)) == len(questions)
    assert tasks.embedded_code(40, 50, 64, seed=1) == s
    assert tasks.embedded_code(5, 5, 64, seed=1)["eval"] == s["eval"]  # held-out first
    assert tasks.embedded_code(40, 50, 64, seed=2)["eval"] != s["eval"]
    assert not {q for q, _, _ in tasks.FEWSHOT_CODE} & set(questions)
    templates = [ex.meta["template"] for ex in s["eval"]]
    assert len(set(templates)) == len(tasks._TEMPLATES)  # every template in a short prefix
    for ex in s["eval"] + s["n1"]:
        task = ex.answer
        assert task["kind"] == "call" and 5 <= len(task["tests"]) <= 8 and verify.task_problem(task) is None
        assert f"`{task['entry_point']}(" in ex.question
    with pytest.raises(ValueError, match="distinct ones"):
        tasks.embedded_code(10**5, 0, 0)


def test_embedded_code_references_pass_and_wrong_programs_fail(sandbox_works):
    # One problem per template (the first 20: templates interleave), each reference through the sandbox;
    # a constant program fails every problem (its expected values differ), shown in the sandbox for a few.
    s = tasks.embedded_code(0, 0, len(tasks._TEMPLATES), seed=0)["eval"]
    assert len({ex.meta["template"] for ex in s}) == len(tasks._TEMPLATES)
    assert all(len({repr(t["expected"]) for t in ex.answer["tests"]}) > 1 for ex in s)
    right = [block(ex.meta["reference"]) for ex in s]
    wrong = [block(f"def {ex.answer['entry_point']}(*args):\n    return 0\n") for ex in s[:4]]
    verdicts = sandbox.check_code_batch(right + wrong, [ex.answer for ex in s] + [ex.answer for ex in s[:4]])
    assert [v.reason for v in verdicts[:len(s)]] == ["correct"] * len(s)
    assert not any(v.correct for v in verdicts[len(s):])


@pytest.mark.slow
def test_embedded_code_references_pass_and_wrong_programs_fail_on_more_variants(sandbox_works):
    s = tasks.embedded_code(0, 0, 3 * len(tasks._TEMPLATES), seed=1)["eval"]
    right = [block(ex.meta["reference"]) for ex in s]
    wrong = [block(f"def {ex.answer['entry_point']}(*args):\n    return 0\n") for ex in s]
    verdicts = sandbox.check_code_batch(right + wrong, [ex.answer for ex in s] * 2)
    assert [v.reason for v in verdicts[:len(s)]] == ["correct"] * len(s)
    assert not any(v.correct for v in verdicts[len(s):])


# ------------------------------------------------------------------------------------------ import graph

def test_tasks_imports_no_project_module():
    """Every project module may import tasks, so tasks imports none of them: no cycle can pass through it."""
    project = {p.stem for p in REPO.glob("*.py")} | {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    imported = set()
    for node in ast.walk(ast.parse((REPO / "tasks.py").read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert "verify" in project and "data" in project and not imported & project
