"""The selection job trains its SAE once and ships that one (issue 13 item 6), SAE selectors read
the featurizer's prefix (13), names joined to paths stay inside their folder (16), and published
SAE files carry no local paths (17)."""

import json
import os

import numpy as np
import pytest
from datasets import Dataset

from hf_ext.errors import InputError
from hf_ext.select.sae.model import TopKSAE
from hf_ext.select.selectors import get_selector, select


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

    root = tmp_path_factory.mktemp("sae_safety")
    tok = tiny_tokenizer()
    save_tiny(root / "llama", tiny_llama(tokenizer=tok, num_layers=2, seed=5), tok)
    rng = np.random.default_rng(0)
    words = "the model data text user answer question score filter train select expert reward language token".split()
    rows = [{"instruction": " ".join(rng.choice(words, 4)), "input": "", "category": "qa",
             "output": " ".join(rng.choice(words, int(rng.integers(3, 30))))} for _ in range(40)]
    (root / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_selection_job_trains_one_sae_and_ships_the_one_it_used(tiny, tmp_path, monkeypatch):
    import hf_ext.select.sae.job as job
    from hf_ext.select.pipeline import SelectionConfig, run_selection
    from hf_ext.select.sae.featurizer import SAEFeaturizer

    calls = []
    real_train = job.train_sae
    monkeypatch.setattr(job, "train_sae", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    monkeypatch.setenv("HF_EXT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    config = SelectionConfig(dataset=str(tiny / "pool.jsonl"), output_dir=str(out), budget=5, method="sae_greedy",
                             compare_methods=["random"], tokenizer=str(tiny / "llama"), featurizer={"model": str(tiny / "llama")},
                             sae_training={"num_latents": 64, "k": 4, "max_examples": 40, "epochs": 1}, dataset_license="mit")
    run_selection(config)
    assert len(calls) == 1  # one SAE trained, not a second one after featurizing
    cached = [p for p in (tmp_path / "cache" / "sae").iterdir() if (p / "cfg.json").is_file()]
    assert len(cached) == 1
    assert (out / "sae" / "sae.safetensors").read_bytes() == (cached[0] / "sae.safetensors").read_bytes()
    # The shipped SAE reproduces the features stored in the selected rows.
    selected = Dataset.from_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
    again = selected.remove_columns([c for c in selected.column_names if c.startswith("sae_")]).map(
        SAEFeaturizer(model=str(tiny / "llama"), sae=str(out / "sae")), batched=True)
    assert again["sae_ids"] == selected["sae_ids"]
    # Item 17: published SAE files hold Hub ids or nothing, never a local path.
    for name in ("cfg.json", "README.md"):
        text = (out / "sae" / name).read_text()
        assert str(tmp_path) not in text and str(tiny) not in text, name


def test_a_loaded_sae_saves_no_local_source_path(tmp_path):
    TopKSAE(d_in=8, num_latents=16, k=2).save_pretrained(tmp_path / "a")
    TopKSAE.from_pretrained(tmp_path / "a").save_pretrained(tmp_path / "b")
    cfg = (tmp_path / "b" / "cfg.json").read_text()
    assert str(tmp_path) not in cfg and "source" not in json.loads(cfg).get("hf_ext", {})


# -- item 13: the featurizer's prefix is the selectors' prefix ----------------------------------------
IDS = [[1, 2, 3], [1, 2], [4], [3, 4, 5], [6]]


@pytest.mark.parametrize("method", ["sae_greedy", "sae_greedy_sorted", "sae_simscale"])
def test_selectors_read_the_featurizer_prefix(method):
    default = {"sae_ids": IDS, "sae_values": [[1.0] * len(r) for r in IDS]}
    prefixed = {k.replace("sae_", "np2_"): v for k, v in default.items()}
    assert select(prefixed, method, 2, prefix="np2") == select(default, method, 2)
    with pytest.raises(InputError, match=r"prefix='np2'"):
        select(prefixed, method, 2)


def test_prefix_of_a_real_featurizer_round_trips(tiny):
    from hf_ext.select.sae.featurizer import SAEFeaturizer

    sae = TopKSAE(d_in=32, num_latents=64, k=4, seed=1)
    sae.save_pretrained(tiny / "sae64")
    ds = Dataset.from_json(str(tiny / "pool.jsonl"))
    feat = SAEFeaturizer(model=str(tiny / "llama"), sae=str(tiny / "sae64"), prefix="np2")
    out = ds.map(feat, batched=True)
    renamed = out.rename_columns({c: c.replace("np2_", "sae_") for c in out.column_names if c.startswith("np2_")})
    for method in ("sae_greedy", "kcenter"):
        assert select(out, method, 4, prefix=feat.prefix) == select(renamed, method, 4)


def test_prefix_is_refused_by_selectors_without_featurizer_columns():
    with pytest.raises(InputError, match="takes no prefix"):
        get_selector("longest").select({"response_tokens": [1, 2]}, 1, prefix="np2")


# -- item 16: names joined to paths -----------------------------------------------------------------
def test_sae_hookpoint_cannot_leave_the_sae_folder(tmp_path):
    TopKSAE(d_in=8, num_latents=16, k=2).save_pretrained(tmp_path / "outside")
    (tmp_path / "repo" / "layers.0").mkdir(parents=True)
    for hookpoint in ("../outside", "/etc", "layers.0/../../outside"):
        with pytest.raises(InputError, match="reach outside"):
            TopKSAE.from_pretrained(tmp_path / "repo", hookpoint)


def test_the_sae_folder_follows_from_the_featurizer_layer(tmp_path):
    """One source of truth: the SAE's subfolder is derived from featurizer.layer, never given."""
    from hf_ext.select.pipeline import SelectionConfig
    from hf_ext.select.sae.job import prepare_sae

    for name in ("layers.0", "layers.3", "blocks.1.hook_resid_post"):
        TopKSAE(d_in=8, num_latents=16, k=2).save_pretrained(tmp_path / "repo" / name)
    TopKSAE(d_in=8, num_latents=16, k=2).save_pretrained(tmp_path / "single")

    def folder(sae, layer, **featurizer):
        config = SelectionConfig(method="sae_greedy", featurizer={"sae": str(sae), "layer": layer, **featurizer},
                                 output_dir=str(tmp_path / "o"))
        return prepare_sae(config, None)

    assert folder(tmp_path / "repo", 3) == (str(tmp_path / "repo"), "layers.3", False)
    assert folder(tmp_path / "repo", 1) == (str(tmp_path / "repo"), "blocks.1.hook_resid_post", False)  # sae-lens name
    assert folder(tmp_path / "single", 7) == (str(tmp_path / "single"), None, False)  # one SAE at the root
    TopKSAE(d_in=8, num_latents=16, k=2, metadata={"layer": 2}).save_pretrained(tmp_path / "layer2")
    assert folder(tmp_path / "layer2", 2) == (str(tmp_path / "layer2"), None, False)
    with pytest.raises(InputError, match="trained on block 2, but featurizer.layer is 4 .* set featurizer.layer to 2"):
        folder(tmp_path / "layer2", 4)  # the SAE's own cfg.json names its layer: the two must agree
    with pytest.raises(InputError, match=r"no layers.1 folder.*Its SAE folders: \['blocks.1.hook_resid_post', 'layers.0', 'layers.3'\]"):
        folder(tmp_path / "repo", 1, sae_format="sparsify")
    with pytest.raises(InputError, match="featurizer.sae_subfolder is set by featurizer.layer"):
        SelectionConfig(method="sae_greedy", featurizer={"sae": str(tmp_path / "repo"), "sae_subfolder": "../../x"},
                        output_dir=str(tmp_path / "o"))


def test_ensemble_expert_names_cannot_leave_the_folder(tmp_path):
    from hf_ext.merge.ensemble import ExpertEnsemble
    from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    save_tiny(tmp_path / "evil", tiny_llama(tokenizer=tok, seed=3), tok)  # a loadable model outside the ensemble
    ens = tmp_path / "ens"
    (ens / "experts" / "ok").mkdir(parents=True)
    (ens / "ensemble_config.json").write_text(json.dumps(
        {"expert_names": ["../../evil"], "mixing": "probability", "top_k": None, "router": {"type": "bayesian"}}))
    with pytest.raises(InputError, match="'../../evil' is not a plain folder name"):
        ExpertEnsemble.from_pretrained(ens)
    with pytest.raises(InputError, match="expert name"):
        ExpertEnsemble([tiny_llama(tokenizer=tok)], None, names=["a/b"])


def test_the_sae_folder_of_a_hub_repo_follows_from_the_layer(tmp_path, local_hub, monkeypatch):
    """A Hub SAE repo with one folder per layer: the job asks for the cfg.json files only, picks the
    layer's folder and the featurizer loads that SAE."""
    import huggingface_hub

    from hf_ext.hub import push_folder
    from hf_ext.select.pipeline import SelectionConfig
    from hf_ext.select.sae.job import prepare_sae

    for layer in (0, 3):
        TopKSAE(d_in=8, num_latents=16 * (layer + 1), k=2).save_pretrained(tmp_path / "repo" / f"layers.{layer}")
    push_folder(tmp_path / "repo", "alice/sae-per-layer", repo_type="model", endpoint=local_hub.endpoint, token="hf_x")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", local_hub.endpoint)  # what HF_ENDPOINT sets
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        local_hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    config = SelectionConfig(method="sae_greedy", featurizer={"sae": "alice/sae-per-layer", "layer": 3}, output_dir=str(tmp_path / "o"))
    assert prepare_sae(config, None) == ("alice/sae-per-layer", "layers.3", False)
    assert TopKSAE.from_pretrained("alice/sae-per-layer", "layers.3", endpoint=local_hub.endpoint).num_latents == 64
    config = SelectionConfig(method="sae_greedy", featurizer={"sae": "alice/sae-per-layer", "layer": 2}, output_dir=str(tmp_path / "o"))
    with pytest.raises(InputError, match=r"Its SAE folders: \['layers.0', 'layers.3'\]"):
        prepare_sae(config, None)
