# HF_HUB_OFFLINE=1 is set by the repository's root conftest.py, before any HF import.
import pytest

from local_hub import local_hub  # noqa: F401,E402  (pytest fixture; the only way a test goes online, to 127.0.0.1)


@pytest.fixture(scope="module")
def tok():
    """``hf_ext.testing.tiny_tokenizer()``: one fresh copy per test module (tests may mutate it)."""
    from hf_ext.testing import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="module")
def tiny_lm(tok):
    """``hf_ext.testing.tiny_llama(seed=0)`` matching `tok`, in eval mode; one per test module (deep-copy it
    before changing its weights)."""
    from hf_ext.testing import tiny_llama

    return tiny_llama(seed=0, tokenizer=tok).eval()
