"""--reward (verifiers/plugin.py): loading a spec, its errors, the worker processes and their budget, and the
example reward of examples/ (units_reward.py against hand-checked cases and physics.jsonl)."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import data
import tasks
from verifiers import plugin
from verifiers.plugin import RewardError
from verifiers.verdict import Verdict

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("units_reward", REPO / "examples" / "units_reward.py")
units_reward = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(units_reward)

HELPERS = '''
import os, signal
from verifiers.verdict import Verdict

CONST = 3

def equal(response, example):
    return response == example.answer

def as_int(response, example):
    return int(response == example.answer)

def verdict(response, example):
    return Verdict(response == example.answer, "correct" if response == example.answer else "mismatch",
                   extracted=response, detail=f"meta={example.meta.get('k')}")

def parity(response, example):
    return int(response) % 2 == 0

def divide(response, example):
    return 1 / int(response) > 0

def hang(response, example):
    while True:
        pass

def deaf(response, example):
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    while True:
        pass

def die(response, example):
    os._exit(3)

def one_arg(response):
    return True

def returns(response, example):
    return {"str": "yes", "two": 2, "none": None, "int_correct": Verdict(1, "correct"),
            "bad_reason": Verdict(True, 5), "bad_detail": Verdict(True, "correct", detail=[1])}[response]
'''


@pytest.fixture
def helpers(tmp_path) -> Path:
    path = tmp_path / "rewards.py"
    path.write_text(HELPERS)
    (tmp_path / "raises_at_import.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "needs_dep.py").write_text("import no_such_dependency_xyz\n")
    return path


def rows(answers, meta=None) -> list[tasks.Example]:
    return [tasks.Example(f"q{i}", a, dict(meta or {})) for i, a in enumerate(answers)]


def worker_children() -> list[int]:
    """Pids of this process's children that are reward workers."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"verifiers.plugin" in cmd:
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_workers_left():
    yield
    assert worker_children() == []


# ------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("spec, message", [
    ("nocolon", "expected module:function or path/to/file.py:function"),
    (":f", "expected module:function"),
    ("mod:", "expected module:function"),
    ("missing_file.py:f", "no such file"),
    ("no_such_module_xyz:f", "no module named 'no_such_module_xyz'"),
    ("{tmp}/raises_at_import.py:f", "raised RuntimeError: boom at import"),
    ("{tmp}/needs_dep.py:f", "raised ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
    ("{tmp}/rewards.py:nope", "has no attribute 'nope'"),
    ("{tmp}/rewards.py:CONST", "rewards.py:CONST is a int, not callable"),
    ("{tmp}/rewards.py:one_arg", "one_arg(response) cannot be called as one_arg(response, example)"),
    ("os:sep", "os:sep is a str, not callable"),
])
def test_a_bad_spec_fails_at_load_naming_the_problem(helpers, spec, message):
    spec = spec.format(tmp=helpers.parent)
    with pytest.raises(SystemExit) as e:
        plugin.load(spec)
    assert str(e.value).startswith(f"--reward {spec}: ") and message in str(e.value)


def test_a_bad_timeout_fails_at_load(helpers):
    with pytest.raises(SystemExit, match="--reward-timeout 0: must be > 0"):
        plugin.load(f"{helpers}:equal", timeout_s=0)


def test_a_module_spec_resolves_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "plugin_cwd_mod.py").write_text("def check(response, example):\n"
                                                "    return response == example.answer\n")
    monkeypatch.chdir(tmp_path)
    assert str(tmp_path) not in sys.path
    reward = plugin.load("plugin_cwd_mod:check")
    try:
        assert reward.verdicts(["1", "3"], rows(["1", "2"])) == [Verdict(True, "correct"), Verdict(False, "mismatch")]
    finally:
        reward.close()
    assert str(tmp_path) not in sys.path  # only the workers keep it


def test_a_relative_file_spec(helpers, monkeypatch):
    monkeypatch.chdir(helpers.parent)
    reward = plugin.load("./rewards.py:equal")
    try:
        assert [v.correct for v in reward.verdicts(["a"], rows(["a"]))] == [True]
    finally:
        reward.close()


# ------------------------------------------------------------------------------------------ verdicts


def test_bool_int_and_verdict_returns(helpers):
    examples = rows(["a", "b", "c"], meta={"k": 7})
    for name in ("equal", "as_int"):
        reward = plugin.load(f"{helpers}:{name}")
        assert reward.verdicts(["a", "x", "c"], examples) == [Verdict(True, "correct"), Verdict(False, "mismatch"),
                                                              Verdict(True, "correct")]
        reward.close()
    reward = plugin.load(f"{helpers}:verdict")
    got = reward.verdicts(["a", "x"], examples[:2])
    reward.close()
    assert got == [Verdict(True, "correct", "a"), Verdict(False, "mismatch", "x")]
    assert [type(v) for v in got] == [Verdict, Verdict] and got[0].detail == "meta=7"  # the example crossed whole


