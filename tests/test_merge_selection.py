"""The threshold selection of TIES' trim and Breadcrumbs' outlier drop equals the full sort it replaces
(mergekit's argsort, PEFT's topk), on tensors with and without values tied at the threshold."""

import pytest
import torch

from hf_ext.merge.methods import (
    argsort_inplace,
    kth_smallest,
    magnitude_prune,
    outlier_prune,
    peft_magnitude_prune,
    top_magnitude_mask,
)


def _argsort_prune(t, density):  # mergekit 0.1.5's sparsify.magnitude
    k = max(1, int(density * t.numel()))
    mask = torch.zeros(t.numel(), dtype=t.dtype)
    mask[torch.argsort(t.abs().reshape(-1).float(), descending=True)[:k]] = 1
    return t * mask.reshape_as(t)


def _sort_outlier_prune(t, density, gamma):  # the reference of outlier_prune: one ascending sort
    n = t.numel()
    keep, top = int(density * n), int(gamma * n)
    mask = torch.zeros(n, dtype=t.dtype)
    bottom = max(0, n - keep - top)
    mask[torch.sort(t.abs().reshape(-1).float()).indices[bottom:bottom + keep]] = 1
    return t * mask.reshape_as(t)


def _cases():
    g = torch.Generator().manual_seed(0)
    distinct = torch.randn(64, 97, generator=g)
    tied = torch.randint(-6, 7, (64, 97), generator=g).float()  # 13 values: ties at every threshold
    sparse = distinct * (torch.rand(64, 97, generator=g) < 0.3)  # threshold 0 at high densities, with -0.0
    return {"distinct": distinct, "tied": tied, "sparse_with_zeros": -sparse}


@pytest.mark.parametrize("name", ["distinct", "tied", "sparse_with_zeros"])
@pytest.mark.parametrize("density", [0.0, 0.001, 0.2, 0.5, 0.9, 0.99])
def test_magnitude_prune_equals_argsort_and_topk(name, density):
    from peft.utils.merge_utils import magnitude_based_pruning

    t = _cases()[name]
    assert torch.equal(magnitude_prune(t, density), _argsort_prune(t, density)) or density == 0  # 0: mergekit zeroes
    ours, peft = peft_magnitude_prune(t, density), magnitude_based_pruning(t, density)
    assert torch.equal(ours, peft)
    assert torch.equal(ours.signbit(), peft.signbit())  # the same ±0, bit for bit
    assert torch.equal(magnitude_prune(t, density).signbit(), _argsort_prune(t, density).signbit()) or density == 0


@pytest.mark.parametrize("name", ["distinct", "tied", "sparse_with_zeros"])
@pytest.mark.parametrize(("density", "gamma"), [(0.9, 0.01), (0.5, 0.1), (0.2, 0.0), (0.001, 0.5)])
def test_outlier_prune_equals_sort(name, density, gamma):
    t = _cases()[name]
    assert torch.equal(outlier_prune(t, density, gamma), _sort_outlier_prune(t, density, gamma))


def test_mask_is_exact_or_defers_to_the_sort():
    distinct = _cases()["distinct"].reshape(-1).abs()
    k = 1000
    mask = top_magnitude_mask(distinct, k)
    reference = torch.zeros_like(mask)
    reference[torch.argsort(distinct, descending=True)[:k]] = True
    assert mask is not None and torch.equal(mask, reference)
    tied = torch.tensor([3.0, 1.0, 2.0, 2.0, 0.5])
    assert top_magnitude_mask(tied, 2) is None  # 2 of the two 2.0s: the sort's tie-breaking decides
    assert torch.equal(top_magnitude_mask(tied, 3), torch.tensor([True, False, True, True, False]))


@pytest.mark.parametrize("chunk", [7, 1 << 20])
@pytest.mark.parametrize("sign_method", ["total", "frequency"])
def test_ties_equals_peft_and_slices_change_nothing(monkeypatch, chunk, sign_method):
    """PEFT's ties (topk trim, whole-tensor sign election) equals ours for any slice size of the sign election;
    so does the mergekit convention computed in one slice vs many."""
    from peft.utils.merge_utils import ties

    from hf_ext.merge import methods
    from hf_ext.merge.methods import TiesMerge

    g = torch.Generator().manual_seed(1)
    base = torch.randn(33, 29, generator=g)
    inputs = [base + torch.randint(-3, 4, (33, 29), generator=g).float() / 4 for _ in range(3)]  # ties everywhere
    w = torch.tensor([0.5, 0.3, 0.2])
    reference = base + ties([t - base for t in inputs], w, 0.4, sign_method)
    whole = TiesMerge(density=0.4, majority_sign_method=sign_method, convention="mergekit").merge(list(inputs), w, base, key="w")
    monkeypatch.setattr(methods, "_SIGN_CHUNK", chunk)
    assert torch.equal(TiesMerge(density=0.4, majority_sign_method=sign_method).merge(list(inputs), w, base, key="w"), reference)
    sliced = TiesMerge(density=0.4, majority_sign_method=sign_method, convention="mergekit").merge(list(inputs), w, base, key="w")
    assert torch.equal(sliced, whole)


@pytest.mark.parametrize("name", ["distinct", "tied", "sparse_with_zeros"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kth_smallest_equals_kthvalue(name, dtype):
    flat = _cases()[name].abs().reshape(-1).to(dtype)
    ks = [1, 2, 1000, flat.numel() // 2, flat.numel()]
    got = kth_smallest(flat, ks)
    assert [float(v) for v in got] == [float(torch.kthvalue(flat.float(), k).values) for k in ks]
    assert all(v.dtype == dtype for v in got) and torch.equal(flat, _cases()[name].abs().reshape(-1).to(dtype))  # input untouched


@pytest.mark.parametrize("name", ["distinct", "tied", "sparse_with_zeros"])
@pytest.mark.parametrize("descending", [True, False])
def test_argsort_inplace_equals_argsort(name, descending):
    """The same order as argsort, ties included (the tied case has 13 distinct values in 6,208 entries)."""
    flat = _cases()[name].abs().reshape(-1)
    reference = torch.argsort(flat, descending=descending)
    work = flat.clone()
    order = argsort_inplace(work, descending=descending)
    assert torch.equal(order, reference)
    assert torch.equal(work, flat[reference])  # the values were sorted in place


@pytest.mark.parametrize("name", ["distinct", "tied", "sparse_with_zeros"])
@pytest.mark.parametrize("density", [0.001, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("rescale", [False, True])
def test_consuming_prune_is_bit_identical(name, density, rescale):
    """magnitude_prune(consume=True) (the tie path sorts the tensor's own memory) == the reference, signs of zeros too."""
    t = _cases()[name]
    reference = magnitude_prune(t, density, rescale)
    ours = magnitude_prune(t.clone(), density, rescale, consume=True)
    assert torch.equal(ours, reference) and torch.equal(ours.signbit(), reference.signbit())
    if not rescale:
        assert torch.equal(ours, _argsort_prune(t, density))
