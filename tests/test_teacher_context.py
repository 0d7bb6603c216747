"""The Phase 2 teacher's contexts (teacher_context.py): revise (SD-Zero), answer (OPSD), feedback (SDPO),
token-exact with the real SmolLM2 tokenizer, their texts, the cap on y, and the methods that name them."""
import json
import zlib

import pytest

import config
import revise
import sdzero
import tasks
import teacher_context as tc
import train
import verify
from verify import Verdict


@pytest.fixture(scope="module")
def smol_tok():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(sdzero.embedded_model_dir("smollm2-135m"))


def _messages(question="What is 12 + 7?", fewshot=True):
    return tasks.prompt_messages(question, fewshot, revise.CONTROL_PHRASES["paper"][0])


@pytest.mark.parametrize("which", ["micro", "smollm2"])
@pytest.mark.parametrize("context", ["answer", "feedback"])
@pytest.mark.parametrize("fewshot", [True, False])
def test_hinted_teacher_input_is_the_template_of_the_hinted_turn_then_y(micro_model_dir, smol_tok, which, context,
                                                                        fewshot):
    from transformers import AutoTokenizer
    tok = smol_tok if which == "smollm2" else AutoTokenizer.from_pretrained(micro_model_dir)
    messages = _messages(fewshot=fewshot)
    prompt = sdzero.chat_prompt_ids(tok, messages)
    y_text = "12 + 7 = 18. The final answer is \\boxed{18}."
    y = tok.encode(y_text, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    ex = tasks.Example("What is 12 + 7?", "19")
    verdict = verify.check_math(y_text, "19")
    hint = tc.hint(context, "math", ex, verdict)
    ids, start, kept = tc.teacher_input(context, tok, prompt, messages, y, 0, 4096, hint_text=hint)

    teacher_prompt = tok.apply_chat_template(tc.hinted_messages(messages, hint), add_generation_prompt=True,
                                             tokenize=True, return_dict=False)
    assert ids == list(teacher_prompt) + y and ids[start:] == y and kept == len(y)  # y's ids, appended as sampled
    assert hint == ({"answer": "For reference, the correct final answer is 19. Write a solution that reaches it.",
                     "feedback": "Feedback from the verifier on your previous answer: The final answer 18 is not "
                                 "correct.\nNow answer correctly."}[context])
    # The hint sits right after the question, inside its user turn; every earlier turn is the student's own.
    text = tok.decode(ids[:start])
    assert "What is 12 + 7? Put the final answer in \\boxed{}.\n\n" + hint + "<|im_end|>" in text
    assert text.count(hint) == 1 and text.endswith("<|im_start|>assistant\n")
    head, tail = tok.decode(prompt).rsplit("Put the final answer in \\boxed{}.<|im_end|>", 1)  # the last turn
    assert head + "Put the final answer in \\boxed{}.\n\n" + hint + "<|im_end|>" + tail == text
    n_common = len(sdzero.chat_prompt_ids(tok, messages[:-1])) if len(messages) > 1 else 0
    assert ids[:n_common] == prompt[:n_common]  # the system and few-shot turns: the same ids


def test_revise_context_is_revise_teacher_input_ids(smol_tok):
    prompt = sdzero.chat_prompt_ids(smol_tok, _messages())
    y = smol_tok.encode("12 + 7 = 19.", add_special_tokens=False) + [smol_tok.convert_tokens_to_ids("<|im_end|>")]
    for reward in (0, 1):
        ids, start, kept = tc.teacher_input("revise", smol_tok, prompt, _messages(), y, reward, 4096)
        assert (ids, start) == revise.teacher_input_ids(smol_tok, prompt, y, reward) and kept == len(y)


def test_a_long_y_is_cut_to_the_cap_and_no_room_means_kept_zero(smol_tok):
    messages = _messages(fewshot=False)
    prompt = sdzero.chat_prompt_ids(smol_tok, messages)
    y = list(range(1000, 1040))
    hint = tc.hint("answer", "math", tasks.Example("q", "19"), None)
    n_hinted = len(sdzero.chat_prompt_ids(smol_tok, tc.hinted_messages(messages, hint)))
    ids, start, kept = tc.teacher_input("answer", smol_tok, prompt, messages, y, 0, n_hinted + 25, hint_text=hint)
    assert kept == 25 and len(ids) == n_hinted + 25 and ids[start:] == y[:25]  # one copy of y: all the room is y's
    ids, start, kept = tc.teacher_input("answer", smol_tok, prompt, messages, y, 0, n_hinted, hint_text=hint)
    assert kept == 0 and ids[start:] == y[:1]  # one token for the shapes, carrying no loss
    # revise holds y twice: the same cap above x + phrase keeps half as much
    n_phrase = len(revise.phrase_ids(smol_tok, 0))
    _, _, kept = tc.teacher_input("revise", smol_tok, prompt, messages, y, 0, len(prompt) + n_phrase + 25)
    assert kept == 12


def test_math_feedback_names_y_s_final_answer():
    assert tc.feedback("math", verify.check_math("So \\boxed{27}.", "27")) == "The final answer 27 is correct."
    assert tc.feedback("math", verify.check_math("So \\boxed{26}.", "27")) == "The final answer 26 is not correct."
    assert tc.feedback("math", verify.check_math("I do not know.", "27")) == "The answer states no final answer."
    long = tc.feedback("math", Verdict(False, "mismatch", "9" * 500))
    assert long == f"The final answer {'9' * 200} ... (300 more characters) is not correct."


def test_code_feedback_is_the_sandbox_detail_or_the_reason():
    assert tc.feedback("code", Verdict(True, "correct", "x")) == "The program passed every test."
    detail = "Test 2 failed.\nCall: f(1)\nExpected: 2\nGot: 3"
    assert tc.feedback("code", Verdict(False, "mismatch", "x", detail)) == detail
    assert tc.feedback("code", Verdict(False, "no_answer")) == "The answer contains no program."
    assert tc.feedback("code", Verdict(False, "runtime_error", "x")) == "The program failed (runtime_error)."
    assert len(tc.feedback("code", Verdict(False, "mismatch", "x", "a" * 5000))) < 1600


@pytest.mark.parametrize("task", ["math", "code"])
def test_feedback_under_a_plugged_reward_says_only_what_its_verdict_knows(task):
    """A --reward that returns a bool gives Verdict(True, "correct") or Verdict(False, "mismatch") (verifiers/
    plugin.py), with no answer, program or detail: its feedback is correct or not correct, never "no final
    answer" or "passed every test", nor a reason the callable never gave."""
    assert tc.feedback(task, Verdict(True, "correct")) == "The answer is correct."
    assert tc.feedback(task, Verdict(False, "mismatch")) == "The answer is not correct."
    assert tc.feedback(task, Verdict(True, "no_answer")) == "The answer is correct."  # it scored: correct wins


def test_feedback_under_a_plugged_reward_gives_what_its_verdict_holds():
    assert tc.feedback("math", Verdict(True, "correct", "80 km/h")) == "The final answer 80 km/h is correct."
    assert tc.feedback("math", Verdict(False, "no_answer")) == "The answer states no final answer."
    assert tc.feedback("code", Verdict(False, "mismatch", None, "Expected 2, got 3.")) == "Expected 2, got 3."


@pytest.mark.slow  # a training run
def test_sdpo_under_a_plugged_reward_tells_the_teacher_the_reward_s_verdict(tmp_path, monkeypatch):
    """--method sdpo --reward FILE:coin (a bool): every teacher prompt holds "The answer is correct." exactly
    for the answers the callable judged correct, and "The answer is not correct." for the others."""
    reward = tmp_path / "coin.py"
    reward.write_text("import zlib\n\ndef coin(response, example):\n"
                      "    return zlib.crc32(response.encode()) % 2 == 0\n")
    seen = []
    build = train.Phase2Rows.build

    def spy(run, batch, prompts, ys, verdicts):
        rows = build(run, batch, prompts, ys, verdicts)
        seen.append((run, ys, verdicts, rows))
        return rows
    monkeypatch.setattr(train.Phase2Rows, "build", staticmethod(spy))
    train.main(["--preset", "smoke", "--method", "sdpo", "--out", str(tmp_path / "run"), "--budget", "8",
                "--n-eval", "4", "--reward", f"{reward}:coin"])
    said = []
    for run, ys, verdicts, rows in seen:
        for i, (y, v) in enumerate(zip(ys, verdicts)):
            assert v.correct == (zlib.crc32(y.text.encode()) % 2 == 0)
            text = run.tok.decode(rows.teacher[i][:rows.starts_t[i]])
            said.append("The answer is correct." if v.correct else "The answer is not correct.")
            assert tc.FEEDBACK_HINT.format(feedback=said[-1]) in text and "no final answer" not in text
    assert len(said) == 8 and len(set(said)) == 2, said  # both verdicts were seen


def test_references_for_opsd():
    code = tasks.embedded_code(4, 4, 4)
    ref = tc.reference_answer("code", code["n2"][0])
    assert ref.startswith("def ") and verify.check_code(f"```python\n{ref}\n```", code["n2"][0].answer).correct
    hint = tc.hint("answer", "code", code["n2"][0], None)
    assert hint.startswith("For reference, here is a correct solution:\n```python\ndef ")
    assert tc.reference_answer("math", tasks.Example("q", "\\frac{1}{2}")) == "\\frac{1}{2}"
    rows = [code["n2"][0], tasks.Example("q", {"kind": "stdio", "tests": [{"input": "", "output": "1"}]})]
    with pytest.raises(SystemExit, match=r"1 of the 2 Phase 2 questions of --dataset x.jsonl .*row 1.*feedback"):
        tc.check_references("code", rows, "x.jsonl")


def test_humaneval_rows_carry_their_canonical_solution_as_reference():
    rows = tasks.humaneval_tasks()
    import data
    he = data.load_task("code", "embedded", 0, 0, -1, eval_dataset="humaneval")["eval"]
    assert len(he) == len(rows) == 164
    by_id = {r["task_id"]: r for r in rows}
    for ex in he:
        row = by_id[ex.meta["task_id"]]
        assert ex.meta["reference"] == row["prompt"] + row["canonical_solution"]


def test_methods_name_their_context():
    assert (config.parse_args(["--method", "opsd"]).teacher_context, config.parse_args(["--method", "sdpo"])
            .teacher_context) == ("answer", "feedback")
    cfg = config.parse_args(["--teacher-context", "feedback"])
    assert (cfg.method, cfg.teacher_context) == ("sdpo", "feedback")  # sdzero with another context is that method
    assert config.parse_args(["--method", "p2only", "--teacher-context", "answer"]).method == "opsd"
    with pytest.raises(SystemExit, match="--teacher-context: --method opsd means --teacher-context answer; "
                                         "feedback is --method sdpo"):
        config.parse_args(["--method", "opsd", "--teacher-context", "feedback"])
    with pytest.raises(SystemExit, match="--teacher-context: --method grpo has no Phase 2 teacher"):
        config.parse_args(["--method", "grpo", "--teacher-context", "answer"])
    with pytest.raises(SystemExit, match="--teacher-context"):
        config.parse_args(["--teacher-context", "hint"])
    with pytest.raises(SystemExit, match="--budget 3: too small for --method opsd"):
        config.parse_args(["--method", "opsd", "--budget", "3"])


@pytest.mark.parametrize("method", ["opsd", "sdpo"])
def test_the_siblings_run_phase2_from_the_base_model_with_their_context(tmp_path, monkeypatch, method):
    """--method opsd / sdpo in the smoke preset: no Phase 1, the budget spent on Phase 2, and every teacher
    input of every step is the hinted prompt of that step's verdict, then the student's y."""
    seen = []
    build = train.Phase2Rows.build

    def spy(run, batch, prompts, ys, verdicts):
        rows = build(run, batch, prompts, ys, verdicts)
        seen.append((run, batch, ys, verdicts, rows))
        return rows
    monkeypatch.setattr(train.Phase2Rows, "build", staticmethod(spy))
    out = tmp_path / "run"
    res = train.main(["--preset", "smoke", "--method", method, "--out", str(out), "--budget", "8", "--n-eval", "4"])
    assert res["method"] == method and set(res["eval"]) == {"eval_base", "eval_final"}
    assert res["generations_by"] == {"p2": 8} and res["srt_accuracy"] is None
    assert json.loads((out / "run_config.json").read_text())["teacher_context"] == tc.METHOD_CONTEXT[method]
    assert len(seen) == 2
    for run, batch, ys, verdicts, rows in seen:
        for i, (ex, y, v) in enumerate(zip(batch, ys, verdicts)):
            assert v == verify.check_math(y.text, ex.answer)
            hint = tc.hint(tc.METHOD_CONTEXT[method], "math", ex, v)
            said = "is correct." if v.correct else "not correct." if v.extracted else "no final answer."
            assert (f"the correct final answer is {ex.answer}." if method == "opsd" else said) in hint
            prompt = sdzero.chat_prompt_ids(run.tok, tc.hinted_messages(run.prompt_messages(ex), hint))
            n = rows.lengths[i]
            start = rows.starts_t[i]
            assert rows.teacher[i][:start] == prompt and rows.teacher[i][start:] == y.response_ids[:n]
            assert rows.student[i] == run.prompt_ids(ex) + y.response_ids[:n]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["opsd", "sdpo"])