def test_many_rows_keep_their_order_and_the_workers_are_reused(helpers):
    reward = plugin.load(f"{helpers}:parity", workers=2)
    try:
        n = 301
        assert [v.correct for v in reward.verdicts([str(i) for i in range(n)], rows([""] * n))] == \
            [i % 2 == 0 for i in range(n)]
        first = sorted(worker_children())
        assert len(first) == 2
        assert [v.correct for v in reward.verdicts(["4", "5"], rows(["", ""]))] == [True, False]
        assert sorted(worker_children()) == first
        assert reward.verdicts([], []) == []
        with pytest.raises(ValueError):
            reward.verdicts(["1"], [])
    finally:
        reward.close()
    assert worker_children() == []


def test_an_empty_batch_starts_no_worker(helpers):
    reward = plugin.load(f"{helpers}:equal")
    assert reward.verdicts([], []) == [] and worker_children() == []


@pytest.mark.parametrize("response, shown", [
    ("str", "returned 'yes' (builtins.str)"), ("two", "returned 2 (builtins.int)"),
    ("none", "returned None (builtins.NoneType)"), ("int_correct", "returned Verdict(correct=1"),
    ("bad_reason", "returned Verdict(correct=True, reason=5"),
    ("bad_detail", "returned Verdict(correct=True, reason='correct', extracted=None, detail=[1])"),
])
def test_a_bad_return_value_is_an_error_saying_what_is_allowed(helpers, response, shown):
    reward = plugin.load(f"{helpers}:returns")
    with pytest.raises(RewardError) as e:
        reward.verdicts([response], rows([""]))
    assert f"--reward {helpers}:returns: row 0 of the batch (question 'q0', response {response!r}): returns {shown}" in str(e.value)
    assert "allowed: bool, 0 or 1, or a verifiers.verdict.Verdict" in str(e.value)


def test_a_reward_that_raises_names_the_function_row_response_and_exception(helpers):
    reward = plugin.load(f"{helpers}:divide")
    long = "0" + " " * 200
    with pytest.raises(RewardError) as e:
        reward.verdicts(["1", "2", long, "3"], rows(["", "", "", ""]))
    msg = str(e.value)
    assert isinstance(e.value, SystemExit)
    assert msg.startswith(f"--reward {helpers}:divide: row 2 of the batch (question 'q2', response '0   ")
    assert "...'): divide raised ZeroDivisionError: division by zero (at " in msg
    assert f"{helpers}:{HELPERS.splitlines().index('    return 1 / int(response) > 0') + 1})" in msg
    assert worker_children() == []  # killed at the error


def test_a_pure_python_hang_is_interrupted_by_the_time_limit(helpers):
    reward = plugin.load(f"{helpers}:hang", timeout_s=1)
    with pytest.raises(RewardError) as e:
        reward.verdicts(["spin"], rows([""]))
    assert str(e.value) == (f"--reward {helpers}:hang: row 0 of the batch (question 'q0', response 'spin'): "
                            "no verdict within 1 s (--reward-timeout)")


def test_a_hang_that_ignores_the_signal_is_killed_at_the_hard_deadline(helpers, monkeypatch):
    monkeypatch.setattr(plugin, "GRACE_S", 0.5)
    reward = plugin.load(f"{helpers}:deaf", timeout_s=1)
    with pytest.raises(RewardError) as e:
        reward.verdicts(["deaf"], rows([""]))
    assert "row 0 of the batch (question 'q0', response 'deaf'): no verdict within 1 s (--reward-timeout); the call ignored the time-limit " \
           "signal: its worker was killed" in str(e.value)
    assert worker_children() == []


def test_a_worker_that_dies_is_an_error(helpers):
    reward = plugin.load(f"{helpers}:die")
    with pytest.raises(RewardError, match=r"row \d of the batch \((dataset row \d+, )?question 'q\d', response 'x'\): its worker process died \(exit code 3\) "
                                          r"while die ran"):
        reward.verdicts(["x", "x"], rows(["", ""]))


