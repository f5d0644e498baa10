"""SAE diversity selection (arXiv 2502.14050): coverage of every method, featurizer vs a naive
path, lazy vs naive greedy, length-feature correlation, SmolLM2 throughput, achieved FLOP/s.

    python benchmarks/selection.py [--quick] [--device cuda] --out FILE.json
    python benchmarks/selection.py --plan [--device cuda]   # cost of the paper-scale run, nothing run

Every speed is compared with its baseline in the same run (the machine is shared):

- coverage: features covered at the budget by sae_greedy / sae_simscale / longest / random /
  kcenter on a real Alpaca pool (all-MiniLM-L6-v2, last layer, a TopK SAE trained on the pool,
  quantile threshold as in recipes/quickstart.yaml);
- featurize_tokens_per_s vs featurize_naive_tokens_per_s: SmolLM2-135M-Instruct, SAE at layer 15,
  the same Dolly rows; naive = full forward (all 30 layers + LM head) with all hidden states
  returned, the dense SAE output, unsorted batches of 8;
- select_seconds vs select_naive_seconds: lazy vs naive greedy on synthetic ids (131,072 latents,
  ~500 ids per example, heavy-tailed; full: 5,000 of 50,000), picks checked identical;
- smollm2_examples_per_s / smollm2_tokens_per_s: the featurizer over the first 200 bundled Dolly
  rows (``--quick``: 32) (chat template, SAE at layer 15) in bfloat16, as
  recipes/sae_select_smollm2.yaml runs it (after an 8-row warm-up); featurize_gflops counts the
  model's matmul FLOPs (linears + causal QKᵀ/AV) and the SAE encoder GEMM for the tokens actually
  processed (``featurize_flops`` splits them); matmul_gflops is a 4096² torch matmul at the default
  thread count, layer_gemm_gflops one layer's seven linears at a 4096-token pack (the best rate
  this model's GEMMs reach). The *_fp32 keys give the float32 featurizer, *_bf16 the bfloat16
  matmul, bf16_vs_fp32_ids_jaccard how much the two precisions' feature sets agree, and
  fp32_ids_identical_to_padded_path the float32 ids against right-padded batches with
  transformers' own sdpa (the path before packing).
- featurize_vs_bare_forward(_fp32): the same truncated model's forward alone on the featurizer's
  own pre-built inputs (no tokenizing, no SAE, no pooling) over the featurizer's time.

Timing: the featurizers, the bare forwards and the matmuls run in interleaved rounds (order
rotated per round; 3 with ``--quick``, else 5) and every number is the median of its rounds, so
a change of load hits them alike; ``timing`` keeps every round's seconds and ``load_average_*``
the machine's load around them.

Where the time goes (``--profile``, forward hooks, exclusive wall time of one call; 2026-12-02,
32 rows, 4,799 tokens, 2 shared cores under load ~18, so read the shares, not the seconds).
Before (padded micro-batches, dense masks, 200 rows, load ~17): bfloat16: attention core (RoPE +
SDPA + reshapes) 33%, RMSNorm 23%, linears 18%, SAE encode 13%, Python/padding 6%; float32:
linears 40%, attention core 28%, SAE encode 14%, RMSNorm 10%. After packing (packed rows, one causal SDPA call per sequence, two-stage top-k, bfloat16 RMSNorm
without a float32 copy): bfloat16: attention core 62%, SAE encode 12%, linears 10%, RMSNorm 9%,
other 4%, gate product 1.4%, SiLU 1.4%; float32: attention core 41%, linears 29%, SAE encode 13%,
RMSNorm 8.5%, other 3.5%. Attention is 3.2% of the FLOPs but was most of the time: one SDPA call
per sequence and layer, each a short OpenMP region. Attention alone on one 16-sequence pack
(1,945 tokens, 16 layers, same load): per-sequence calls 10.6 s fp32 / 18.8 s bf16 with 2 threads
but 1.5 s / 0.6 s with 1 thread, one right-padded causal call 2.8 s / 1.9 s: on 2 cores shared
by ~20 processes each region waits for its descheduled partner thread. So the packed attention
now stacks sequences of similar length (padding ≤ 1.25×) into one ``is_causal`` call per group.
With that (``--quick --profile``, load ~6, 2026-12-02 01:30 UTC): bfloat16: attention core 51%,
linears 14%, RMSNorm 14%, SAE encode 10%, other 5%, gate product 3%, SiLU 2%; float32: linears
45%, attention core 26%, SAE encode 13%, RMSNorm 5.5%, gate product 5%, other 3%, SiLU 3%.
Ceilings: the SAE encoder is 13.7% of the counted FLOPs, so featurize_vs_bare_forward ≤ 0.86
unless its GEMM runs faster than the model's; the model's own seven GEMMs reach 0.88 (fp32) and
0.74 (bf16) of the 4096² matmul (layer_gemm_gflops), and in bfloat16 the elementwise work and
attention, which count no FLOPs, take most of the time.

Quiet machine, full run (``python benchmarks/selection.py --featurize-only``, 200 rows, 5 rounds,
load 0.7-2.0, 2026-12-02 13:00 UTC, 19.5 min): featurize_fraction_of_matmul_fp32 0.676 (104.0 of
153.9 GFLOP/s; target 0.7), featurize_fraction_of_matmul_bf16 0.608 (220.3 of 362.4; target 0.5),
featurize_vs_bare_forward 0.872 bf16 / 0.78 fp32 (target 0.9), fp32 ids identical to the padded
path, bf16-vs-fp32 ids Jaccard 0.970. The rounds of one variant spread ±10% (fp32 featurize
42.9-53.0 s), as wide as the gap to the fp32 target; the bf16 gap to 0.9 is the SAE encoder's
14% of the FLOPs, which the bare forward does not do.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_args, peak_rss_bytes, plan_flop_rate, write_results  # noqa: E402

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def coverage_part(args, results):
    from hf_ext.data import load_pool
    from hf_ext.select import get_selector
    from hf_ext.select.featurize import featurize
    from hf_ext.select.pipeline import SelectionConfig
    from hf_ext.select.sae import coverage, feature_matrix, length_feature_corr
    from hf_ext.select.sae.job import apply_threshold_quantile

    n, budget = (2000, 200) if args.quick else (6000, 500)
    pool, _ = load_pool(str(args.data_dir / "instruction" / "alpaca_subsets_union.jsonl.gz"), license="cc-by-nc-4.0")
    pool = pool.select(range(n))
    c = SelectionConfig(dataset="alpaca_subsets_union", budget=budget, method="sae_greedy", output_dir="unused", category_column=None,
                        featurizer={"max_length": 256}, sae_training={"max_examples": 500}, threshold_quantile=0.97, seed=args.seed)
    start = time.perf_counter()
    ds = featurize(pool, c, ["response_tokens", "sae_ids"])
    results["coverage_featurize_seconds"] = round(time.perf_counter() - start, 2)
    results["length_feature_corr_unthresholded"] = round(length_feature_corr(ds["response_tokens"], ds["sae_count"]), 4)
    ds, threshold = apply_threshold_quantile(ds, c.threshold_quantile)
    m = feature_matrix(ds["sae_ids"])
    cov = {}
    for name in ("sae_greedy", "sae_simscale", "longest", "random", "kcenter"):
        picks = get_selector(name).select(ds, budget, seed=args.seed)
        cov[name] = coverage(m, picks)
    results["coverage"] = cov
    results["coverage_pool"] = {"examples": n, "budget": budget, "pool_features": coverage(m, range(n)), "threshold": threshold}
    results["length_feature_corr"] = round(length_feature_corr(ds["response_tokens"], ds["sae_count"]), 4)
    results["greedy_over_random"] = round(cov["sae_greedy"] / max(cov["random"], 1), 3)


def synthetic_ids(n, latents, mean_ids, seed):
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, latents + 1) ** 0.8
    p /= p.sum()
    sizes = rng.integers(mean_ids // 2, 3 * mean_ids // 2 + 1, size=n)
    flat = rng.choice(latents, size=int(sizes.sum()), p=p).astype(np.int32)
    import scipy.sparse as sp

    indptr = np.concatenate([[0], np.cumsum(sizes)])
    m = sp.csr_matrix((np.ones(flat.size, np.uint8), flat, indptr), shape=(n, latents))
    m.sum_duplicates()
    m.data[:] = 1
    return m


def select_part(args, results):
    from hf_ext.select.sae import greedy_max_coverage, greedy_max_coverage_naive

    n, budget = (10_000, 1_000) if args.quick else (50_000, 5_000)
    m = synthetic_ids(n, 131_072, 500, args.seed)
    start = time.perf_counter()
    lazy = greedy_max_coverage(m, budget)
    results["select_seconds"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    naive = greedy_max_coverage_naive(m, budget)
    results["select_naive_seconds"] = round(time.perf_counter() - start, 3)
    results["select_identical_picks"] = lazy == naive
    results["select_speedup"] = round(results["select_naive_seconds"] / results["select_seconds"], 1)
    results["select_setting"] = {"examples": n, "budget": budget, "latents": 131_072, "mean_ids": round(m.nnz / n, 1)}


def linear_flops_per_token(model_config, layers: int) -> float:
    d, i = model_config.hidden_size, model_config.intermediate_size
    heads, kv = model_config.num_attention_heads, model_config.num_key_value_heads
    head = d // heads
    per_layer = d * d + 2 * d * kv * head + d * d + 3 * d * i  # q, k+v, o, gate/up/down
    return 2.0 * per_layer * layers


def bare_forward(f, batches) -> None:
    """Only the truncated model's forward on pre-built device inputs: the featurizer's practical ceiling."""
    import torch

    with torch.inference_mode():
        for inputs in batches:
            f._forward(**inputs)


def interleaved_seconds(variants: dict, rounds: int, device: str = "cpu") -> dict[str, list[float]]:
    """Seconds of each variant in each of ``rounds`` rounds; in a round every variant runs once, in an
    order rotated from round to round, so a change of the machine's load hits all of them alike."""
    import torch

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    names, times = list(variants), {name: [] for name in variants}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            variants[name]()
            sync()
            times[name].append(time.perf_counter() - start)
            print(f"[round {r + 1}/{rounds}] {name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
    return times


def padded_path(f):
    """The same featurizer on right-padded batches with transformers' own sdpa (the path before packing)."""
    f._model.set_attn_implementation("sdpa")
    f.packed = False
    return f


def profile_featurizer(f, batch) -> dict[str, float]:
    """Fractions of one featurizer call's wall time by part, from forward hooks (exclusive times).

    Buckets: ``linear`` (every nn.Linear of the model), ``attention_core`` (the attention module
    less its projections: RoPE, SDPA, reshapes), ``norm`` (RMSNorm/LayerNorm), ``activation``
    (the MLP's SiLU/GELU), ``mlp_elementwise`` (the MLP less its linears and activation: the
    gate product), ``embedding``, ``sae_encode`` (encoder GEMM + top-k + pooling), ``tokenize``
    (chat template + tokenizer), ``other`` (the rest: padding, masks, Python between micro-batches,
    the embedding mean, residual adds)."""
    import torch

    totals: dict[str, float] = {}
    stack: list[list] = []  # [bucket, start, child time]

    def bucket_of(module) -> str | None:
        name = type(module).__name__
        if isinstance(module, torch.nn.Linear):
            return "linear"
        if "Attention" in name:
            return "attention_core"
        if "Norm" in name:
            return "norm"
        if "MLP" in name:
            return "mlp_elementwise"
        if isinstance(module, torch.nn.Embedding):
            return "embedding"
        if name in ("SiLU", "SiLUActivation", "GELUActivation", "GELU", "PytorchGELUTanh", "NewGELUActivation"):
            return "activation"
        return None

    def pre(module, args):
        stack.append([bucket_of(module), time.perf_counter(), 0.0])

    def post(module, args, output):
        b, start, child = stack.pop()
        elapsed = time.perf_counter() - start
        totals[b] = totals.get(b, 0.0) + elapsed - child
        if stack:
            stack[-1][2] += elapsed

    handles = []
    for module in f._model.modules():
        if bucket_of(module) is not None:
            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post, always_call=True)]
    timers = {"sae_encode": f.encode, "tokenize": f.token_ids}
    originals = {}
    for key, fn in timers.items():
        def wrapped(*a, _fn=fn, _key=key, **kw):
            start = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                totals[_key] = totals.get(_key, 0.0) + time.perf_counter() - start
        originals[fn.__name__] = fn
        setattr(f, fn.__name__, wrapped)
    try:
        start = time.perf_counter()
        f(batch)
        wall = time.perf_counter() - start
    finally:
        for h in handles:
            h.remove()
        for name in originals:
            delattr(f, name)  # back to the class's methods
    stack.clear()
    totals["other"] = wall - sum(totals.values())
    return {k: round(v / wall, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])} | {"wall_seconds": round(wall, 3)}


