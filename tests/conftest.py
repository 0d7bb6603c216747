"""Shared pytest fixtures. No test may touch the network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

MICRO_MODEL_DIR = Path(__file__).resolve().parent / "fixtures" / "micro"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: loads the embedded SmolLM2 model")


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


@pytest.fixture(scope="module")
def sandbox_works():
    """Skips code-verdict tests where the sandbox cannot start at all (sandbox_info says why)."""
    import sandbox

    info = sandbox.sandbox_info()
    if not info["working"]:
        pytest.skip(f"the sandbox cannot start on this machine: {info}")
