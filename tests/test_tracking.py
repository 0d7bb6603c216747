"""--report-to (tracking.py): parsing, TensorBoard event files read back offline, wandb and Trackio through fake
modules (neither is installed, nothing touches the network)."""
import json
import os
import subprocess
import sys
import types

import pytest

import tracking

ROWS = [
    {"phase": "data", "eval": 4, "n1": 8, "n2": 2, "skipped": {"bad_answer": 1}, "sources": {"n1": "x"}},
    {"phase": "eval", "stage": "eval_base", "avg@k": 0.25, "pass@k": 0.5, "k": 1,
     "revise": {"n_r0": 3, "r0_corrected": 1 / 3, "r1_kept": None}},
    {"phase": "p1", "step": 1, "epoch": 0, "loss": 2.5, "lr": 1e-3, "ok": True, "bad": float("nan")},
    {"phase": "p1", "step": 2, "epoch": 0, "loss": 2.25, "lr": 5e-4},
    {"phase": "p2", "step": 1, "loss": 0.75},
    {"phase": "eval", "stage": "p2", "step": 1, "avg@k": 0.5},
    {"phase": "eval", "stage": "eval_final", "avg@k": 0.75, "extra": {"avg@k": 0.125, "dataset": "humaneval"}},
]
# (tag, step, value) of ROWS: eval rows without "step" are point 0 of their prefix; bools, None, NaN, strings out
POINTS = [
    ("data/eval", 0, 4), ("data/n1", 0, 8), ("data/n2", 0, 2), ("data/skipped/bad_answer", 0, 1),
    ("eval/eval_base/avg@k", 0, 0.25), ("eval/eval_base/pass@k", 0, 0.5), ("eval/eval_base/k", 0, 1),
    ("eval/eval_base/revise/n_r0", 0, 3), ("eval/eval_base/revise/r0_corrected", 0, 1 / 3),
    ("p1/epoch", 1, 0), ("p1/loss", 1, 2.5), ("p1/lr", 1, 1e-3), ("p1/epoch", 2, 0), ("p1/loss", 2, 2.25),
    ("p1/lr", 2, 5e-4), ("p2/loss", 1, 0.75), ("eval/p2/avg@k", 1, 0.5),
    ("eval/eval_final/avg@k", 0, 0.75), ("eval/eval_final/extra/avg@k", 0, 0.125),
]


def by_tag(points):
    out = {}
    for tag, step, value in points:
        out.setdefault(tag, []).append((step, value))
    return out


def written(rows, tmp_path):
    """(tag, x, value) of every point Trackers writes for rows: each row's own tags at its step, and a held-out
    evaluation's point on the one accuracy curve at its generations."""
    t = tracking.Trackers((), "p", tmp_path, "x", {}, resume=False)
    out = []
    for r in rows:
        _, step, values = t._point(r)
        out += [(tag, step, v) for tag, v in values.items()]
        if (curve := t._curve(r)) is not None:
            out += [(tag, curve[0], v) for tag, v in curve[1].items()]
    return out


def curve_of(rows):
    """What the accuracy curve must hold: (generations, avg@k) of every held-out evaluation in metrics.jsonl but
    the --eval-every points inside SRT and RFT fine-tuning (no generations are drawn there)."""
    return [(r["generations"], r["avg@k"]) for r in rows if r["phase"] == "eval" and "dataset" not in r
            and not ("step" in r and r["stage"] in ("p1", "p1_rev", "rft"))]


# ------------------------------------------------------------------------------------------- parse_report_to

@pytest.mark.parametrize("spec, want", [
    ("none", ()), ("", ()), (" none ", ()), ("tensorboard", ("tensorboard",)),
    ("tensorboard,wandb", ("tensorboard", "wandb")), ("wandb, trackio,wandb", ("wandb", "trackio")),
])
def test_parse_report_to(spec, want):
    assert tracking.parse_report_to(spec) == want


