"""bench/teacher_fix_rate.py: the first wrong digit of a wrong answer, and whether the teacher preferred the
gold digit or the student's there, on hand-made samples.jsonl rows."""
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "bench"))  # appended: top-level modules come first
import teacher_fix_rate  # noqa: E402


def sample(tokens, top, answer, r=0, phase="p2"):
    return {"phase": phase, "r": r, "answer": answer, "tokens": tokens, "teacher_top": top}


def test_first_wrong_digit_and_the_rates(tmp_path):
    # 12 + 19 = 32 (gold 31): the first wrong digit is the "2", where the teacher wrote "1"
    wrong = sample(["1", "2", "Ġ+", "Ġ", "1", "9", "Ġ=", "Ġ", "3", "2", "."],
                   ["1", "2", "Ġ+", "Ġ", "1", "9", "Ġ=", "Ġ", "3", "1", "."], "31")
    assert teacher_fix_rate.first_wrong_digit(wrong) == ("1", "2", "1")
    same = dict(wrong, teacher_top=wrong["tokens"])  # a teacher that repeats the student
    assert teacher_fix_rate.first_wrong_digit(same) == ("1", "2", "2")
    assert teacher_fix_rate.first_wrong_digit(sample(["3", "1"], ["3", "1"], "31")) is None  # no "= "
    run = tmp_path / "opsd-s0"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"method": "opsd"}))
    rows = [wrong, same, same, dict(wrong, r=1), dict(wrong, phase="eval")]  # r = 1 and eval rows do not count
    (run / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    rates = teacher_fix_rate.main([str(run)])["opsd"]
    assert (rates["runs"], rates["wrong_samples"], rates["teacher_gold"], rates["teacher_same"]) == (1, 3, 1, 2)
    assert rates["share_gold"] == 1 / 3
