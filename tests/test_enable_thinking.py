"""--enable-thinking reaches the chat template: a Qwen3-style template that writes an empty think block
unless thinking is on, through every place a prompt is built (the student's prompt, the teacher's hinted
prompt, two-stage SRT's user-turn revision), and templates without it are unchanged."""
import pytest
from transformers import AutoTokenizer

import config
import revise
import sdzero
import tasks
import teacher_context as tc

QWEN3_STYLE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
               "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
               "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
               "{% endif %}{% endif %}")


@pytest.fixture
def thinking_tok(micro_model_dir):
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    tok.chat_template = QWEN3_STYLE
    return tok


def test_the_flag_reaches_the_template(thinking_tok, micro_model_dir):
    messages = tasks.prompt_messages("What is 1 + 2?")
    off = thinking_tok.decode(sdzero.chat_prompt_ids(thinking_tok, messages))
    on = thinking_tok.decode(sdzero.chat_prompt_ids(thinking_tok, messages, enable_thinking=True))
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") and on.endswith("<|im_start|>assistant\n")
    hint = tc.hint("answer", "math", tasks.Example("q", "3"), None)
    for flag, suffix in ((False, "</think>\n\n"), (True, "assistant\n")):
        ids, start, _ = tc.teacher_input("answer", thinking_tok, [], messages, [5, 6], 0, 4096, hint_text=hint,
                                         enable_thinking=flag)
        assert thinking_tok.decode(ids[:start]).endswith(suffix) and ids[start:] == [5, 6]
        ex = revise.user_turn_revision_example(thinking_tok, messages, [5], 0, [6], enable_thinking=flag)
        assert thinking_tok.decode(ex.input_ids[:-1]).endswith(suffix)
    plain = AutoTokenizer.from_pretrained(micro_model_dir)  # a template without a thinking mode: no change
    assert sdzero.chat_prompt_ids(plain, messages, True) == sdzero.chat_prompt_ids(plain, messages, False)


def test_the_run_builds_prompts_with_the_flag(thinking_tok, tmp_path, monkeypatch):
    import run as run_py
    real = sdzero.load_model
    monkeypatch.setattr(sdzero, "load_model", lambda *a, **k: (real(*a, **k)[0], thinking_tok))
    for flag in (False, True):
        cfg = config.parse_args(["--preset", "smoke", "--out", str(tmp_path / f"r{flag}"), "--n-eval", "4"]
                                + (["--enable-thinking"] if flag else []))
        (tmp_path / f"r{flag}").mkdir()
        run = run_py.Run(cfg)
        text = thinking_tok.decode(run.prompt_ids(run.data["n1"][0]))
        assert text.endswith("assistant\n") if flag else text.endswith("</think>\n\n")