def test_an_unpicklable_example_is_an_error(helpers):
    reward = plugin.load(f"{helpers}:equal")
    with pytest.raises(RewardError, match=r"row 1 of the batch \((dataset row \d+, )?question 'q0', response 'b'\): the example cannot be sent to the worker processes "
                                          r"\(pickling it raised TypeError: cannot pickle '_thread.lock' object\)"):
        reward.verdicts(["a", "b"], rows(["a"]) + rows(["b"], meta={"lock": threading.Lock()}))


def test_the_workers_go_when_the_parent_exits(helpers, tmp_path):
    script = tmp_path / "parent.py"
    for ending in ("", "reward.verdicts(['0'], [ex])"):  # a clean exit, and a RewardError (SystemExit)
        script.write_text(textwrap.dedent(f"""
            import os, sys
            sys.path.insert(0, {str(REPO)!r})
            import tasks
            from verifiers import plugin
            reward = plugin.load({f"{helpers}:divide"!r})
            ex = tasks.Example("q", "a")
            reward.verdicts(["1"], [ex])
            print(" ".join(str(p.pid) for p in reward._procs), flush=True)
            {ending}
        """))
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
        pids = [int(p) for p in done.stdout.split()]
        assert pids and done.returncode == (1 if ending else 0), done.stderr
        assert not [p for p in pids if Path(f"/proc/{p}").exists()]


# --------------------------------------------------------------------------------- the units example


def verdict_of(answer: str, gold: str) -> Verdict:
    return units_reward.reward(f"The result is \\boxed{{{answer}}}.", tasks.Example("q", gold))


@pytest.mark.parametrize("answer, gold", [
    ("22.2 m/s", "80 km/h"), ("80 \\text{ km/h}", "80 km/h"), ("3.2\\,\\mathrm{kJ}", "3200 J"),
    ("9.8\\ \\mathrm{m\\,s^{-2}}", "9.8 m/s^2"), ("1.5 \\times 10^{3} N", "1.5 kN"),
    ("2\\ \\mathrm{kg \\cdot m/s}", "2 N s"), ("3 \\frac{m}{s}", "3 m/s"), ("22.2 kilometers per hour", "22.2 km/h"),
    ("5 µm", "5e-6 m"), ("5 \\mu m", "0.005 mm"),
    ("5\\,\\mu\\mathrm{s}", "5e-6 s"), ("3 kΩ", "3000 V/A"), ("2 h", "120 min"), ("1 L", "1000 mL"),
    ("1 L", "1000 cm^3"), ("v = 22.2 m/s", "80 km/h"), ("1,000 kg", "1 Mg"), ("5 m²", "5 m^2"), ("5 s⁻¹", "5 Hz"),
    ("60 W", "60 J/s"), ("100 kPa", "1e5 Pa"), ("4 mol", "4000 mmol"), ("1.6e-19 C", "1.6 \\times 10^{-19} A s"),
    ("9.81 N/kg", "9.81 m/s^2"), ("6 (m/s)^2", "6 m^2/s^2"), ("2 J/(kg K)", "2 m^2 s^-2 K^-1"), ("5 seconds", "5 s"),
    ("5 mins", "300 s"), ("50 cm", "0.5 m"), ("-3 m", "-3 m"), ("0 m", "0 m"), ("2 GHz", "2e9 Hz"),
    ("12 nm", "1.2e-8 m"), ("0.5 mA", "500 uA"), ("2.5 V", "2500 mV"), ("7.2 km/h", "2 m/s"), ("20.1 m/s", "20 m/s"),
    ("12", "12"),
])
def test_units_correct(answer, gold):
    assert verdict_of(answer, gold) == Verdict(True, "correct", answer)


@pytest.mark.parametrize("answer, gold, detail", [
    ("21 m/s", "80 km/h", "value 21, not 22.2222"), ("80 m/s", "80 km/h", "value 80, not 22.2222"),
    ("20.3 m/s", "20 m/s", "value 20.3, not 20"), ("10 m/s", "10 m", "dimension m s^-1, not m"),
    ("12", "12 m", "dimension dimensionless, not m"), ("5 J", "5 W", "dimension m^2 kg s^-2, not m^2 kg s^-3"),
    ("3 kg", "3 g", "value 3, not 0.003"), ("1 m", "-1 m", "value 1, not -1"), ("0.001 m", "0 m", "value 0.001, not 0"),
])
def test_units_mismatch(answer, gold, detail):
    assert verdict_of(answer, gold) == Verdict(False, "mismatch", answer)
    assert verdict_of(answer, gold).detail.startswith(detail)


@pytest.mark.parametrize("answer", ["3 \\text{ or } 4 m", "1 atm", "5 furlongs", "m/s", "5 m/", "5 (m", "5 m^{1/2}",
                                    "5\\,^\\circ C", "5 %"])
