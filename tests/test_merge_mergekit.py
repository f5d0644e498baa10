"""mergekit configs run by hf_ext, checked against mergekit itself (a test-only reference, LGPL-3.0).

The parity matrix runs every method mergekit and hf_ext share, plus layer-gradient, filter, per-model
density and slice configs, through ``mergekit.merge.run_merge`` (what ``mergekit-yaml`` calls) and through
``hf_ext.merge.from_mergekit_config(...).run``, and asserts max |Δ| ≤ 1e-6 over every tensor.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hf_ext.errors import InputError
from hf_ext.merge import MERGEKIT_METHODS, TiesMerge, from_mergekit_config, merge_models
from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

DATA = Path(__file__).parent / "data" / "mergekit"
LAYERS = 4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder holding models/{base,a,b,c} (4-layer tiny Llamas) and models/wide (another width)."""
    root = tmp_path_factory.mktemp("mergekit")
    tok = tiny_tokenizer()
    for name, seed in (("base", 0), ("a", 1), ("b", 2), ("c", 3)):
        save_tiny(root / "models" / name, tiny_llama(seed=seed, tokenizer=tok, num_layers=LAYERS), tok)
    save_tiny(root / "models" / "wide", tiny_llama(seed=4, tokenizer=tok, num_layers=LAYERS, hidden_size=64), tok)
    return root


@pytest.fixture
def here(workdir, monkeypatch):
    monkeypatch.chdir(workdir)  # configs name models/… relative to the working directory, as mergekit reads them
    return workdir


def _tensors(folder):
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _mergekit(config: dict, out: Path, seed: int = 0) -> Path:
    pytest.importorskip("mergekit", reason="mergekit (the parity reference) is not installed: pip install 'hf-ext[mergekit]'")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(config), str(out),
              MergeOptions(random_seed=seed, copy_tokenizer=False, write_model_card=False, quiet=True))  # fmt: skip
    return out


def _hf_ext(config, out: Path, seed: int = 0) -> Path:
    merge = from_mergekit_config(config, seed=seed)
    return merge.run(out, hub_ids={m: f"org/{Path(m).name}" for m in merge.referenced_models()})


def _models(*params, base=None):
    return [{"model": f"models/{name}", **({"parameters": p} if p else {})} for name, p in params]


GTA = _models(("a", {"weight": 0.3, "density": 0.5}), ("b", {"weight": 0.7, "density": 0.7}))
MATRIX = {
    "linear": {"merge_method": "linear", "models": _models(("a", {"weight": 0.3}), ("b", {"weight": 0.9}), ("c", {"weight": 0.2}))},
    "linear_unnormalised": {"merge_method": "linear", "models": _models(("a", {"weight": 0.3}), ("b", {"weight": 0.5})),
                            "parameters": {"normalize": False}},
    "task_arithmetic": {"merge_method": "task_arithmetic", "base_model": "models/base", "models": GTA, "parameters": {"lambda": 0.8}},
    "ties": {"merge_method": "ties", "base_model": "models/base", "models": GTA},
    "dare_ties": {"merge_method": "dare_ties", "base_model": "models/base", "models": GTA},
    "dare_linear": {"merge_method": "dare_linear", "base_model": "models/base", "models": GTA},
    "della": {"merge_method": "della", "base_model": "models/base", "parameters": {"epsilon": 0.1},
              "models": _models(("a", {"weight": 0.3, "density": 0.5}), ("b", {"weight": 0.7, "density": 0.6, "epsilon": 0.2}))},
    "della_linear": {"merge_method": "della_linear", "base_model": "models/base", "models": GTA, "parameters": {"epsilon": 0.2}},
    "breadcrumbs": {"merge_method": "breadcrumbs", "base_model": "models/base",
                    "models": _models(("a", {"weight": 0.3, "density": 0.8, "gamma": 0.05}), ("b", {"weight": 0.7, "density": 0.9}))},
    "breadcrumbs_ties": {"merge_method": "breadcrumbs_ties", "base_model": "models/base",
                         "models": _models(("a", {"weight": 0.3, "density": 0.8, "gamma": 0.05}), ("b", {"weight": 0.7, "density": 0.9}))},
    "slerp": {"merge_method": "slerp", "base_model": "models/a", "models": _models(("a", None), ("b", None)), "parameters": {"t": 0.3}},
    "nuslerp": {"merge_method": "nuslerp", "models": _models(("a", {"weight": 0.3}), ("b", {"weight": 0.7}))},
    "nuslerp_base_rows": {"merge_method": "nuslerp", "base_model": "models/base", "models": _models(("a", {"weight": 0.6}), ("b", {"weight": 0.4})),
                          "parameters": {"nuslerp_flatten": False, "nuslerp_row_wise": True}},
    "model_stock": {"merge_method": "model_stock", "base_model": "models/base", "models": _models(("a", None), ("b", None), ("c", None))},
    "passthrough_scaled": {"merge_method": "passthrough", "models": _models(("a", {"scale": [{"filter": "o_proj", "value": 0.0}, {"value": 1.0}]}))},
    # a layer gradient over a sliced range, per slice parameters
    "gradient_slices": {"merge_method": "linear", "slices": [
        {"sources": [{"model": "models/a", "layer_range": [0, 2], "parameters": {"weight": [0.0, 1.0]}},
                     {"model": "models/b", "layer_range": [2, 4], "parameters": {"weight": 1.0}}]},
        {"sources": [{"model": "models/c", "layer_range": [1, 4], "parameters": {"weight": [1.0, 0.2, 0.5]}},
                     {"model": "models/a", "layer_range": [1, 4], "parameters": {"weight": 0.5}}]}]},
}
MATRIX = {k: {**v, "dtype": "float32"} for k, v in MATRIX.items()}
FILES = sorted(p.name for p in DATA.glob("*.yml"))