def featurize_part(args, results):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from hf_ext.data import load_pool
    from hf_ext.models import load_tokenizer, resolve_model
    from hf_ext.select.sae import SAEFeaturizer, TopKSAE

    layer, width = 15, 16384
    rows, _ = load_pool("dolly_alpagasus_3k")
    first = rows.select(range(200))[:]
    tmp = Path(tempfile.mkdtemp())
    cfg = AutoConfig.from_pretrained(resolve_model(SMOL))
    TopKSAE(cfg.hidden_size, width, k=32, seed=0).save_pretrained(tmp / "sae", card=False)

    n_rows, rounds = (32, 3) if args.quick else (200, 5)
    first = {k: v[:n_rows] for k, v in first.items()}

    def loaded(dtype: str):
        f = SAEFeaturizer(model=SMOL, sae=str(tmp / "sae"), layer=layer, max_length=2048, max_batch_tokens=4096,
                          batch_size=64, dtype=dtype, device=args.device).load()
        f({k: v[:8] for k, v in first.items()})  # warm-up: allocator and oneDNN kernels, as any long map has
        return f

    # The recipe's precision (bfloat16: AMX / AVX512-BF16 CPUs and GPUs) is the headline; float32 beside it.
    fn32, fn = loaded("float32"), loaded("bfloat16")
    ids, _ = fn.token_ids(first)
    inputs = {dtype: [x for _, x, _, _ in f.model_inputs(ids)] for dtype, f in (("fp32", fn32), ("bf16", fn))}
    size, mm = 4096, {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size, device=args.device, dtype=dtype)
        mm[dtype] = (a, torch.randn(size, size, device=args.device, dtype=dtype))
        a @ a  # warm-up
    # The model's own GEMMs (one layer's q, k, v, o, gate, up, down at a 4096-token pack): the best
    # rate its linears can reach on this machine, beside the square matmul the targets use.
    d, inter, kv = cfg.hidden_size, cfg.intermediate_size, cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    shapes = [(d, d), (kv, d), (kv, d), (d, d), (inter, d), (inter, d), (d, inter)]
    linears = {dtype: (torch.randn(4096, max(d, inter), device=args.device, dtype=dtype),
                       [torch.randn(o, i, device=args.device, dtype=dtype) for o, i in shapes]) for dtype in mm}

    def layer_gemms(dtype):
        x, weights = linears[dtype]
        for w in weights:
            torch.nn.functional.linear(x[:, : w.shape[1]], w)

    outputs = {}
    variants = {
        "layer_gemms_fp32": lambda: layer_gemms(torch.float32),
        "layer_gemms_bf16": lambda: layer_gemms(torch.bfloat16),
        "featurize_fp32": lambda: outputs.__setitem__("fp32", fn32(first)),
        "bare_forward_fp32": lambda: bare_forward(fn32, inputs["fp32"]),
        "matmul_fp32": lambda: mm[torch.float32][0] @ mm[torch.float32][1],
        "featurize_bf16": lambda: outputs.__setitem__("bf16", fn(first)),
        "bare_forward_bf16": lambda: bare_forward(fn, inputs["bf16"]),
        "matmul_bf16": lambda: mm[torch.bfloat16][0] @ mm[torch.bfloat16][1],
    }
    results["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    times = interleaved_seconds(variants, rounds, args.device)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    med = {k: statistics.median(v) for k, v in times.items()}
    results["timing"] = {"rounds": rounds, "rows": n_rows, "statistic": "median of interleaved rounds",
                         "torch_threads": torch.get_num_threads(), "matmul_shape": [size, size, size],
                         "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()}}
    out32, out, secs32, ours = outputs["fp32"], outputs["bf16"], med["featurize_fp32"], med["featurize_bf16"]
    tokens = [len(x) for x in ids]
    kept = sum(t - (1 if x and x[0] in fn.special_ids else 0) for t, x in zip(tokens, ids))
    model_flops = linear_flops_per_token(cfg, layer + 1) * sum(tokens)
    model_flops += sum(4.0 * cfg.hidden_size * t * (t + 1) / 2 * (layer + 1) for t in tokens)  # causal QKᵀ and AV
    flops = model_flops + 2.0 * cfg.hidden_size * width * kept  # + the SAE encoder
    results["smollm2_tokens"] = int(sum(tokens))
    results["smollm2_dtype"] = "bfloat16"
    results["featurize_flops"] = {"model_matmuls": model_flops, "sae_encoder": flops - model_flops,
                                  "attention_share": round(sum(4.0 * cfg.hidden_size * t * (t + 1) / 2 * (layer + 1) for t in tokens) / flops, 4)}
    results["smollm2_examples_per_s"] = round(n_rows / ours, 3)
    results["smollm2_examples_per_s_fp32"] = round(n_rows / secs32, 3)
    results["smollm2_tokens_per_s"] = round(sum(tokens) / ours, 1)
    results["smollm2_tokens_per_s_fp32"] = round(sum(tokens) / secs32, 1)
    results["featurize_gflops"] = round(flops / ours / 1e9, 2)
    results["featurize_gflops_fp32"] = round(flops / secs32 / 1e9, 2)
    results["matmul_gflops"] = round(2.0 * size**3 / med["matmul_fp32"] / 1e9, 2)
    results["matmul_gflops_bf16"] = round(2.0 * size**3 / med["matmul_bf16"] / 1e9, 2)
    layer_flops = 2.0 * 4096 * sum(o * i for o, i in shapes)
    results["layer_gemm_gflops"] = round(layer_flops / med["layer_gemms_fp32"] / 1e9, 2)
    results["layer_gemm_gflops_bf16"] = round(layer_flops / med["layer_gemms_bf16"] / 1e9, 2)
    results["featurize_fraction_of_layer_gemms_fp32"] = round(results["featurize_gflops_fp32"] / results["layer_gemm_gflops"], 3)
    results["featurize_fraction_of_layer_gemms_bf16"] = round(results["featurize_gflops"] / results["layer_gemm_gflops_bf16"], 3)
    results["featurize_fraction_of_matmul"] = round(results["featurize_gflops"] / results["matmul_gflops"], 3)
    results["featurize_fraction_of_matmul_fp32"] = round(results["featurize_gflops_fp32"] / results["matmul_gflops"], 3)
    results["featurize_fraction_of_matmul_bf16"] = round(results["featurize_gflops"] / results["matmul_gflops_bf16"], 3)
    for suffix, key in (("", "bf16"), ("_fp32", "fp32")):  # same tokens, so the time ratio is the tokens/s ratio
        results[f"bare_forward_seconds{suffix}"] = round(med[f"bare_forward_{key}"], 3)
        results[f"featurize_seconds{suffix}"] = round(med[f"featurize_{key}"], 3)
        results[f"featurize_vs_bare_forward{suffix}"] = round(med[f"bare_forward_{key}"] / med[f"featurize_{key}"], 3)
    jac = [len(set(a) & set(b)) / max(1, len(set(a) | set(b))) for a, b in zip(out["sae_ids"], out32["sae_ids"])]
    results["bf16_vs_fp32_ids_jaccard"] = round(float(np.mean(jac)), 4)
    # Identity: float32 ids of the packed path against the padded batches with transformers' sdpa (before packing).
    start = time.perf_counter()
    padded32 = padded_path(loaded("float32"))(first)
    results["padded_path_seconds_fp32_single_run"] = round(time.perf_counter() - start, 3)
    results["fp32_ids_identical_to_padded_path"] = all(
        list(a) == list(b) for a, b in zip(out32["sae_ids"], padded32["sae_ids"]))
    results["fp32_max_value_diff_vs_padded_path"] = float(max(
        (np.abs(np.asarray(a) - np.asarray(b)).max() if len(a) else 0.0) for a, b in zip(out32["sae_values"], padded32["sae_values"])))
    if args.profile:
        results["featurize_profile"] = {"bfloat16": profile_featurizer(fn, first), "float32": profile_featurizer(fn32, first)}
    fn = fn32  # the naive comparison below is float32 against float32

    # Naive path on the same model and rows: full forward, all hidden states, dense SAE output, unsorted batches.
    n_cmp = 16 if args.quick else 200
    subset = {k: v[:n_cmp] for k, v in first.items()}
    tok = load_tokenizer(SMOL)
    tok.padding_side = "right"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(resolve_model(SMOL), dtype=torch.float32).eval().to(args.device)
    sae = fn._sae
    texts = fn.texts(subset)
    naive_ids = []
    start = time.perf_counter()
    with torch.no_grad():
        for s in range(0, n_cmp, 8):
            enc = tok(texts[s:s + 8], add_special_tokens=False, padding=True, truncation=True, max_length=2048, return_tensors="pt").to(args.device)
            h = model(**enc, output_hidden_states=True).hidden_states[layer + 1]
            z = sae.pre_acts(h)
            top = z.topk(sae.k, dim=-1)
            dense = torch.zeros_like(z).scatter(-1, top.indices, top.values)
            dense = dense * enc["attention_mask"][..., None]
            dense[:, 0] = 0  # BOS
            pooled = dense.max(1).values
            naive_ids.extend((row > fn.threshold).nonzero().ravel().tolist() for row in pooled)
    naive = time.perf_counter() - start
    cmp_tokens = sum(tokens[:n_cmp])
    start = time.perf_counter()
    fn(subset)
    ours_cmp = time.perf_counter() - start
    results["featurize_tokens_per_s"] = round(cmp_tokens / ours_cmp, 1)
    results["featurize_naive_tokens_per_s"] = round(cmp_tokens / naive, 1)
    results["featurize_speedup"] = round(naive / ours_cmp, 2)
    same = sum(a == list(map(int, b)) for a, b in zip(naive_ids, out32["sae_ids"][:n_cmp]))
    results["featurize_naive_agreement"] = round(same / n_cmp, 3)  # float noise may flip a borderline latent


def paper_plan(args) -> list:
    """The paper's featurization: Llama-3.1-8B cut after layer 23, a 131,072-latent TopK SAE."""
    from hf_ext.planning import LLAMA_3_1_8B, ModelCost, Plan, meta_model

    layer, latents, examples, tokens, batch_tokens = 23, 131_072, 52_002, 256, 8192  # Alpaca-52k, chat-templated
    cut = ModelCost.of(meta_model(LLAMA_3_1_8B, num_layers=layer + 1))  # the featurizer stops after the SAE's layer
    d = cut.hidden_size
    per_token = cut.flops_per_token(tokens) + 2 * d * latents  # truncated forward + SAE encoder GEMM
    return [Plan("SAE featurization: Llama-3.1-8B to layer 23 + 131,072-latent SAE, Alpaca 52k, bfloat16",
                 flops=per_token * tokens * examples, flop_rate=plan_flop_rate(args.device),
                 memory_bytes={"weights_bf16_truncated": 2 * (cut.params - cut.head_params), "sae_encoder_decoder_bf16": 2 * 2 * d * latents,
                               "sae_pre_activations_bf16": 2 * batch_tokens * latents,
                               "hidden_states_bf16": 2 * batch_tokens * d * 4},
                 assumptions={"layer": layer, "latents": latents, "examples": examples, "tokens_per_example": tokens,
                              "max_batch_tokens": batch_tokens, "truncated_params": cut.params - cut.head_params})]


def main():
    args = benchmark_args(__doc__.split("\n")[0], device=True, plan=paper_plan, extra=lambda p: (
        p.add_argument("--profile", action="store_true", help="Also time the featurizer's parts (featurize_profile)."),
        p.add_argument("--featurize-only", action="store_true", help="Only the featurizer section (SmolLM2).")))
    import torch

    results = {"quick": args.quick, "torch_threads": torch.get_num_threads()}
    for part in (featurize_part,) if args.featurize_only else (select_part, featurize_part, coverage_part):
        part(args, results)
        print(f"[{part.__name__}] " + json.dumps({k: v for k, v in results.items() if k not in ("quick", "torch_threads")}), flush=True)
    r = results
    checks = {
        "greedy_ge_1.3x_random": lambda: r["coverage"]["sae_greedy"] >= 1.3 * r["coverage"]["random"],
        "greedy_gt_longest": lambda: r["coverage"]["sae_greedy"] > r["coverage"]["longest"],
        "lazy_ge_20x_naive_identical": lambda: r["select_speedup"] >= 20 and r["select_identical_picks"],
        "featurizer_ge_3x_naive": lambda: r["featurize_speedup"] >= 3,
        "smollm2_ge_3.9_examples_per_s": lambda: r["smollm2_examples_per_s"] >= 3.9,
        "featurize_fp32_ge_0.7_matmul_fp32": lambda: r["featurize_fraction_of_matmul_fp32"] >= 0.7,
        "featurize_bf16_ge_0.5_matmul_bf16": lambda: r["featurize_fraction_of_matmul_bf16"] >= 0.5,
        "featurize_ge_0.9_bare_forward": lambda: r["featurize_vs_bare_forward"] >= 0.9,
    }
    results["targets"] = {}
    for name, check in checks.items():
        try:
            results["targets"][name] = bool(check())
        except KeyError:  # a section that did not run (--featurize-only)
            pass
    results["peak_rss_gb"] = round(peak_rss_bytes() / 1e9, 2)
    print(f"{'metric':36s} value")
    for key in ("coverage", "featurize_tokens_per_s", "featurize_naive_tokens_per_s", "select_seconds", "select_naive_seconds",
                "length_feature_corr", "smollm2_examples_per_s", "featurize_gflops", "matmul_gflops",
                "featurize_fraction_of_matmul_fp32", "featurize_fraction_of_matmul_bf16", "featurize_vs_bare_forward"):
        if key in results:
            print(f"{key:36s} {results[key]}")
    write_results(args.out, results)


if __name__ == "__main__":
    main()
