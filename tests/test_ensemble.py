"""X-ELM ensembles: routers, mixing, generation, clustering, adding an expert, save/load."""

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_ext.errors import InputError
from hf_ext.merge import (
    BayesianRouter,
    ClusterRouter,
    ExpertEnsemble,
    UniformRouter,
    balanced_tfidf_kmeans,
    typology_clusters,
)
from hf_ext.testing import tiny_llama

DATA = Path(__file__).parent / "data" / "merge" / "flores200_devtest_5lang_80.jsonl.gz"


@pytest.fixture(scope="module")
def flores():
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def batch(tok):
    return tok(["a tiny model reads a tiny text", "the data"], return_tensors="pt", padding=True)


def _logp(model, batch):
    return F.log_softmax(model(**batch).logits, dim=-1)


@pytest.mark.parametrize("mixing", ["probability", "logit"])
def test_identical_experts_give_the_single_expert(batch, mixing):
    expert = tiny_llama(seed=0)
    ens = ExpertEnsemble([expert, tiny_llama(seed=0), tiny_llama(seed=0)], BayesianRouter(prior=[0.2, 0.3, 0.5]), mixing=mixing)
    out = ens(**batch)
    torch.testing.assert_close(out.logits, _logp(expert, batch), rtol=0, atol=2e-6)


def test_bayesian_posterior_mixture_matches_hand_computation(batch):
    a, b = tiny_llama(seed=0), tiny_llama(seed=1)
    ens = ExpertEnsemble([a, b], BayesianRouter(prior=[0.7, 0.3]))
    out = ens(**batch, labels=batch["input_ids"])
    w = out.expert_weights
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:2]))
    ids = batch["input_ids"][0]
    la, lb = _logp(a, batch)[0], _logp(b, batch)[0]
    t = 4  # weights at position t use tokens 1..t
    ctx_a = sum(la[s - 1, ids[s]] for s in range(1, t + 1))
    ctx_b = sum(lb[s - 1, ids[s]] for s in range(1, t + 1))
    post = torch.softmax(torch.stack([np.log(0.7) + ctx_a, np.log(0.3) + ctx_b]), 0)
    torch.testing.assert_close(w[0, t], post.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w[0, 0], torch.tensor([0.7, 0.3]))  # prior only at the start
    mix = torch.log(post[0] * la[t].exp() + post[1] * lb[t].exp())
    torch.testing.assert_close(out.logits[0, t], mix.float(), rtol=1e-5, atol=1e-5)
    # padding never moves the posterior: the second row is padded after its last real token
    last = int(batch["attention_mask"][1].sum()) - 1
    torch.testing.assert_close(out.expert_weights[1, last:], out.expert_weights[1, last].expand_as(out.expert_weights[1, last:]))
    # the loss is the mixture's NLL on the unpadded labels
    nll = -out.logits[:, :-1].gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1).mean()
    torch.testing.assert_close(out.loss, nll)


def test_top_k_and_logit_mixing(batch):
    experts = [tiny_llama(seed=s) for s in range(3)]
    ens = ExpertEnsemble(experts, UniformRouter(prior=[0.5, 0.3, 0.2]), top_k=2, mixing="logit")
    out = ens(**batch)
    torch.testing.assert_close(out.expert_weights[0, 0], torch.tensor([0.625, 0.375, 0.0]))
    ref = F.log_softmax(0.625 * _logp(experts[0], batch) + 0.375 * _logp(experts[1], batch), dim=-1)
    torch.testing.assert_close(out.logits, ref, rtol=1e-5, atol=1e-5)