def _assert_same(reference: Path, ours: Path) -> float:
    a, b = _tensors(reference), _tensors(ours)
    assert set(a) == set(b)
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    assert diff <= 1e-6, diff
    ca, cb = (json.loads((f / "config.json").read_text()) for f in (reference, ours))
    assert ca["num_hidden_layers"] == cb["num_hidden_layers"]
    return diff


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_parity_with_mergekit(name, here):
    assert _assert_same(_mergekit(MATRIX[name], here / f"mk_{name}"), _hf_ext(MATRIX[name], here / f"hf_{name}")) <= 1e-6


@pytest.mark.parametrize("name", FILES)
def test_documented_config_shapes_run_unchanged_through_both(name, here):
    config = yaml.safe_load((DATA / name).read_text())
    ours = from_mergekit_config(DATA / name)  # the file itself, unchanged
    out = ours.run(here / f"hf_file_{name}", hub_ids={m: f"org/{Path(m).name}" for m in ours.referenced_models()})
    _assert_same(_mergekit(config, here / f"mk_file_{name}"), out)


def test_every_registered_mergekit_method_is_in_the_matrix():
    covered = {c["merge_method"] for c in MATRIX.values()} | {yaml.safe_load((DATA / f).read_text())["merge_method"] for f in FILES}
    assert covered == set(MERGEKIT_METHODS)


def test_gradients_and_filters_really_vary_per_layer_and_tensor(here):
    out = from_mergekit_config(DATA / "slerp_gradients.yml").run(here / "grad", hub_ids={"models/a": "org/a", "models/b": "org/b"})
    merged, a, b = _tensors(out), _tensors(here / "models/a"), _tensors(here / "models/b")
    q0, q3 = "model.layers.0.self_attn.q_proj.weight", "model.layers.3.self_attn.q_proj.weight"
    torch.testing.assert_close(merged[q0], a[q0], rtol=0, atol=1e-7)  # t = 0 at the first layer (self_attn filter)
    torch.testing.assert_close(merged[q3], b[q3], rtol=0, atol=1e-6)  # t = 1 at the last
    up0 = "model.layers.0.mlp.up_proj.weight"
    torch.testing.assert_close(merged[up0], b[up0], rtol=0, atol=1e-6)  # mlp filter: t = 1 at the first layer


def test_passthrough_slices_write_a_loadable_deeper_model_and_card(here):
    merge = from_mergekit_config(DATA / "passthrough_slices.yml")
    out = merge.run(here / "stack", hub_ids={"models/a": "org/a", "models/b": "org/b"})
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 6
    model = AutoModelForCausalLM.from_pretrained(out)
    assert len(model.model.layers) == 6
    a, b, merged = _tensors(here / "models/a"), _tensors(here / "models/b"), model.state_dict()
    key = "self_attn.q_proj.weight"
    assert torch.equal(merged[f"model.layers.2.{key}"], a[f"model.layers.2.{key}"])
    assert torch.equal(merged[f"model.layers.3.{key}"], b[f"model.layers.1.{key}"])  # slice 2 starts at b's layer 1
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
    front = (out / "README.md").read_text().split("---\n")[1]
    assert "base_model:\n- org/a\n- org/b" in front and "base_model_relation: merge" in front
    card = (out / "README.md").read_text()
    assert "merge_method: passthrough" in card and "models/a" not in card  # the config, with Hub ids only
    assert yaml.safe_load((out / "mergekit_config.yml").read_text())["slices"][1]["sources"][0]["model"] == "org/b"


