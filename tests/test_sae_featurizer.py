"""SAEFeaturizer: ids equal a direct full forward + SAE, the early stop, batching invariance,
truncation, fingerprint reuse, num_proc, and the bad inputs the issue lists."""

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_ext.errors import InputError
from hf_ext.dist import map_features
from hf_ext.select.sae import SAEFeaturizer, TopKSAE
from hf_ext.testing import save_tiny, tiny_bert, tiny_llama, tiny_tokenizer

ROWS = {
    "instruction": ["Say hi", "Explain the model data", "x", "Name a colour", "What is a token?", "Write a long answer"],
    "input": ["", "in two words", "", "", "", ""],
    "output": ["Hi there", "The model reads data and learns a lot of things from the data it reads.", "y", "Blue.",
               "A token is a piece of text.", " ".join(["the model selects data"] * 12)],
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sae_models")
    tok = tiny_tokenizer()
    save_tiny(root / "llama", tiny_llama(tokenizer=tok, num_layers=3, seed=1), tok)
    save_tiny(root / "bert", tiny_bert(tokenizer=tok, num_layers=3, seed=2), tok)
    TopKSAE(32, 96, k=6, seed=3).save_pretrained(root / "sae")
    TopKSAE(48, 96, k=6, seed=3).save_pretrained(root / "sae48")
    return root


def reference(root, kind, layer, threshold, max_length=64):
    """Full forward (all layers, all hidden states), one example at a time, then the SAE densely."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root / kind)
    model = (AutoModelForCausalLM if kind == "llama" else AutoModel).from_pretrained(root / kind).eval()
    sae = TopKSAE.from_pretrained(root / "sae")
    out = []
    for ins, inp, resp in zip(ROWS["instruction"], ROWS["input"], ROWS["output"]):
        prompt = f"{ins}\n\n{inp}" if inp else ins
        text = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": resp}], tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"][:max_length]
        with torch.no_grad():
            h = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[layer + 1][0]
            z = sae.pre_acts(h)
            top = torch.zeros_like(z).scatter(1, z.topk(sae.k, dim=1).indices, z.topk(sae.k, dim=1).values)
        if ids[0] in tok.all_special_ids:
            top = top[1:]
        pooled = top.max(0).values
        active = (pooled > threshold).nonzero().ravel()
        out.append((active.tolist(), pooled[active].tolist()))
    return out


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_ids_equal_a_direct_full_forward_plus_sae(models, kind):
    threshold = 0.05
    fn = SAEFeaturizer(model=str(models / kind), sae=str(models / "sae"), layer=1, threshold=threshold,
                       max_length=64, batch_size=4, max_batch_tokens=96)  # several padded micro-batches
    ds = map_features(Dataset.from_dict(ROWS), fn, batch_size=4)
    expected = reference(models, kind, layer=1, threshold=threshold)
    assert ds["sae_ids"] == [e[0] for e in expected]
    for got, (_, want) in zip(ds["sae_values"], expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert ds["sae_count"] == [len(e[0]) for e in expected]
    assert min(ds["sae_count"]) > 0
    # The model was cut after the hooked layer: nothing above it exists to run.
    parent_layers = fn._model.layers if kind == "llama" else fn._model.encoder.layer
    assert len(parent_layers) == 2


def test_bfloat16_featurizer_agrees_with_float32(models):
    kwargs = dict(model=str(models / "llama"), sae=str(models / "sae"), layer=1, threshold=0.05, max_length=64)
    full = SAEFeaturizer(**kwargs)(Dataset.from_dict(ROWS)[:])
    half = SAEFeaturizer(**kwargs, dtype="bfloat16")(Dataset.from_dict(ROWS)[:])
    assert half["sae_values"][0].dtype == np.float32 and np.asarray(half["sae_embedding"][0]).dtype == np.float32
    jaccard = [len(set(a) & set(b)) / len(set(a) | set(b)) for a, b in zip(full["sae_ids"], half["sae_ids"])]
    assert np.mean(jaccard) > 0.8  # only latents near the threshold may flip
    with pytest.raises(InputError, match="dtype must be one of"):
        SAEFeaturizer(**kwargs, dtype="fp8")


def test_last_layer_and_truncation_are_reported(models):
    fn = SAEFeaturizer(model=str(models / "llama"), sae=str(models / "sae"), layer=-1, max_length=20)
    ds = map_features(Dataset.from_dict(ROWS), fn)
    lengths = [len(ids) for ids in fn._tok([fn.texts({k: [v[i]] for k, v in ROWS.items()})[0] for i in range(6)],
                                           add_special_tokens=False)["input_ids"]]
    assert ds["sae_truncated"] == [n > 20 for n in lengths] and any(ds["sae_truncated"])
    assert fn.layer_index == 2 and len(ds["sae_embedding"][0]) == 32


def test_second_map_is_a_cache_hit_and_the_fingerprint_is_settings_only(models, tmp_path):
    Dataset.from_dict(ROWS).to_json(str(tmp_path / "pool.jsonl"))
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(tmp_path / "pool.jsonl"), split="train", cache_dir=str(tmp_path / "cache"))
    first = SAEFeaturizer(model=str(models / "llama"), sae=str(models / "sae"), layer=1)
    a = map_features(ds, first)
    second = SAEFeaturizer(model=str(models / "llama"), sae=str(models / "sae"), layer=1)
    b = map_features(ds, second)
    assert second._model is None  # served from the cache: the model never loaded
    assert a.cache_files == b.cache_files and a["sae_ids"] == b["sae_ids"]
    # Pickled state is settings (no weights), and a different threshold is a different fingerprint.
    from datasets.fingerprint import Hasher

    assert len(Hasher.hash(first)) == 16 and len(__import__("pickle").dumps(first)) < 4000
    assert Hasher.hash(first) != Hasher.hash(SAEFeaturizer(model=str(models / "llama"), sae=str(models / "sae"), layer=1, threshold=1.0))


def test_num_proc_gives_the_single_process_output(models):
    ds = Dataset.from_dict(ROWS)
    fn = SAEFeaturizer(model=str(models / "bert"), sae=str(models / "sae"), layer=0)
    one = map_features(ds, fn, batch_size=2)
    two = map_features(ds, SAEFeaturizer(model=str(models / "bert"), sae=str(models / "sae"), layer=0), batch_size=2, num_proc=2)
    assert one["sae_ids"] == two["sae_ids"]


@pytest.mark.parametrize(
    "kwargs, rows, fragment",
    [
        ({"layer": 3}, ROWS, "Unknown layer index 3"),
        ({"layer": -4}, ROWS, "Unknown layer index -4"),
        ({"sae": "sae48"}, ROWS, "SAE width mismatch: the SAE reads 48-dimensional activations"),
        ({}, {**ROWS, "instruction": ["ok", "", "a", "b", "c", "d"], "input": [""] * 6, "output": ["fine", "  ", "a", "b", "c", "d"]},
         "Row 1 of this map batch has empty text"),
    ],
    ids=["layer-too-high", "layer-too-low", "sae-width", "empty-text"],
)
def test_bad_input(models, kwargs, rows, fragment):
    sae = str(models / kwargs.pop("sae", "sae"))
    fn = SAEFeaturizer(model=str(models / "llama"), sae=sae, **{"layer": 1, **kwargs})
    with pytest.raises(InputError) as err:
        fn(Dataset.from_dict(rows)[:])
    assert fragment in str(err.value)


@pytest.mark.parametrize("k, width", [(32, 16384), (128, 16384), (4, 4096)])
def test_grouped_topk_is_torch_topk(k, width):
    from hf_ext.select.sae.featurizer import _topk

    z = torch.randn(50, width, generator=torch.Generator().manual_seed(k))
    z[:5, 100:200] += 8.0  # the top k crowded into a few groups
    values, ids = _topk(z, k)
    want_values, want_ids = z.topk(k, dim=-1)
    assert torch.equal(ids.sort(-1).values, want_ids.sort(-1).values)
    assert torch.equal(values.sort(-1).values, want_values.sort(-1).values)
    assert torch.equal(z.gather(1, ids), values)


def test_packed_decoder_batches_equal_padded_ones(models):
    """Decoders run one packed row per micro-batch (no padding, no mask); the hidden states of every
    kept token are those of transformers' padded sdpa path, so the ids are the same."""
    kwargs = dict(model=str(models / "llama"), sae=str(models / "sae"), layer=1, threshold=0.05, max_length=64,
                  batch_size=4, max_batch_tokens=96)
    packed = SAEFeaturizer(**kwargs).load()
    padded = SAEFeaturizer(**kwargs).load()
    padded._model.set_attn_implementation("sdpa")
    padded.packed = False
    assert packed.packed and not SAEFeaturizer(model=str(models / "bert"), sae=str(models / "sae"), layer=1).load().packed
    ids, _ = packed.token_ids(ROWS)
    batches = list(packed.model_inputs(ids))
    for rows, inputs, keep, _ in batches:
        assert inputs["input_ids"].shape == (1, sum(len(ids[r]) for r in rows)) and "attention_mask" not in inputs
        assert len(rows) == 1 or inputs["input_ids"].shape[1] <= 96
    assert sorted(r for rows, *_ in batches for r in rows) == list(range(len(ROWS["output"])))

    def per_row(fn):  # example index -> hidden states of its kept tokens
        return {r: h[t == j] for rows, h, t in fn.hidden_states(ids) for j, r in enumerate(rows)}

    got, want = per_row(packed), per_row(padded)
    assert sorted(got) == sorted(want) == list(range(len(ids)))
    for r in want:
        torch.testing.assert_close(got[r], want[r], rtol=1e-5, atol=1e-6)
    a, b = packed(Dataset.from_dict(ROWS)[:]), padded(Dataset.from_dict(ROWS)[:])
    assert [list(x) for x in a["sae_ids"]] == [list(x) for x in b["sae_ids"]]


def test_bfloat16_rms_norm_without_float32_copy_matches_transformers():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from hf_ext.select.sae.featurizer import _low_precision_rms_norms

    model = tiny_llama(num_layers=1, seed=4).to(torch.bfloat16)
    norm = model.model.norm
    norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(7, 32, dtype=torch.bfloat16) * 3
    want = LlamaRMSNorm.forward(norm, x)
    _low_precision_rms_norms(model)
    got = norm(x)
    assert got.dtype == torch.bfloat16 and "forward" in vars(norm)  # replaced on the instance
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


def test_packed_attention_is_each_sequence_attending_to_itself():
    from types import SimpleNamespace

    from hf_ext.select.sae.featurizer import _attention_groups, _packed_sdpa

    lengths = [40, 38, 37, 12, 11, 3, 1]  # sorted longest first, as the micro-batches are
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    groups = list(_attention_groups(bounds))
    assert [n for _, g in groups for n in g] == lengths and len(groups) > 1
    assert all(max(g) * len(g) <= 1.25 * sum(g) for _, g in groups if len(g) > 1)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, sum(lengths), 8, generator=gen) for h in (4, 2, 2))
    out, _ = _packed_sdpa(SimpleNamespace(num_key_value_groups=2), q, k, v, None, scaling=0.3,
                          cu_seq_lens_q=torch.tensor(bounds, dtype=torch.int32))
    for s, e in zip(bounds[:-1], bounds[1:]):
        alone = torch.nn.functional.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], scale=0.3,
                                                                 is_causal=True, enable_gqa=True)
        torch.testing.assert_close(out[:, s:e], alone.transpose(1, 2), rtol=1e-5, atol=1e-6)
