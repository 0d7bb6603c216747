"""Data parallelism for train.py under torchrun: DDP for models that fit one GPU, FSDP2 (`fully_shard`) for
those that do not. Without torchrun (WORLD_SIZE unset or 1) every function here is a no-op and train.py is a
plain single process.

    torchrun --standalone --nproc_per_node 8 train.py --task math ...                  # DDP (--parallel auto)
    torchrun --standalone --nproc_per_node 8 train.py --task math --parallel fsdp ...  # FSDP2 (the paper preset's)
    Several machines: the same command on each, --nnodes N and a rendezvous in place of --standalone (README).

What keeps a run independent of its world size (a run resumes on another number of GPUs, and one process
and N processes train the same model up to float summation order):
  - Batch sizes are global. A step's prompts are split across ranks (rank r takes rows r, r + W, ...), each
    rank samples and verifies its rows, and every rank then holds every rollout (`gather`). Each rollout
    draws from a generator seeded by its global index, so it does not depend on which rank produced it.
  - Losses are means over the whole batch. A rank weights its local mean by its share of the global count
    (tokens or sequences) times W (`Shares`), so the mean DDP and FSDP take over ranks is the one-process loss.
  - Checkpoints hold full (unsharded) state dicts keyed by parameter name, written by rank 0.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

STRATEGIES = ("auto", "ddp", "fsdp")  # --parallel under torchrun; auto is DDP


@dataclass
class Dist:
    """This process's place in the job; the defaults are the single-process job."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    strategy: str = "none"  # none | ddp | fsdp
    device: torch.device | None = None
    mesh: object = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init(strategy: str, default_device: torch.device) -> Dist:
    """Join the torchrun job (env:// rendezvous) when WORLD_SIZE > 1: NCCL on CUDA, gloo on CPU.
    strategy: auto (DDP) | ddp | fsdp."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=default_device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise SystemExit(f"--nproc_per_node: local rank {local_rank} but only {torch.cuda.device_count()} "
                             "GPUs are visible; run one process per GPU")
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    mesh = None
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        mesh = init_device_mesh(device.type, (world,))
    return Dist(rank, world, local_rank, "fsdp" if strategy == "fsdp" else "ddp", device, mesh)


def shutdown(d: Dist) -> None:
    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------ splitting work

def my_rows(d: Dist, n: int) -> list[int]:
    """The global row indices this rank handles: r, r + W, ... (interleaved, so sorted inputs stay balanced)."""
    return list(range(d.rank, n, d.world))


def gather(d: Dist, n: int, mine: list[int], values: list) -> list:
    """Every rank's values for its rows, reassembled in global order 0..n-1 on every rank."""
    if d.world == 1:
        return list(values)
    parts = [None] * d.world
    dist.all_gather_object(parts, list(zip(mine, values)))
    out = [None] * n
    for part in parts:
        for i, v in part:
            out[i] = v
    return out


def all_sum(d: Dist, values: list[float]) -> list[float]:
    """Sums over ranks of a few floats (fp64, so token counts stay exact)."""
    if d.world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


class Shares:
    """Turns local means into the global mean. A rank holding `local` of the batch's `total` units (tokens or
    sequences) multiplies its local mean by local * W / total: DDP and FSDP average gradients over W ranks, so
    the result is sum_ranks(local mean * local) / total, the mean over the whole batch. `mean` gives the value
    to log (the same on every rank)."""

    def __init__(self, d: Dist, local: list[float]):
        self.d, self.local, self.total = d, local, all_sum(d, local)

    def factor(self, i: int = 0) -> float:
        return self.scale(self.local[i], i)

    def scale(self, part: float, i: int = 0) -> float:
        """The factor for a mean over `part` of this rank's units (a micro-batch of them)."""
        return part * self.d.world / self.total[i] if self.total[i] else 0.0

    def mean(self, local_means: list[float]) -> list[float]:
        sums = all_sum(self.d, [m * n for m, n in zip(local_means, self.local)])
        return [s / t if t else 0.0 for s, t in zip(sums, self.total)]


# ------------------------------------------------------------------------------------ wrapping the model

@dataclass
class Weights:
    """One role's weights (the student; the teacher or GRPO's reference): `model` is the bare Hugging Face
    model (sampling, saving, copying weights) and `policy` the same model wrapped for this job (`wrap`);
    every loss runs as `policy(fn, ...)`, which calls fn(model, ...)."""
    model: torch.nn.Module
    policy: torch.nn.Module


class Policy(torch.nn.Module):
    """Runs a function of the model inside one forward call. The losses apply the LM head by hand (a chunk of
    positions at a time) and reach the backbone directly; going through this forward lets DDP's gradient
    hooks and FSDP2's unshard/reshard see every use of the weights."""

    def __init__(self, model: torch.nn.Module, autocast: torch.dtype | None = None):
        super().__init__()
        self.model = model
        self.autocast = autocast  # e.g. torch.bfloat16: run fn under autocast (fp32 weights, bf16 matmuls)

    def forward(self, fn, *args, **kwargs):
        with amp(self.autocast, _device_type(self.model)):
            return fn(self.model, *args, **kwargs)