@pytest.mark.parametrize("spec, words", [
    ("mlflow", ["--report-to", "'mlflow'", "wandb, tensorboard, trackio"]),
    ("tensorboard,TensorBoard", ["'TensorBoard'"]),
    ("none,wandb", ["--report-to none,wandb", "'none'"]),
])
def test_parse_report_to_errors(spec, words):
    with pytest.raises(SystemExit) as e:
        tracking.parse_report_to(spec)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_none_logs_nothing(tmp_path):
    t = tracking.Trackers((), "p", tmp_path, "run", {}, resume=False)
    t.log(ROWS[2])
    t.rewind(ROWS)
    t.close()
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------- TensorBoard

def read_tb(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    texts = [t.tensor_proto.string_val[0].decode() for t in acc.Tensors("config/text_summary")]
    return scalars, texts


def assert_points(scalars, points):
    want = by_tag(points)
    assert sorted(scalars) == sorted(want)
    for tag, pts in want.items():
        assert [s for s, _ in scalars[tag]] == [s for s, _ in pts], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in pts], rel=1e-6), tag


def test_tensorboard_event_files(tmp_path):
    tracking.check_installed(("tensorboard",))
    config = {"method": "sdzero", "p2_lr": 1e-4}
    t = tracking.Trackers(("tensorboard",), "sdzero", tmp_path, "run", config, resume=False)
    for row in ROWS:
        t.log(row)
    scalars, texts = read_tb(tmp_path / "tensorboard")  # before close: every row is flushed (a killed run)
    assert_points(scalars, POINTS)
    t.close()
    scalars, texts = read_tb(tmp_path / "tensorboard")
    assert_points(scalars, POINTS)
    assert texts == ["```json\n" + json.dumps(config, indent=2) + "\n```"]
    assert not (tmp_path / "tracking.json").exists()


def test_tensorboard_resume_rewrites_from_the_kept_rows(tmp_path):
    """Killed after 5 rows, checkpoint after 3: the resumed run re-logs rows 4.. with other values; the event
    files then hold rows 1-3 and the new ones, each point once (not the killed run's rows 4-5)."""
    config = {"method": "sdzero"}
    t = tracking.Trackers(("tensorboard",), "sdzero", tmp_path, "run", config, resume=False)
    for row in ROWS[:5]:
        t.log(row)  # killed here: no close
    t = tracking.Trackers(("tensorboard",), "sdzero", tmp_path, "run", config, resume=True)
    t.rewind(ROWS[:3])
    again = [{**ROWS[3], "loss": 9.0}, {**ROWS[4], "loss": 8.0}, *ROWS[5:]]
    for row in again:
        t.log(row)
    t.close()
    scalars, texts = read_tb(tmp_path / "tensorboard")
    want = [(tag, s, {("p1/loss", 2): 9.0, ("p2/loss", 1): 8.0}.get((tag, s), v)) for tag, s, v in POINTS]
    assert_points(scalars, want)
    assert texts == ["```json\n" + json.dumps(config, indent=2) + "\n```"]
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1


# One accuracy curve across the stages: eval/avg@k and eval/pass@k against the training generations
CURVE_ROWS = [
    {"phase": "eval", "stage": "eval_base", "generations": 0, "avg@k": 0.25, "pass@k": 0.5, "k": 2},
    {"phase": "eval", "stage": "eval_base", "generations": 0, "avg@k": 0.125, "pass@k": 0.25,
     "dataset": "humaneval"},
    {"phase": "p1", "step": 1, "loss": 2.0},
    {"phase": "eval", "stage": "p1", "step": 1, "generations": 64, "avg@k": 0.375, "pass@k": 0.5},
    {"phase": "eval", "stage": "eval_srt", "generations": 64, "avg@k": 0.5, "pass@k": 0.75},
    {"phase": "p2", "step": 1, "loss": 0.5},
    {"phase": "eval", "stage": "p2", "step": 1, "generations": 68, "avg@k": 0.625, "pass@k": 0.75},
    {"phase": "eval", "stage": "eval_final", "generations": 72, "avg@k": 0.75, "pass@k": float("nan")},
]
# the --eval-extra row (dataset) and the point inside SRT are off the curve, the NaN is dropped
CURVE = {"eval/avg@k": [(0, 0.25), (64, 0.5), (68, 0.625), (72, 0.75)], "eval/pass@k": [(0, 0.5), (64, 0.75), (68, 0.75)]}