def test_the_siblings_on_the_code_task_see_the_reference_or_the_sandbox_feedback(tmp_path, monkeypatch, method):
    """--task code in the smoke preset, every answer through the real sandbox: OPSD's teacher prompt holds the
    problem's reference solution, SDPO's the verdict's feedback (the micro model writes no valid program, so
    every feedback is a failure's: the sandbox's detail where it gave one)."""
    seen = []
    build = train.Phase2Rows.build

    def spy(run, batch, prompts, ys, verdicts):
        rows = build(run, batch, prompts, ys, verdicts)
        seen.append((run, batch, verdicts, rows))
        return rows
    monkeypatch.setattr(train.Phase2Rows, "build", staticmethod(spy))
    res = train.main(["--task", "code", "--preset", "smoke", "--method", method, "--out", str(tmp_path / "run"),
                      "--budget", "8", "--n-eval", "4"])
    assert res["method"] == method and res["generations_by"] == {"p2": 8} and len(seen) == 2
    for run, batch, verdicts, rows in seen:
        for i, (ex, v) in enumerate(zip(batch, verdicts)):
            text = run.tok.decode(rows.teacher[i][:rows.starts_t[i]])
            if method == "opsd":
                assert ex.meta["reference"].strip() in text
            else:
                assert not v.correct and tc.feedback("code", v) in text
                assert v.detail is None or v.detail[:100] in text