def _device_type(model: torch.nn.Module) -> str:
    return next(model.parameters()).device.type


def amp(dtype: torch.dtype | None, device_type: str):
    """torch.autocast to dtype, or nothing when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def decoder_layers(model) -> torch.nn.ModuleList:
    backbone = getattr(model, model.base_model_prefix, None)
    layers = getattr(backbone, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise SystemExit(f"--parallel fsdp: cannot find the decoder layers of {type(model).__name__} "
                         f"(expected model.{model.base_model_prefix}.layers); use --parallel ddp")
    return layers


def wrap(model: torch.nn.Module, d: Dist, train: bool = True, autocast: torch.dtype | None = None) -> torch.nn.Module:
    """The model's Policy for this job: plain, DDP, or FSDP2 with one unit per decoder layer and the
    embeddings, final norm and (tied) LM head in the root unit. A frozen model (train=False: the teacher,
    the reference) is wrapped in FSDP too, so it is sharded, but never in DDP (it has no gradients)."""
    policy = Policy(model, autocast)
    if d.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for layer in decoder_layers(model):
            fully_shard(layer, mesh=d.mesh)
        fully_shard(policy, mesh=d.mesh)
        with torch.no_grad():  # one forward through the root: FSDP2 initialises its state from the root down,
            policy(lambda model: None)  # before sampling calls the layers without it (rollout_mode)
    elif d.strategy == "ddp" and train:
        from torch.nn.parallel import DistributedDataParallel
        policy = DistributedDataParallel(policy, device_ids=[d.local_rank] if d.device.type == "cuda" else None,
                                         broadcast_buffers=False)
    return policy


@contextlib.contextmanager
def rollout_mode(policy: torch.nn.Module, d: Dist):
    """Around generation with the bare model. FSDP2: gather every unit's parameters once (collectively) and
    keep them gathered for the whole decode loop, so ranks decoding different numbers of steps never wait on
    each other; reshard afterwards. DDP and one process: nothing to do."""
    if d.strategy != "fsdp":
        yield
        return
    from torch.distributed.fsdp import FSDPModule
    units = [m for m in policy.modules() if isinstance(m, FSDPModule)]
    for m in units:
        m.unshard()
        m.set_reshard_after_forward(False)
    try:
        yield
    finally:
        for m in units:
            m.set_reshard_after_forward(True)
            m.reshard()


@contextlib.contextmanager
def grad_sync(policy: torch.nn.Module, d: Dist, sync: bool):
    """Backward passes inside reduce gradients across ranks only when sync (the last micro-batch of a step);
    before that they accumulate locally (DDP no_sync, FSDP2 set_requires_gradient_sync)."""
    if sync or d.strategy == "none":
        yield
    elif d.strategy == "ddp":
        with policy.no_sync():
            yield
    else:
        policy.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            policy.set_requires_gradient_sync(True)


def reshard(policy: torch.nn.Module) -> None:
    """FSDP2: free every unit's gathered parameters, so each parameter is its DTensor shard again (the root
    unit otherwise stays gathered after a forward)."""
    from torch.distributed.fsdp import FSDPModule
    for m in policy.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def grad_norm_value(norm) -> float:
    """clip_grad_norm_'s total norm as a float (a DTensor under FSDP2)."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


# ------------------------------------------------------------------------------------ world-size-free state

_FULL = dict(full_state_dict=True, cpu_offload=True)


def model_state(model: torch.nn.Module, d: Dist) -> dict:
    """The full state dict (rank 0 gets it; under FSDP other ranks get {}). Collective under FSDP."""
    if d.strategy != "fsdp":
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(**_FULL))


def load_model_state(model: torch.nn.Module, state: dict, d: Dist) -> None:
    if d.strategy != "fsdp":
        model.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def optimizer_state(model: torch.nn.Module, optimizer, d: Dist) -> dict:
    """The optimizer state keyed by parameter name (not by position in one process's parameter list)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(**_FULL))


def load_optimizer_state(model: torch.nn.Module, optimizer, state: dict, d: Dist) -> None:
    if d.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        return
    # One process or DDP: the plain optimizer format, positions in the optimizer's parameter list.
    names = {id(p): n for n, p in model.named_parameters()}
    plain = optimizer.state_dict()
    position = {names[id(p)]: i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    plain["state"] = {position[n]: s for n, s in state["state"].items()}  # load_state_dict moves the tensors
    for group, saved in zip(plain["param_groups"], state["param_groups"]):
        group.update({k: v for k, v in saved.items() if k != "params"})
    optimizer.load_state_dict(plain)
