import pytest
import torch


@pytest.fixture(scope="session")
def tiny():
    """The tiny random chat model (3 layers, d_model 40, vocab 263)."""
    from drtk.models import load_model

    return load_model("drtk-tiny-chat")


@pytest.fixture(scope="session")
def embedded():
    """The real embedded SmolLM2-135M-Instruct (converted once into the drtk cache)."""
    from drtk.models import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


PROMPTS = [
    "Write a haiku about autumn leaves.",
    "hi",
    "Explain, in two sentences, why the sky looks blue during the day.",
    "List three prime numbers.",
]