def test_tokenizer_source_copies_that_models_tokenizer(here):
    config = {**MATRIX["ties"], "tokenizer_source": "base"}
    out = _hf_ext(config, here / "tok")
    assert (out / "tokenizer.json").read_text() == (here / "models/base/tokenizer.json").read_text()


def test_ties_conventions_differ_with_unequal_weights_and_mergekit_matches_its_formula():
    torch.manual_seed(0)
    base, a, b = torch.zeros(200), torch.randn(200), torch.randn(200)
    w = torch.tensor([0.3, 0.7])
    peft = TiesMerge(density=1.0).merge([a, b], w, base, key="x")
    ours = TiesMerge(density=1.0, convention="mergekit").merge([a, b], w, base, key="x")
    # mergekit: signs elected on the weighted deltas, divided by the agreeing weights' sum
    wd = torch.stack([0.3 * a, 0.7 * b])
    mask = wd.sign() == torch.where(wd.sum(0) >= 0, 1.0, -1.0)
    expected = (wd * mask).sum(0) / (w[:, None] * mask).sum(0).clamp_min(1e-12)
    torch.testing.assert_close(ours, expected)
    assert float((peft - ours).abs().max()) > 0.05


def test_cli_runs_a_mergekit_config(here, capsys):
    from hf_ext.cli import main

    shutil.copy(DATA / "model_stock.yml", here / "config.yml")
    argv = ["merge", "config.yml", "--output_dir", str(here / "cli_out"),
            "--input_hub_ids", "org/base", "org/a", "org/b", "org/c"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((here / "cli_out" / "metrics.json").read_text())
    assert metrics["method"] == "model_stock" and metrics["layers"] == LAYERS
    reference = from_mergekit_config(DATA / "model_stock.yml").run(
        here / "api_out", hub_ids={"models/base": "x/base", "models/a": "x/a", "models/b": "x/b", "models/c": "x/c"})
    a, b = _tensors(here / "cli_out"), _tensors(reference)
    assert all(torch.equal(a[k], b[k]) for k in a)


BAD = {
    "unknown method": ({"merge_method": "karcher", "models": _models(("a", None))}, "model_stock"),
    "unknown key": ({"merge_method": "linear", "models": _models(("a", {"weight": 1})), "modules": {"x": {}}}, "'modules'"),
    "unknown parameter": ({"merge_method": "ties", "base_model": "models/base", "models": _models(("a", {"weight": 1, "t": 0.5}))}, "'t'"),
    "missing model path": ({"merge_method": "linear", "models": _models(("a", {"weight": 1}), ("nope", {"weight": 1}))}, "models/nope"),
    "layer_range out of bounds": ({"merge_method": "passthrough", "slices": [{"sources": [{"model": "models/a", "layer_range": [2, 9]}]}]}, "layer_range"),
    "slices that cannot stack": ({"merge_method": "passthrough", "slices": [{"sources": [{"model": "models/a", "layer_range": [0, 2]}]},
                                                                           {"sources": [{"model": "models/wide", "layer_range": [2, 4]}]}]}, "cannot stack"),
    "unequal slice lengths": ({"merge_method": "linear", "slices": [{"sources": [{"model": "models/a", "layer_range": [0, 2]},
                                                                                {"model": "models/b", "layer_range": [0, 3]}]}]}, "same number of layers"),
    "gradient longer than layers": ({"merge_method": "slerp", "base_model": "models/a", "models": _models(("a", None), ("b", None)),
                                     "parameters": {"t": [0, 0.2, 0.4, 0.6, 0.8, 1]}}, "gradient of 6 values"),
    "weights normalise to zero": ({"merge_method": "linear", "models": _models(("a", {"weight": 1.0}), ("b", {"weight": -1.0}))}, "sums to 0"),
    "non-float dtype": ({"merge_method": "linear", "models": _models(("a", {"weight": 1})), "dtype": "int8"}, "dtype"),
    "non-float out_dtype": ({"merge_method": "linear", "models": _models(("a", {"weight": 1})), "out_dtype": "int32"}, "out_dtype"),
    "missing weight": ({"merge_method": "linear", "models": _models(("a", None), ("b", {"weight": 1}))}, "'weight'"),
    "slerp of three": ({"merge_method": "slerp", "base_model": "models/a", "models": _models(("a", None), ("b", None), ("c", None)),
                        "parameters": {"t": 0.5}}, "slerp"),
    "no base for ties": ({"merge_method": "ties", "models": _models(("a", {"weight": 1}))}, "base_model"),
    "della epsilon too wide": ({"merge_method": "della", "base_model": "models/base", "models": _models(("a", {"weight": 1, "density": 0.5, "epsilon": 0.6}))},
                               "epsilon"),
    "tokenizer union": ({"merge_method": "linear", "models": _models(("a", {"weight": 1})), "tokenizer_source": "union"}, "union"),
    "lora reference": ({"merge_method": "linear", "models": [{"model": "models/a+org/lora", "parameters": {"weight": 1}}]}, "LoRA"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_mergekit_configs_get_one_clear_error(case, here):
    config, needle = BAD[case]
    with pytest.raises(InputError) as info:
        _hf_ext(config, here / "bad")
    assert needle in str(info.value), str(info.value)
    assert not (here / "bad" / "model.safetensors").exists()  # refused before anything was written


@pytest.mark.parametrize("weights", [[1.0, -1.0], [0.0, 0.0]])
def test_merge_models_refuses_weights_that_normalise_to_zero(weights, here, tmp_path):
    with pytest.raises(InputError, match="sums to 0"):
        merge_models([here / "models/a", here / "models/b"], "linear", output_dir=tmp_path / "m", weights=weights, hub_ids=["o/a", "o/b"])
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("dtype", ["int8", torch.int32, "float8"])
def test_merge_models_refuses_non_float_dtypes(dtype, here, tmp_path):
    with pytest.raises(InputError, match="dtype"):
        merge_models([here / "models/a", here / "models/b"], output_dir=tmp_path / "m", dtype=dtype, hub_ids=["o/a", "o/b"])
    assert not (tmp_path / "m").exists()


def test_merge_models_refuses_a_merge_that_overflows_the_output_dtype(here, tmp_path):
    with pytest.raises(InputError, match="NaN/inf in tensor"):
        merge_models([here / "models/a", here / "models/b"], "linear", output_dir=tmp_path / "m", weights=[1e6, 1e6],
                     normalize=False, dtype="float16", hub_ids=["o/a", "o/b"])  # fmt: skip


def test_mergekit_yaml_cli_on_a_documented_config_file(here):
    import subprocess
    import sys

    pytest.importorskip("mergekit", reason="mergekit (the parity reference) is not installed: pip install 'hf-ext[mergekit]'")
    cli = Path(sys.executable).with_name("mergekit-yaml")
    if not cli.exists():
        pytest.skip("mergekit is installed without its mergekit-yaml command")
    shutil.copy(DATA / "ties_densities.yml", here / "ties.yml")
    subprocess.run([str(cli), "ties.yml", "mk_cli", "--no-copy-tokenizer", "--no-write-model-card"], check=True,
                   cwd=here, capture_output=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    ours = from_mergekit_config(here / "ties.yml")
    _assert_same(here / "mk_cli", ours.run(here / "hf_cli", hub_ids={m: f"org/{Path(m).name}" for m in ours.referenced_models()}))


def test_merge_job_takes_any_method_setting_through_method_options(here, tmp_path):
    from hf_ext.config import parse_config
    from hf_ext.merge.job import MergeConfig, run_merge

    values = {"models": ["models/a", "models/b"], "method": "slerp", "method_options": {"t": 0.25},
              "input_hub_ids": ["o/a", "o/b"], "output_dir": str(tmp_path / "job")}  # fmt: skip
    run_merge(parse_config(MergeConfig, values))
    expected = from_mergekit_config({**MATRIX["slerp"], "parameters": {"t": 0.25}}).run(tmp_path / "ref", hub_ids={"models/a": "o/a", "models/b": "o/b"})
    a, b = _tensors(tmp_path / "job"), _tensors(expected)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match="no setting 'tt'"):
        run_merge(parse_config(MergeConfig, {**values, "method_options": {"tt": 0.25}, "output_dir": str(tmp_path / "bad")}))