def test_one_accuracy_curve_in_tensorboard(tmp_path):
    t = tracking.Trackers(("tensorboard",), "sdzero", tmp_path, "run", {}, resume=False)
    for row in CURVE_ROWS:
        t.log(row)
    t.close()
    scalars, _ = read_tb(tmp_path / "tensorboard")
    assert_points(scalars, written(CURVE_ROWS, tmp_path))
    assert {tag: scalars[tag] for tag in CURVE} == CURVE
    assert scalars["eval/p1/avg@k"] == [(1, 0.375)]  # the point inside SRT keeps its own tag, at its step
    # --eval-extra's set (HumanEval in the code demo) has tags of its own, not a second point of the held-out set's
    assert scalars["eval/eval_base/avg@k"] == [(0, 0.25)] and scalars["eval/eval_base/extra/avg@k"] == [(0, 0.125)]


def test_one_accuracy_curve_is_rewritten_on_resume(tmp_path):
    """Killed after Phase 2's evaluation, checkpoint before it: the resumed run evaluates again with other numbers;
    the curve then holds each number of generations once, with the resumed run's value."""
    t = tracking.Trackers(("tensorboard",), "sdzero", tmp_path, "run", {}, resume=False)
    for row in CURVE_ROWS[:7]:
        t.log(row)  # killed here: no close
    t = tracking.Trackers(("tensorboard",), "sdzero", tmp_path, "run", {}, resume=True)
    t.rewind(CURVE_ROWS[:5])
    again = [CURVE_ROWS[5], {**CURVE_ROWS[6], "avg@k": 0.875}, CURVE_ROWS[7]]
    for row in again:
        t.log(row)
    t.close()
    scalars, _ = read_tb(tmp_path / "tensorboard")
    assert_points(scalars, written(CURVE_ROWS[:5] + again, tmp_path))
    assert scalars["eval/avg@k"] == [(0, 0.25), (64, 0.5), (68, 0.875), (72, 0.75)]


def test_one_accuracy_curve_in_wandb_and_trackio(tmp_path, monkeypatch):
    """wandb: the curve's tags on the x axis eval/generations, sent with the evaluation's own row; Trackio: at
    step = generations."""
    wandb, trackio = [], []
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(wandb))
    monkeypatch.setitem(sys.modules, "trackio", fake_trackio(trackio))
    t = tracking.Trackers(("wandb", "trackio"), "sdzero", tmp_path, "run", {}, resume=False)
    for row in CURVE_ROWS:
        t.log(row)
    t.close()
    defined = [c[1:] for c in wandb if c[0] == "define_metric"]
    assert [d for d in defined if not d[0].endswith(("/step", "/*"))] == [
        ("eval/generations", {}), ("eval/avg@k", {"step_metric": "eval/generations"}),
        ("eval/pass@k", {"step_metric": "eval/generations"})]
    logs = [c[1] for c in wandb if c[0] == "log"]
    assert [(d["eval/generations"], d["eval/avg@k"]) for d in logs if "eval/generations" in d] == CURVE["eval/avg@k"]
    assert logs[4] == {"eval/eval_srt/generations": 64, "eval/eval_srt/avg@k": 0.5, "eval/eval_srt/pass@k": 0.75,
                       "eval/eval_srt/step": 0, "eval/avg@k": 0.5, "eval/pass@k": 0.75, "eval/generations": 64}
    curve = [(step, values) for _, values, step in (c for c in trackio if c[0] == "log") if "eval/avg@k" in values]
    assert curve == [(0, {"eval/avg@k": 0.25, "eval/pass@k": 0.5}), (64, {"eval/avg@k": 0.5, "eval/pass@k": 0.75}),
                     (68, {"eval/avg@k": 0.625, "eval/pass@k": 0.75}), (72, {"eval/avg@k": 0.75})]


