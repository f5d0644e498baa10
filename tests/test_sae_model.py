"""TopKSAE: sparsify / sae-lens loading against the formula on hand-written files, round trips,
Hub push/pull, the trainer's statistics, and the SAE path of the selection job (with a card)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hf_ext.errors import InputError
from hf_ext.select.sae import SAETrainingConfig, TopKSAE, train_sae

D, F, K = 16, 64, 5


def weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(D, F, generator=g), "b_enc": torch.randn(F, generator=g) * 0.1,
            "W_dec": torch.randn(F, D, generator=g), "b_dec": torch.randn(D, generator=g) * 0.1}


def formula(h, w, k=None, threshold=None):
    z = torch.relu((h - w["b_dec"]) @ w["W_enc"] + w["b_enc"])  # z = TopK(ReLU(W_enc (h − b_dec) + b_enc))
    if threshold is not None:
        z = z * (z > threshold)
    if k:
        top = z.topk(k, dim=-1)
        z = torch.zeros_like(z).scatter(-1, top.indices, top.values)
    return z


def dense(sae, h):
    if sae.k:
        ids, values = sae.encode_topk(h)
        return torch.zeros(h.shape[0], sae.num_latents).scatter(-1, ids, values)
    return sae.pre_acts(h)


def test_sparsify_layout_loads_and_matches_the_formula(tmp_path):
    w = weights()
    folder = tmp_path / "repo" / "layers.3"
    folder.mkdir(parents=True)
    save_file({"encoder.weight": w["W_enc"].T.contiguous(), "encoder.bias": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]},
              str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"expansion_factor": 4, "normalize_decoder": True, "num_latents": 0, "k": K,
                                                 "multi_topk": False, "skip_connection": False, "d_in": D}))
    h = torch.randn(7, D)
    sae = TopKSAE.from_pretrained(tmp_path / "repo", "layers.3")
    torch.testing.assert_close(dense(sae, h), formula(h, w, K))
    with pytest.raises(InputError, match="pass subfolder="):
        TopKSAE.from_pretrained(tmp_path / "repo")


def test_topk_fast_path_and_per_latent_thresholds_match_the_formula():
    # encode_topk takes the top k of the raw pre-activations (ReLU keeps the order); with per-latent
    # JumpReLU thresholds the order can change, and it must activate densely first.
    w = weights(2)
    h = torch.randn(11, D)
    threshold = torch.rand(F) * 3
    for thr in (None, threshold):
        sae = TopKSAE(D, F, K, threshold=thr)
        sae.load_state_dict({"encoder.weight": w["W_enc"].T, "encoder.bias": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"],
                             **({"threshold": thr} if thr is not None else {})})
        torch.testing.assert_close(dense(sae, h), formula(h, w, K, thr))


@pytest.mark.parametrize("architecture", ["topk", "standard", "jumprelu"])
def test_sae_lens_layout_loads_and_matches_the_formula(tmp_path, architecture):
    w = weights(1)
    tensors = dict(w)
    cfg = {"architecture": architecture, "d_in": D, "d_sae": F, "apply_b_dec_to_input": True, "normalize_activations": "none",
           "hook_name": "blocks.3.hook_resid_post"}
    threshold = None
    if architecture == "topk":
        cfg["activation_fn_kwargs"] = {"k": K}  # the older sae-lens spelling of k
    if architecture == "jumprelu":
        threshold = torch.rand(F) * 2
        tensors["threshold"] = threshold
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae = TopKSAE.from_pretrained(tmp_path)
    h = torch.randn(9, D)
    torch.testing.assert_close(dense(sae, h), formula(h, w, K if architecture == "topk" else None, threshold))
    # Round trip through both layouts gives the same encoder.
    for fmt in ("sparsify", "sae_lens"):
        again = TopKSAE.from_pretrained(sae.save_pretrained(tmp_path / fmt, format=fmt))
        torch.testing.assert_close(dense(again, h), dense(sae, h))


def test_bad_sae_files_give_clear_errors(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": D, "d_sae": F, "normalize_activations": "none"}))
    save_file(weights(), str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(InputError, match="needs k in cfg.json"):
        TopKSAE.from_pretrained(tmp_path)
    with pytest.raises(InputError, match="neither an existing folder nor a Hub repo id"):
        TopKSAE.from_pretrained("./no/such/sae")


def test_push_to_the_hub_and_load_back(tmp_path, local_hub):
    sae = TopKSAE(D, F, K, seed=4, metadata={"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "layer": 3})
    sae.push_to_hub("alice/tiny-sae", endpoint=local_hub.endpoint, token="hf_x")
    back = TopKSAE.from_pretrained("alice/tiny-sae", endpoint=local_hub.endpoint)
    h = torch.randn(4, D)
    torch.testing.assert_close(dense(back, h), dense(sae, h))
    from huggingface_hub import HfApi, ModelCard

    from hf_ext.hub import pull

    card = ModelCard.load(pull("alice/tiny-sae", repo_type="model", endpoint=local_hub.endpoint) / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and "sparse-autoencoder" in card.data.tags
    files = HfApi(endpoint=local_hub.endpoint, token="hf_x").list_repo_files("alice/tiny-sae")
    assert {"cfg.json", "sae.safetensors", "README.md"} <= set(files)


def test_trainer_recovers_a_sparse_dictionary():
    # Data made of k-sparse combinations of a hidden dictionary: a TopK SAE of that size fits it.
    g = torch.Generator().manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(48, 24, generator=g), dim=1)
    codes = torch.zeros(8000, 48)
    idx = torch.stack([torch.randperm(48, generator=g)[:3] for _ in range(8000)])
    codes.scatter_(1, idx, torch.rand(8000, 3, generator=g) * 2 + 1)
    x = codes @ atoms * 5 + 1.0
    sae = train_sae(x, SAETrainingConfig(num_latents=96, k=3, epochs=5, batch_size=512, lr=5e-3, dead_after_tokens=5000))
    stats = sae.metadata["training"]
    assert stats["nmse"] < 0.25 and 0 <= stats["dead_fraction"] < 1
    # Folding the input scale back: the saved SAE reconstructs raw inputs with the reported error.
    ids, values = sae.encode_topk(x[:2000])
    nmse = ((x[:2000] - sae.decode(ids, values)).pow(2).sum(1).mean() / (x[:2000] - x[:2000].mean(0)).pow(2).sum(1).mean()).item()
    assert nmse < 0.3
    with pytest.raises(InputError, match="k <= num_latents"):
        SAETrainingConfig(num_latents=4, k=8)


def test_selection_job_with_sae_methods_writes_coverage_card_and_sae(tmp_path):
    from hf_ext.select.pipeline import SelectionConfig, run_selection
    from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    save_tiny(tmp_path / "llama", tiny_llama(tokenizer=tok, num_layers=2, seed=5), tok)
    rng = np.random.default_rng(0)
    words = "the model data text user answer question score filter train select expert reward language token".split()
    rows = [{"instruction": " ".join(rng.choice(words, 4)), "input": "", "category": "qa",
             "output": " ".join(rng.choice(words, int(rng.integers(3, 40))))} for _ in range(60)]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    config = SelectionConfig(
        dataset=str(tmp_path / "pool.jsonl"), output_dir=str(out), budget=10, method="sae_greedy",
        compare_methods=["longest", "random", "sae_simscale", "kcenter"], tokenizer=str(tmp_path / "llama"),
        featurizer={"model": str(tmp_path / "llama"), "layer": -1},
        sae_training={"num_latents": 128, "k": 4, "max_examples": 60, "epochs": 2}, threshold_quantile=0.5, dataset_license="apache-2.0",
    )
    import os

    os.environ["HF_EXT_CACHE"] = str(tmp_path / "cache")
    try:
        metrics = run_selection(config)
    finally:
        del os.environ["HF_EXT_CACHE"]
    assert sorted(p.name for p in out.iterdir()) == [".hf_ext_output.json", "README.md", "coverage.png", "data", "metrics.json", "sae", "selection.png"]
    cov = metrics["feature_coverage"]
    assert set(cov) == {"sae_greedy", "longest", "random", "sae_simscale", "kcenter"}
    assert cov["sae_greedy"] >= max(cov.values())  # greedy max-coverage covers the most here
    assert 0 < cov["sae_greedy"] <= metrics["pool_feature_coverage"]
    assert metrics["sae"]["threshold_quantile"] == 0.5 and metrics["sae"]["num_latents"] == 128
    card = (out / "README.md").read_text()
    assert "## Feature coverage" in card and "coverage.png" in card and f"| `sae_greedy` (this dataset) | {cov['sae_greedy']} |" in card
    assert TopKSAE.from_pretrained(out / "sae").num_latents == 128
