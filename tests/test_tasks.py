"""The embedded math task and local data: disjoint seeded splits, exact answers, clear errors."""
import pytest

import tasks
import verify


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


def test_prompt_messages():
    plain = tasks.prompt_messages("What is 1 + 2?")
    assert plain == [{"role": "user", "content": "What is 1 + 2? Put the final answer in \\boxed{}."}]
    shot = tasks.prompt_messages("What is 1 + 2?", fewshot=True, wrong_phrase="Wrong. I need to redo all.")
    assert shot[-1] == plain[-1] and shot[0]["role"] == "system"
    assert "\n\nWrong. I need to redo all.\n\n" in shot[-2]["content"]  # the run's own r=0 phrase


def test_jsonl_loading_and_errors(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"q": "What is 1 + 1?", "a": 2}\n\n{"q": "What is 2 + 2?", "a": "4"}\n{"q": "x", "a": "1"}\n')
    rows = tasks.load_jsonl(good, "q", "a")
    assert [r.answer for r in rows] == ["2", "4", "1"]
    s = tasks.load_task("math", str(good), 1, 1, 1, question_field="q", answer_field="a")
    assert sorted(len(v) for v in s.values()) == [1, 1, 1]
    with pytest.raises(ValueError, match=r"row 1 has no field 'question' \(--question-field\)"):
        tasks.load_jsonl(good)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "1"}\nnot json\n')
    with pytest.raises(ValueError, match="row 2 is not valid JSON"):
        tasks.load_jsonl(bad)
    with pytest.raises(ValueError, match="no such file"):
        tasks.load_task("math", str(tmp_path / "missing.jsonl"), 1, 1, 1)
    with pytest.raises(ValueError, match="3 rows, but"):
        tasks.load_task("math", str(good), 2, 1, 1, question_field="q", answer_field="a")
    with pytest.raises(ValueError, match="--task code"):
        tasks.load_task("code", None, 1, 1, 1)