def test_units_parse_error(answer):
    assert verdict_of(answer, "5 m") == Verdict(False, "parse_error", answer)


def test_units_no_answer_and_a_bad_gold():
    assert units_reward.reward("I am not sure.", tasks.Example("q", "5 m")) == Verdict(False, "no_answer")
    assert units_reward.reward("The answer is 5 m.", tasks.Example("q", "500 cm")) == Verdict(True, "correct", "5 m")
    with pytest.raises(ValueError, match="gold answer 'five metres' is not a quantity"):
        verdict_of("5 m", "five metres")


# An equal answer in other units for each row of examples/physics.jsonl, in file order.
PHYSICS_VARIANTS = [
    "20.83 m/s", "72 km/h", "105.8 km/h", "0.004 km/s^2", "0.098 kJ", "0.06 kW \\cdot h", "9000 mJ", "2 kPa",
    "60 A \\cdot s", "5000 mV", "0.024 kW", "0.05 kHz", "0.34 km/s", "2.5 L", "800 kg/m^3", "2500 cm",
    "3 \\times 10^{4} N s", "0.4167 min", "0.49 kJ", "2 N/cm", "1200 kJ", "0.6 km", "18 km/h", "0.005 km/s^2",
]


def physics_rows() -> list[dict]:
    return [json.loads(line) for line in (REPO / "examples" / "physics.jsonl").read_text().splitlines() if line.strip()]


def test_every_physics_row_scores_its_own_gold_and_an_equal_answer_in_other_units():
    got = physics_rows()
    assert len(got) == len(PHYSICS_VARIANTS) == 24
    for row, variant in zip(got, PHYSICS_VARIANTS):
        ex = tasks.Example(row["question"], row["answer"])
        assert units_reward.reward(f"\\boxed{{{row['answer']}}}", ex).correct, row
        assert units_reward.reward(f"\\boxed{{{variant}}}", ex).correct, (row, variant)
        number, unit = row["answer"].split(" ", 1)
        assert units_reward.reward(f"\\boxed{{{number} m^2}}", ex).reason == "mismatch"  # the dimension
        assert units_reward.reward(f"\\boxed{{{float(number) * 1.05} {unit}}}", ex).reason == "mismatch"  # the value


def test_the_physics_file_loads_whole_with_the_demo_split():
    split = data.load_task("math", str(REPO / "examples" / "physics.jsonl"), 8, 8, 8)
    assert [len(split[k]) for k in ("eval", "n1", "n2")] == [8, 8, 8] and split.skipped == {}


def test_the_units_example_through_the_plugin(monkeypatch):
    monkeypatch.chdir(REPO)
    reward = plugin.load("examples/units_reward.py:reward")
    try:
        got = reward.verdicts(["\\boxed{20 m/s}", "\\boxed{20 m}", "no box"], rows(["72 km/h"] * 3))
        assert [v.reason for v in got] == ["correct", "mismatch", "no_answer"]
        with pytest.raises(RewardError, match="row 0 .*reward raised ValueError: gold answer 'lots' is not a quantity"):
            reward.verdicts(["\\boxed{1 m}"], rows(["lots"]))
    finally:
        reward.close()


# ------------------------------------------------------------------------------- through training (train.py)

TRAIN_REWARDS = '''
from verifiers.verdict import Verdict

def always(response, example):
    return True

def contains_gold(response, example):
    return Verdict(example.answer in response, "correct" if example.answer in response else "mismatch",
                   example.answer if example.answer in response else None)

def raises(response, example):
    raise KeyError("no such field")

def hangs(response, example):
    while True:
        pass
'''
SMOKE = ["--preset", "smoke", "--n-eval", "8", "--threads", "1"]


@pytest.fixture
def train_rewards(tmp_path) -> Path:
    path = tmp_path / "train_rewards.py"
    path.write_text(TRAIN_REWARDS)
    return path


def test_a_plugged_reward_grades_training_and_evaluation(train_rewards, tmp_path):
    """--reward always: every verdict of Phase 1, Phase 2 and every evaluation comes from it (the micro model's
    arithmetic is never right under check_math, so 1.0 everywhere is the plug-in's doing)."""
    import train
    res = train.main([*SMOKE, "--out", str(tmp_path / "run"), "--p2-steps", "2", "--eval-every", "1",
                      "--reward", f"{train_rewards}:always"])
    assert all(e["avg@k"] == 1.0 for e in res["eval"].values())
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    p1 = next(r for r in rows if r["phase"] == "p1_sample")
    assert p1["y_init_accuracy"] == 1.0 and p1["revision_accuracy_r1"] == 1.0
    assert [r["reward_mean"] for r in rows if r["phase"] == "p2"] == [1.0, 1.0]
    curve = [r["avg@k"] for r in rows if r["phase"] == "eval" and "step" in r]
    assert curve and set(curve) == {1.0}