def test_generate_is_greedy_on_the_mixture(tok):
    ens = ExpertEnsemble([tiny_llama(seed=0), tiny_llama(seed=1)], BayesianRouter()).eval()
    prompt = tok(["a tiny"], return_tensors="pt")
    generated = ens.generate(**prompt, max_new_tokens=4, do_sample=False)
    ids = prompt["input_ids"]
    for _ in range(4):  # the same loop by hand
        nxt = ens(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    assert generated.tolist() == ids.tolist()


def test_balanced_kmeans_separates_languages(flores):
    texts, langs = [r["text"] for r in flores], [r["lang"] for r in flores]
    clusters = balanced_tfidf_kmeans(texts, 5, seed=0)
    assert sorted(np.bincount(clusters.labels).tolist()) == [80] * 5  # balanced
    purity = sum(Counter(lab for lab, c in zip(langs, clusters.labels) if c == j).most_common(1)[0][1] for j in range(5)) / len(texts)
    assert purity >= 0.95
    assert (clusters.predict(texts[:10]) == clusters.labels[:10]).all()


def test_cluster_router_temperature_and_one_hot(flores, tok):
    texts = [r["text"] for r in flores if r["lang"] in ("eng_Latn", "rus_Cyrl")]
    clusters = balanced_tfidf_kmeans(texts, 2, seed=0)
    d2 = clusters.squared_distances(texts[:3])
    w = ClusterRouter(clusters, temperature=0.1).weights_for_texts(texts[:3])
    torch.testing.assert_close(w, torch.softmax(-torch.from_numpy(d2).float() / 0.1, 1))
    torch.testing.assert_close(w.sum(1), torch.ones(3))
    for t in (0.0, 1e-4):
        hard = ClusterRouter(clusters, temperature=t).weights_for_texts(texts[:3])
        assert torch.equal(hard, F.one_hot(torch.from_numpy(d2.argmin(1)), 2).float())
    ens = ExpertEnsemble([tiny_llama(seed=0), tiny_llama(seed=1)], ClusterRouter(clusters), tokenizer=tok)
    out = ens(**tok(["hello world"], return_tensors="pt"))
    assert torch.allclose(out.expert_weights[0, 0], out.expert_weights[0, -1])  # one weight per sequence


def test_typology_clusters():
    clusters = typology_clusters(["eng_Latn", "deu_Latn", "fra_Latn", "spa_Latn", "rus_Cyrl", "fin_Latn"], 3)
    assert clusters["eng_Latn"] == clusters["deu_Latn"] and clusters["fra_Latn"] == clusters["spa_Latn"]
    assert len(set(clusters.values())) == 3
    with pytest.raises(InputError, match="not in LANGUAGE_FAMILIES"):
        typology_clusters(["xx_Latn", "eng_Latn"], 1)


def test_add_expert_branches_from_most_similar_and_trains_only_it(flores, tok, tmp_path):
    eng = [r["text"] for r in flores if r["lang"] == "eng_Latn"]
    rus = [r["text"] for r in flores if r["lang"] == "rus_Cyrl"]
    fra = [r["text"] for r in flores if r["lang"] == "fra_Latn"]
    clusters = balanced_tfidf_kmeans(eng + rus, 2, seed=0)
    eng_cluster = int(clusters.labels[0])
    experts = [tiny_llama(seed=0), tiny_llama(seed=1)]
    before = [{k: v.clone() for k, v in e.state_dict().items()} for e in experts]
    ens = ExpertEnsemble(experts, ClusterRouter(clusters), tokenizer=tok, names=["a", "b"])
    args = {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "output_dir": str(tmp_path / "t"), "logging_steps": 1}
    source = ens.add_expert("fra", fra, args, block_size=32)
    assert source == eng_cluster  # French is closer (Latin script) to the English cluster than to Russian
    assert ens.names == ["a", "b", "fra"] and len(ens.experts) == 3 and ens.router.clusters.k == 3
    for e, state in zip(ens.experts[:2], before):
        assert all(torch.equal(v, state[k]) for k, v in e.state_dict().items())
    moved = any(not torch.equal(v, before[source][k]) for k, v in ens.experts[2].state_dict().items())
    assert moved
    # routing French text now prefers the new expert
    w = ens.router.weights_for_texts(fra[:5])
    assert (w.argmax(1) == 2).all()
    # save / load round trip keeps the router and outputs
    ens.save_pretrained(tmp_path / "ens")
    back = ExpertEnsemble.from_pretrained(tmp_path / "ens")
    batch = tok(fra[:2], return_tensors="pt", padding=True)
    torch.testing.assert_close(back(**batch).logits, ens.eval()(**batch).logits)


def test_bad_ensembles():
    with pytest.raises(InputError, match="share one vocabulary"):
        ExpertEnsemble([tiny_llama(), tiny_llama(vocab_size=600)])
    with pytest.raises(InputError, match="top_k"):
        ExpertEnsemble([tiny_llama()], top_k=2)