# -------------------------------------------------------------------------------------- wandb and Trackio (fakes)

def fake_wandb(calls, fail=False):
    class Run:
        def define_metric(self, name, **kw):
            calls.append(("define_metric", name, kw))

        def log(self, values):
            calls.append(("log", values))

        def finish(self):
            calls.append(("finish",))

    def init(**kw):
        calls.append(("init", kw))
        if fail:
            raise RuntimeError("not logged in")
        return Run()
    return types.SimpleNamespace(init=init)


def fake_trackio(calls, existing=()):
    def init(project, name=None, config=None, resume="never"):
        calls.append(("init", dict(project=project, name=name, config=config, resume=resume)))
        return types.SimpleNamespace(name=name + "-1" if resume == "never" and name in existing else name)
    return types.SimpleNamespace(init=init, log=lambda values, step=None: calls.append(("log", values, step)),
                                 finish=lambda: calls.append(("finish",)))


def test_wandb(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(calls))
    config = {"method": "sdzero"}
    t = tracking.Trackers(("wandb",), "sdzero", tmp_path, "myrun", config, resume=False)
    for row in ROWS[2:6]:
        t.log(row)
    t.close()
    run_id = json.loads((tmp_path / "tracking.json").read_text())["wandb_id"]
    assert calls[0] == ("init", dict(project="sdzero", name="myrun", config=config, dir=str(tmp_path), id=run_id,
                                     resume="allow"))
    assert calls[1:] == [
        ("define_metric", "p1/step", {}), ("define_metric", "p1/*", {"step_metric": "p1/step"}),
        ("log", {"p1/epoch": 0, "p1/loss": 2.5, "p1/lr": 1e-3, "p1/step": 1}),
        ("log", {"p1/epoch": 0, "p1/loss": 2.25, "p1/lr": 5e-4, "p1/step": 2}),
        ("define_metric", "p2/step", {}), ("define_metric", "p2/*", {"step_metric": "p2/step"}),
        ("log", {"p2/loss": 0.75, "p2/step": 1}),
        ("define_metric", "eval/p2/step", {}), ("define_metric", "eval/p2/*", {"step_metric": "eval/p2/step"}),
        ("log", {"eval/p2/avg@k": 0.5, "eval/p2/step": 1}),
        ("finish",),
    ]
    calls.clear()  # --resume: the same wandb run; rewind() sends nothing again, but restarts the counters
    t = tracking.Trackers(("wandb",), "sdzero", tmp_path, "myrun", config, resume=True)
    t.rewind(ROWS[:2])
    t.log({"phase": "eval", "stage": "eval_base", "avg@k": 1.0})
    assert calls[0][1]["id"] == run_id
    assert calls[-1] == ("log", {"eval/eval_base/avg@k": 1.0, "eval/eval_base/step": 1})


def test_trackio(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "trackio", fake_trackio(calls, existing=("myrun",)))
    t = tracking.Trackers(("trackio",), "sdzero", tmp_path, "myrun", {"seed": 0}, resume=False)
    for row in ROWS[1:3]:
        t.log(row)
    t.close()
    assert calls == [
        ("init", dict(project="sdzero", name="myrun", config={"seed": 0}, resume="never")),
        ("log", {"eval/eval_base/avg@k": 0.25, "eval/eval_base/pass@k": 0.5, "eval/eval_base/k": 1,
                 "eval/eval_base/revise/n_r0": 3, "eval/eval_base/revise/r0_corrected": 1 / 3}, 0),
        ("log", {"p1/epoch": 0, "p1/loss": 2.5, "p1/lr": 1e-3}, 1),
        ("finish",),
    ]
    # the name was taken, so Trackio chose another: --resume continues that one, not the older "myrun"
    assert json.loads((tmp_path / "tracking.json").read_text()) == {"trackio_name": "myrun-1"}
    calls.clear()
    tracking.Trackers(("trackio",), "sdzero", tmp_path, "myrun", {"seed": 0}, resume=True)
    assert calls == [("init", dict(project="sdzero", name="myrun-1", config={"seed": 0}, resume="allow"))]