def test_the_plugged_reward_matches_a_direct_call_on_every_logged_sample(train_rewards, tmp_path):
    """The verdicts a run logs are the callable's on those very responses and examples."""
    import train
    out = tmp_path / "run"
    train.main([*SMOKE, "--method", "p2only", "--p2-steps", "2", "--out", str(out), "--log-samples", "4",
                "--reward", f"{train_rewards}:contains_gold"])
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) >= 8
    for s in samples:
        assert s["r"] == int(str(s["answer"]) in s["y"]), s


def test_the_units_example_trains_on_its_dataset(tmp_path):
    """The README's command on the micro model: all 24 rows load, and the run ends."""
    import train
    res = train.main(["--preset", "smoke", "--method", "p2only", "--dataset", str(REPO / "examples" / "physics.jsonl"),
                      "--n1", "8", "--n2", "8", "--n-eval", "8", "--p2-steps", "1", "--threads", "1",
                      "--out", str(tmp_path / "run"), "--reward", f"{REPO / 'examples' / 'units_reward.py'}:reward"])
    assert res["data"]["skipped"] == {} and res["eval"]["eval_base"]["n_questions"] == 8


@pytest.mark.parametrize("name, message", [
    ("raises", r"row \d+ of the batch \((dataset row \d+, )?question '.*', response .*\): raises raised KeyError: 'no such field' "
               r"\(at .*train_rewards.py:\d+\)"),
    ("hangs", r"row \d+ of the batch \((dataset row \d+, )?question '.*', response .*\): no verdict within 1 s \(--reward-timeout\)"),
])
def test_a_reward_that_raises_or_hangs_stops_training_naming_it(train_rewards, tmp_path, name, message):
    import train
    spec = f"{train_rewards}:{name}"
    with pytest.raises(SystemExit) as e:
        train.main([*SMOKE, "--out", str(tmp_path / "run"), "--reward", spec, "--reward-timeout", "1"])
    assert str(e.value.code).startswith(f"--reward {spec}: ") and re.search(message, e.value.code)
    assert worker_children() == []  # the error closed them


def test_a_bad_spec_stops_before_the_model_loads(tmp_path):
    import train
    with pytest.raises(SystemExit, match=r"--reward nope\.py:f: no such file"):
        train.main([*SMOKE, "--out", str(tmp_path / "run"), "--reward", "nope.py:f"])
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_with_a_reward_a_gold_check_math_cannot_read_is_kept(tmp_path):
    """The loader drops a math gold that check_math cannot match against itself, since every answer would get
    r = 0; with --reward the user's callable grades, so that row stays (an empty gold is still dropped)."""
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": a}) + "\n"
                            for i, a in enumerate(["\\frac{", "7", " "] * 4)))
    builtin = data.load_task("math", str(path), 2, 1, 1, seed=0)
    plugged = data.load_task("math", str(path), 4, 2, 2, seed=0, verify_gold=False)
    def count(skipped, reason):
        return sum(n for k, n in skipped.items() if k.endswith(reason))
    assert count(builtin.skipped, "gold_does_not_verify") > 0  # rows are read until enough are usable
    assert "\\frac{" not in [ex.answer for ex in builtin["n1"] + builtin["n2"] + builtin["eval"]]
    assert set(plugged.skipped) <= {"train/empty_answer", "eval/empty_answer"}
    assert count(plugged.skipped, "empty_answer") == 4
    assert sorted(ex.answer for ex in plugged["n1"] + plugged["n2"] + plugged["eval"]) == ["7"] * 4 + ["\\frac{"] * 4


def test_an_error_names_the_dataset_row_beside_the_batch_row(tmp_path):
    """A local file's line (Example.meta["row"]) is what the user can find; the batch position alone is not."""
    (tmp_path / "r.py").write_text("def boom(response, example):\n    raise ValueError('bad gold')\n")
    reward = plugin.load(f"{tmp_path / 'r.py'}:boom", 5.0, workers=1)
    try:
        with pytest.raises(RewardError, match=r"row 0 of the batch \(dataset row 7, question 'q', response 'y'\): "
                                              r"boom raised ValueError: bad gold"):
            reward.verdicts(["y"], [tasks.Example("q", "1", {"row": 7})])
    finally:
        reward.close()
