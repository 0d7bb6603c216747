"""TRL's conversational rows (a question field that holds chat messages): the conversation is the prompt the
model gets, with the few-shot turns and the task's instruction, its last user turn the question the logs show,
prompts cached per conversation; any other non-string question field is refused by name (data/registry.py
user_question, tasks.prompt_messages, run.Run.prompt_ids), token-exact with the embedded SmolLM2 tokenizer."""
import json

import pytest

import config
import data
import revise
import run as run_py
import sdzero
import tasks
import train
from data import load

Q = "What is 17 + 25?"
ROWS = [
    {"prompt": [{"role": "system", "content": "You are a careful math tutor."}, {"role": "user", "content": Q}],
     "answer": "42"},
    {"prompt": [{"role": "system", "content": "Answer like a pirate."}, {"role": "user", "content": Q}],
     "answer": "42"},
    {"prompt": [{"role": "user", "content": "What is 8 + 5?"}], "answer": "13"},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Think of 6 + 1."},
                {"role": "assistant", "content": "I have 7."}, {"role": "user", "content": "Now double it."}],
     "answer": "14"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def smol_tok():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(sdzero.embedded_model_dir("smollm2-135m"))


def prompt_run(tok, fewshot: bool) -> run_py.Run:
    """What Run.prompt_messages and Run.prompt_ids read of a Run: its config, tokenizer and cache."""
    r = run_py.Run.__new__(run_py.Run)
    r.cfg, r.tok, r._prompt_cache = config.Config(fewshot=fewshot), tok, {}
    return r


def test_a_conversational_row_is_its_last_user_turn_and_keeps_the_conversation(tmp_path):
    got = data.load_task("math", write_jsonl(tmp_path / "c.jsonl", ROWS), 4, 0, 0, seed=None, question_field="prompt")
    exs = got["n1"]
    assert [ex.question for ex in exs] == [Q, Q, "What is 8 + 5?", "Now double it."]
    assert [ex.answer for ex in exs] == ["42", "42", "13", "14"]
    assert [ex.meta["conversation"] for ex in exs] == [r["prompt"] for r in ROWS]


@pytest.mark.parametrize("fewshot", [True, False])
def test_the_prompt_is_the_conversation_with_the_worked_turns_and_the_instruction(tmp_path, smol_tok, fewshot):
    exs = data.load_task("math", write_jsonl(tmp_path / "c.jsonl", ROWS), 4, 0, 0, seed=None,
                         question_field="prompt")["n1"]
    r = prompt_run(smol_tok, fewshot)
    phrase = revise.CONTROL_PHRASES["paper"][0]
    shots = tasks.prompt_messages(Q, True, phrase)[1:-1] if fewshot else []  # the worked turns alone
    tutor = {"role": "system", "content": "You are a careful math tutor."}
    expected = [tutor, *shots, {"role": "user", "content": tasks.math_prompt(Q)}]
    assert r.prompt_messages(exs[0]) == expected
    ids = r.prompt_ids(exs[0])
    assert ids == sdzero.chat_prompt_ids(smol_tok, expected)
    text = smol_tok.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a careful math tutor.<|im_end|>\n")
    assert text.endswith(f"<|im_start|>user\n{Q} {tasks.MATH_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n")
    assert tasks.FEWSHOT_SYSTEM not in text and text.count("What is 3 + 4?") == int(fewshot)
    # the same last user turn under another system turn: another prompt, not the cached one
    pirate = r.prompt_ids(exs[1])
    assert pirate != ids and "Answer like a pirate." in smol_tok.decode(pirate)
    assert r.prompt_ids(exs[0]) == ids
    # no system turn: the few-shot system prompt (or none), exactly as a plain question gets
    assert r.prompt_messages(exs[2]) == tasks.prompt_messages("What is 8 + 5?", fewshot, phrase)
    # several turns: the system turn first, the worked turns, then the conversation, the instruction last
    turns = r.prompt_messages(exs[3])
    assert turns[0] == {"role": "system", "content": "Be brief."} and turns[1:-3] == shots
    assert turns[-3:] == [{"role": "user", "content": "Think of 6 + 1."}, {"role": "assistant", "content": "I have 7."},
                          {"role": "user", "content": tasks.math_prompt("Now double it.")}]


def test_samples_show_the_last_user_turn(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", ROWS)
    out = tmp_path / "run"
    train.main(["--preset", "smoke", "--method", "base", "--dataset", path, "--question-field", "prompt",
                "--n1", "1", "--n2", "1", "--n-eval", "2", "--log-samples", "2", "--out", str(out)])
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and {s["question"] for s in samples} <= {Q, "What is 8 + 5?", "Now double it."}


@pytest.mark.parametrize("value, said", [
    ({"role": "user", "content": Q}, "is a dict"),
    (17, "is an int"),
    (["What is 1 + 1?"], "is a list that is not chat messages"),
    ([], "is an empty list"),
    ([{"content": Q}], "message 0 has no 'role'"),
    ([{"role": "user"}], "message 0 has no 'content'"),
    ([{"role": "tool", "content": "x"}, {"role": "user", "content": Q}], "message 0 has role 'tool', not one of"),
    ([{"role": "user", "content": [{"type": "text", "text": Q}]}], "message 0 has a list for content"),
    ([{"role": "user", "content": Q}, {"role": "assistant", "content": "42"}], "ends in an assistant turn"),
])
def test_any_other_question_field_is_refused_by_name(tmp_path, value, said):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {"prompt": value, "answer": "2"}])
    with pytest.raises(ValueError) as e:
        data.load_task("math", path, 1, 0, 0, question_field="prompt")
    message = str(e.value)
    assert message.startswith(f"--dataset {path}: row 2, field 'prompt' (--question-field)")
    assert said in message and "\n" not in message


def test_a_hub_id_takes_conversational_rows_and_refuses_a_dict(monkeypatch):
    rows = [{"messages": ROWS[0]["prompt"], "answer": 42}, {"messages": {"role": "user", "content": Q}, "answer": "42"}]
    monkeypatch.setattr(load, "_hub_split", lambda label, hub_id, config, split, **kw: (rows, f"{hub_id} (test)"))
    got = data.load_task("math", "someone/chat", 1, 0, 0, seed=None, question_field="messages")
    assert got["n1"][0].question == Q and got["n1"][0].meta["conversation"] == ROWS[0]["prompt"]
    assert got["n1"][0].answer == "42"
    with pytest.raises(ValueError, match=r"^--dataset someone/chat: row 1, field 'messages' \(--question-field\) is a "
                                         "dict"):
        data.load_task("math", "someone/chat", 2, 0, 0, seed=None, question_field="messages")