def test_both_services_share_tracking_json(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb([]))
    monkeypatch.setitem(sys.modules, "trackio", fake_trackio([]))
    tracking.Trackers(("wandb", "trackio"), "p", tmp_path, "r", {}, resume=False)
    state = json.loads((tmp_path / "tracking.json").read_text())
    assert sorted(state) == ["trackio_name", "wandb_id"]
    tracking.Trackers(("wandb", "trackio"), "p", tmp_path, "r", {}, resume=True)
    assert json.loads((tmp_path / "tracking.json").read_text()) == state


@pytest.mark.parametrize("name", ["wandb", "trackio", "tensorboard"])
def test_missing_package(tmp_path, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)
    if name == "tensorboard":  # torch.utils.tensorboard may be imported already (the tests above)
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    message = rf"^--report-to {name}: the {name} package is not installed \(pip install {name}\)$"
    with pytest.raises(SystemExit, match=message):
        tracking.check_installed((name,))
    with pytest.raises(SystemExit, match=message):
        tracking.Trackers((name,), "p", tmp_path, "run", {}, resume=False)
    assert not (tmp_path / "tracking.json").exists()


def test_init_failure_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb([], fail=True))
    with pytest.raises(SystemExit, match=r"^--report-to wandb: could not start it: RuntimeError: not logged in$"):
        tracking.Trackers(("wandb",), "p", tmp_path, "run", {}, resume=False)


# ----------------------------------------------------------------------------------------------- a real run

