"""Two machines, simulated on this one: two torchrun node agents (--nnodes 2, one process each, gloo) meet over
a localhost rendezvous and train what one process trains, rank 0 alone writing. Each "node" runs from its own
folder with its own HOME, caches and temporary folder, so nothing node-local is shared; the code (and the micro
model inside it) is the same checkout, as it must be on every machine. The smoke preset, as test_parallel.py.
And a fast test: ranks that read different checkpoints on --resume (a node-local --out) are refused."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import config
import parallel
import run as run_py
import train
from test_parallel import ENV, REPO, assert_same_training, run

SMOKE = ["--preset", "smoke"]
TABLE = "training generations"  # in the results table, which rank 0 alone prints
TIMEOUT = 600  # the whole two-node run; a hung rendezvous or collective fails the test here
GRACE = 30  # once one node has failed, how long the other may take to notice before it is killed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env(node: Path) -> dict:
    """A node's own environment: HOME, the Hugging Face and sdzero caches and TMPDIR in its folder."""
    for sub in ("home", "hf", "sdzero", "tmp"):
        (node / sub).mkdir(parents=True, exist_ok=True)
    return dict(ENV, HOME=str(node / "home"), XDG_CACHE_HOME=str(node / "home" / ".cache"), HF_HOME=str(node / "hf"),
                SDZERO_CACHE=str(node / "sdzero"), TMPDIR=str(node / "tmp"))


def two_nodes(tmp_path: Path, launch: list[list[str]], args: list[list[str]]) -> list[str]:
    """Start the two node agents at once (torchrun launch[i] train.py args[i], each in its own folder and process
    group), wait for both, and return their outputs. Fails, with both outputs' tails, unless both exit 0 within
    TIMEOUT; a node still running GRACE s after the other failed (waiting on a peer that is gone) is killed."""
    procs = []
    for i, (torchrun_args, train_args) in enumerate(zip(launch, args)):
        node = tmp_path / f"node{i}"
        node.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun_args, str(REPO / "train.py"), *train_args]
        with open(node / "output.txt", "w") as log:  # the node's processes write to their own copy of it
            procs.append(subprocess.Popen(cmd, cwd=node, env=node_env(node), stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    deadline, failed_at = time.time() + TIMEOUT, None
    try:
        while any(p.poll() is None for p in procs) and time.time() < deadline:
            if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
                failed_at = time.time()
            if failed_at is not None and time.time() > failed_at + GRACE:
                break
            time.sleep(0.1)
    finally:
        hung = [i for i, p in enumerate(procs) if p.poll() is None]
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the agent and its worker; a no-op once both are gone
            except ProcessLookupError:
                pass
            p.wait()
    outputs = [(tmp_path / f"node{i}" / "output.txt").read_text(errors="replace") for i in range(len(procs))]
    report = "".join(f"\n----- node {i} (exit {p.returncode}{', killed: still running' if i in hung else ''}) "
                     f"-----\n{out[-4000:]}" for i, (p, out) in enumerate(zip(procs, outputs)))
    assert not hung and all(p.returncode == 0 for p in procs), report
    return outputs


def metric_lines(out: Path) -> int:
    return (out / "metrics.jsonl").read_text().count("\n")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The smoke run in one process (test_parallel's `single`): what the two-node run must reproduce."""
    out = tmp_path_factory.mktemp("one") / "run"
    run([*SMOKE, "--out", str(out)])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_nodes_c10d_match_one_process(strategy, one_process, tmp_path):
    """README's command: the c10d rendezvous at node 0's address, the same --out (shared storage) on both;
    DDP, and FSDP2 sharding across the two nodes (the paper preset's). The rendezvous, not --node-rank, decides
    which node holds rank 0 (it sorts the nodes by address and pid), so the test accepts either and checks that
    exactly one of them wrote and printed."""
    out, port = tmp_path / "shared" / "run", free_port()
    launch = [["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"sdzero-test-{port}", "--local-addr", "127.0.0.1"]
              for _ in range(2)]
    outputs = two_nodes(tmp_path, launch, [[*SMOKE, "--parallel", strategy, "--out", str(out)]] * 2)
    printed = [TABLE in o for o in outputs]
    assert sum(printed) == 1, printed  # one rank 0, on either node
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["parallel"] == strategy
    assert metric_lines(out) == metric_lines(one_process)  # rank 0 alone wrote metrics (no duplicated rows)
    assert_same_training(one_process, out)


@pytest.mark.slow
def test_two_nodes_static_node_rank_0_writes(one_process, tmp_path):
    """The static rendezvous (--master-addr/--master-port, --node-rank): node rank 0 holds rank 0. Each node is
    given its own node-local --out here: on a fresh run only rank 0 writes, and node 1's --out is never even
    created (a resumed run is what needs the checkpoint on every node, hence shared storage in the README)."""
    port = free_port()
    outs = [tmp_path / f"node{i}" / "local" / "run" for i in range(2)]
    launch = [["--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(i), "--master-addr", "127.0.0.1",
               "--master-port", str(port)] for i in range(2)]
    outputs = two_nodes(tmp_path, launch, [[*SMOKE, "--out", str(o)] for o in outs])
    assert TABLE in outputs[0] and TABLE not in outputs[1]
    assert not outs[1].exists()
    assert json.loads((outs[0] / "results.json").read_text())["world_size"] == 2
    assert metric_lines(outs[0]) == metric_lines(one_process)
    assert_same_training(one_process, outs[0])


def test_ranks_that_read_different_checkpoints_are_refused(tmp_path, monkeypatch):
    """Several machines with a node-local --out: another rank's checkpoint at another step is one clear line
    (the ranks' (stage, step, generations) are compared before anything is restored)."""
    out = tmp_path / "run"
    train.main(["--preset", "smoke", "--out", str(out), "--p2-steps", "2", "--n-eval", "4", "--threads", "1"])
    cfg = config.parse_args(["--preset", "smoke", "--out", str(out), "--p2-steps", "2", "--n-eval", "4",
                             "--threads", "1", "--resume"])
    monkeypatch.setattr(parallel, "gather",
                        lambda d, n, mine, values: [values[0], ("p2", 1, 40)])
    with pytest.raises(SystemExit, match=r"--resume: the processes read different checkpoints in .* "
                       r"\(stage, step, generations of each rank: \[\('done', 0, \d+\), \('p2', 1, 40\)\]\); --out must be one folder that every node sees"):
        run_py.Run(cfg).load_checkpoint()