def test_a_training_run_writes_every_metrics_row_to_tensorboard(tmp_path):
    """train.py --report-to tensorboard --eval-every 1: the event files hold each number of metrics.jsonl at
    its step (the learning curve under eval/p2), and a missing backend stops the run before it starts."""
    import train

    out = tmp_path / "run"
    train.main(["--preset", "smoke", "--out", str(out), "--p2-steps", "3", "--n-eval", "4", "--eval-every", "1",
                "--report-to", "tensorboard", "--threads", "1"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scalars, texts = read_tb(out / "tensorboard")
    assert_points(scalars, written(rows, tmp_path))
    assert [s for s, _ in scalars["eval/p2/avg@k"]] == [1, 2]  # the curve, not after the last step
    assert json.loads(texts[0].strip("`").removeprefix("json\n")) == json.loads((out / "run_config.json").read_text())


@pytest.mark.parametrize("method, inside", [("sdzero", 2), ("rft", 0), ("grpo", 1)])
def test_one_accuracy_curve_across_the_stages_of_a_run(tmp_path, method, inside):
    """--eval-every 1: eval/avg@k holds every held-out evaluation's avg@k of metrics.jsonl at its training
    generations, x strictly increasing: base, the stage ends, and the points inside Phase 2 and GRPO (not those
    inside SRT or RFT fine-tuning, which draw no generations: they keep eval/p1, eval/rft)."""
    import train

    out = tmp_path / "run"
    train.main(["--preset", "smoke", "--out", str(out), "--method", method, "--p2-steps", "3", "--grpo-steps", "2",
                "--n-eval", "4", "--eval-every", "1", "--report-to", "tensorboard", "--threads", "1"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scalars, _ = read_tb(out / "tensorboard")
    want, ends = curve_of(rows), {"sdzero": 3, "rft": 2, "grpo": 2}[method]
    assert len(want) == ends + inside
    assert [x for x, _ in scalars["eval/avg@k"]] == [x for x, _ in want]
    assert [v for _, v in scalars["eval/avg@k"]] == pytest.approx([v for _, v in want], rel=1e-6)
    assert all(b[0] > a[0] for a, b in zip(want, want[1:]))  # x strictly increasing: one point per x
    assert want[0][0] == 0 and want[-1][0] == json.loads((out / "results.json").read_text())["generations"]
    assert len(scalars["eval/pass@k"]) == len(want)
    inner = [r for r in rows if r["phase"] == "eval" and "step" in r and r["stage"] in ("p1", "rft")]
    assert [s for s, _ in scalars.get("eval/p1/avg@k", []) + scalars.get("eval/rft/avg@k", [])] == \
        [r["step"] for r in inner] and (inner or method == "grpo")


@pytest.mark.slow
def test_the_accuracy_curve_after_kill_and_resume(tmp_path):
    """kill -9 in Phase 2, then --resume: the event files hold what metrics.jsonl holds, each point once, the
    accuracy curve included (rewritten from the rows the checkpoint kept, then the resumed run's)."""
    from test_train import kill_mid_phase, run_cli
    out = tmp_path / "run"
    args = ["--preset", "smoke", "--out", str(out), "--p2-steps", "6", "--n-eval", "4", "--eval-every", "1",
            "--report-to", "tensorboard", "--threads", "1"]
    kill_mid_phase(args, out, "p2", 3)
    resumed = run_cli([*args, "--resume"], timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr + resumed.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scalars, _ = read_tb(out / "tensorboard")
    assert_points(scalars, written(rows, tmp_path))
    want = curve_of(rows)
    assert len(want) == 3 + 5 and [x for x, _ in scalars["eval/avg@k"]] == [x for x, _ in want]
    assert all(b[0] > a[0] for a, b in zip(want, want[1:]))


def test_a_missing_backend_stops_the_run_before_the_model_loads(tmp_path, monkeypatch):
    import config

    monkeypatch.setitem(sys.modules, "wandb", None)
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(SystemExit, match=r"--report-to wandb: the wandb package is not installed \(pip install wandb\)"):
        config.parse_args(["--report_to", "tensorboard,wandb"])


@pytest.mark.slow
def test_the_real_wandb_and_trackio_packages(tmp_path):
    """The two services through their real packages, offline (CI installs them for the slow tests): Trackio's
    local database holds every number of metrics.jsonl at its step; wandb writes its offline run under the id
    tracking.json keeps, with no error in its log."""
    pytest.importorskip("wandb", reason="CI installs wandb for the slow tests (.ci/run)")
    pytest.importorskip("trackio", reason="CI installs trackio for the slow tests (.ci/run)")
    from test_train import run_cli
    out = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", TRACKIO_DIR=str(tmp_path / "trackio"),
               WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))
    proc = run_cli(["--preset", "smoke", "--out", str(out), "--p2-steps", "2", "--n-eval", "4", "--eval-every", "1",
                    "--report-to", "wandb,trackio", "--threads", "1"], env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    want = sorted((step, tag, v) for tag, step, v in written(rows, tmp_path))
    code = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage as S; "
            "print(json.dumps(S.get_logs('sdzero', run='run')))")
    logs = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                     check=True).stdout)
    got = sorted((log["step"], k, v) for log in logs for k, v in log.items() if k not in ("step", "timestamp"))
    assert [(s, k) for s, k, _ in got] == [(s, k) for s, k, _ in want]
    assert [v for *_, v in got] == pytest.approx([v for *_, v in want], rel=1e-12)
    state = json.loads((out / "tracking.json").read_text())
    assert state["trackio_name"] == "run"
    runs = list((out / "wandb").glob(f"offline-run-*-{state['wandb_id']}/run-{state['wandb_id']}.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 1000
    assert "ERROR" not in (out / "wandb" / "debug.log").read_text()
