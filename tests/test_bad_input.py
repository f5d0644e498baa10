"""Bad input matrix: one row per (entry point × bad input), over every job in ``JOBS`` and the
public loaders. Each row asserts the error type (``InputError``; ``RecipeError`` is one) and that
the message names the field or file, so a raw traceback or a silent exit 0 fails the row.

Job rows go through ``hf-ext run`` (``hf_ext.cli.main``), which prints an ``HfExtError`` on one line
and returns 2; any other exception propagates and fails the row. Loader rows call the public API.
Nothing here trains a model; tiny models come from ``hf_ext.testing``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from hf_ext.cli import main
from hf_ext.config import JOBS, config_fields, import_path
from hf_ext.errors import InputError

JOB_NAMES = sorted(JOBS)


def _config_cls(job: str) -> type:
    return import_path(JOBS[job].config)


def _fields_of(job: str, tp: type) -> list[str]:
    cls = _config_cls(job)
    hints = typing.get_type_hints(cls)
    return [name for name in config_fields(cls) if hints[name] is tp]


def _run(tmp_path: Path, capsys, recipe: str | bytes, *flags: str) -> str:
    """Run `hf-ext run recipe flags`; assert the one-line clear error (exit 2) and return it."""
    path = tmp_path / "recipe.yaml"
    path.write_bytes(recipe if isinstance(recipe, bytes) else recipe.encode("utf-8"))
    rc = main(["run", str(path), *flags])
    err = capsys.readouterr().err
    assert rc == 2, f"expected a clear error (exit 2), got exit {rc}; stderr: {err[-2000:]}"
    assert "Traceback" not in err
    return err


# -- every job × recipe-level bad input ----------------------------------------------------------
def _string_field(job: str) -> str:
    preferred = {"curate": "text_column", "merge": "method"}
    return preferred.get(job) or ([n for n in _fields_of(job, str) if n != "output_dir"] or ["output_dir"])[0]


def _float_field(job: str) -> str | None:
    floats = _fields_of(job, float)
    return floats[0] if floats else None


def _int_field(job: str) -> str:
    ints = [n for n in _fields_of(job, int) if n != "seed"]
    return ints[0] if ints else "seed"


JOB_CASES = []
for _job in JOB_NAMES:
    _cases = ["unknown_key", "duplicate_key", "non_utf8", "yaml_bool_for_string", "string_for_int", "job_as_list",
              "unwritable_output_dir", "output_dir_is_file", "nan_float"]
    if "seed" in config_fields(_config_cls(_job)):
        _cases.append("negative_seed")
    JOB_CASES += [pytest.param(_job, case, id=f"{_job}-{case}") for case in _cases]


@pytest.mark.parametrize("job, case", JOB_CASES)
def test_job_recipe_bad_input(job, case, tmp_path, capsys):
    head = f"job: {job}\n"
    if case == "unknown_key":
        err = _run(tmp_path, capsys, head + "definitely_not_a_field: 1\n")
        assert "'definitely_not_a_field'" in err and "Valid keys" in err
    elif case == "duplicate_key":
        name = _string_field(job)
        err = _run(tmp_path, capsys, head + f"{name}: a\n# a comment\n{name}: b\n")
        assert f"'{name}'" in err and "lines 2 and 4" in err and "recipe.yaml" in err
    elif case == "non_utf8":
        err = _run(tmp_path, capsys, head.encode() + b"# caf\xe9\n")
        assert "recipe.yaml" in err and "UTF-8" in err and "line 2" in err
    elif case == "yaml_bool_for_string":
        name = _string_field(job)
        err = _run(tmp_path, capsys, head + f"{name}: off\n")
        assert f"'{name}'" in err and "quote it" in err
    elif case == "string_for_int":
        name = _int_field(job)
        err = _run(tmp_path, capsys, head + f"{name}: ten\n")
        assert f"'{name}'" in err and "integer" in err
    elif case == "negative_seed":
        err = _run(tmp_path, capsys, head + "seed: -1\n")
        assert "'seed'" in err and "2**32" in err
    elif case == "job_as_list":
        err = _run(tmp_path, capsys, f"job: [{job}]\n")
        assert f"[{job!r}]" in err and "`job`" in err
    elif case == "unwritable_output_dir":
        err = _run(tmp_path, capsys, head + "output_dir: /proc/hf_ext_cannot_write/out\n")
        assert "output_dir" in err and "/proc/hf_ext_cannot_write/out" in err and "not writable" in err
    elif case == "output_dir_is_file":
        (tmp_path / "a_file").write_text("mine")
        err = _run(tmp_path, capsys, head + f"output_dir: {tmp_path / 'a_file' / 'out'}\n")
        assert "output_dir" in err and "is a file" in err
        assert (tmp_path / "a_file").read_text() == "mine"
    elif case == "nan_float":
        name = _float_field(job)
        if name is None:  # no float field: a NaN where an integer goes
            name = _int_field(job)
            err = _run(tmp_path, capsys, head + f"{name}: .nan\n")
            assert f"'{name}'" in err and "integer" in err
        else:
            err = _run(tmp_path, capsys, head + f"{name}: .nan\n")
            assert f"'{name}'" in err and "NaN" in err


def test_job_matrix_covers_every_job():
    assert {p.values[0] for p in JOB_CASES} == set(JOBS)


# -- flags and single fields -----------------------------------------------------------------------
FIELD_CASES = [
    pytest.param("job: select\noutput_dir: {tmp}/out\n", ["--seed", "-1"], "'seed'", id="select-flag-seed-minus-1"),
    pytest.param("job: select\noutput_dir: {tmp}/out\n", ["--method_options", "{alpagasus: {threshold: .nan}}"], "'threshold'",
                 id="select-flag-nan"),
    pytest.param("job: merge\ndtype: float8\n", [], "'dtype'", id="merge-dtype-float8"),
    pytest.param("job: curate\nhtml: off\n", [], "html: \"off\"", id="curate-html-off"),
    pytest.param("job: curate\ndataset: {tmp}/latin1.jsonl\nstep_options: {language_id: {cache_tokens: \"yes\"}}\n", [],
                 "language_id: cache_tokens must be true or false", id="curate-language-id-cache-tokens-string"),
    pytest.param("job: quality_classifier\nscorer: fasttext\npositives: [{path: a.jsonl}]\nnegatives: [{path: b.jsonl}]\nfasttext: {normalize: lower}\n", [],
                 "fasttext.normalize must be one of ['dclm', 'punct_lower']", id="quality-fasttext-normalize-unknown"),
    pytest.param("job: curate\ndataset: {tmp}/latin1.jsonl\ndedup: [bff]\nbff_expected_ngrams: 1000\n", [],
                 "`bff_expected_ngrams` -> dedup_options: {bff: {expected_ngrams: ...}}", id="curate-old-dedup-key"),
    pytest.param("job: curate\ndataset: {tmp}/latin1.jsonl\noutput_dir: {tmp}/out\n", ["--minhash_threshold", "0.5"],
                 "`minhash_threshold` -> dedup_options: {minhash: {threshold: ...}}", id="curate-old-dedup-flag"),
    pytest.param("job: curate\ndataset: {tmp}/latin1.jsonl\ndedup: [minhash]\ndedup_options: {minhash: {thresold: 0.5}}\n", [],
                 "dedup_options.minhash (MinHashDeduplicator's fields)", id="curate-dedup-options-typo"),
    pytest.param("job: curate\ndataset: {tmp}/latin1.jsonl\ndedup: [bff]\ndedup_options: {bff: {fp_rate: 2}}\n", [],
                 "dedup_options.bff (BFFDeduplicator's fields)", id="curate-dedup-options-bad-value"),
    pytest.param("job: curate\ndataset: {tmp}/latin1.jsonl\ndedup: [minhash]\ndedup_options: {bff: {ngram: 5}}\n", [],
                 "dedup_options.bff is set but 'bff' is not in dedup", id="curate-dedup-options-unused"),
    pytest.param("job: select\nfeaturizer: {dtype: float8}\n", [], "`featurizer` (SAEFeaturizer's fields): Field 'dtype'",
                 id="select-featurizer-dtype-float8"),
    pytest.param("job: select\nsae_layer: 31\nsae_num_latents: 64\n", [], "'sae_layer' -> featurizer: {layer: ...}; "
                 "'sae_num_latents' -> sae_training: {num_latents: ...}", id="select-old-sae-keys"),
    pytest.param("job: select\noutput_dir: {tmp}/out\n", ["--sae_dtype", "bfloat16"], "'sae_dtype' -> featurizer: {dtype: ...}",
                 id="select-old-sae-flag"),
    pytest.param("job: compare\nselections: {sae: {job: select, sae_layer: 3}}\n", [], "'sae_layer' -> featurizer: {layer: ...}",
                 id="compare-selection-old-sae-key"),
    pytest.param("job: select\nfeaturizer: {layr: 3}\n", [], "Unknown key 'layr' in `featurizer` (SAEFeaturizer's fields). "
                 "Did you mean 'layer'?", id="select-featurizer-typo"),
    pytest.param("job: select\nsae_training: {k: 64, num_latents: 32}\n", [], "`sae_training` (SAETrainingConfig's fields)",
                 id="select-sae-training-k"),
    pytest.param("job: select\nmethod_options: {alpagasus: {threshold: .nan}}\n", [], "'threshold'", id="select-nan-threshold"),
    pytest.param("job: select\njudge_threshold: 4\nsimscale_similarity: cosine\n", [], "'judge_threshold' -> method_options: "
                 "{alpagasus: {threshold: ...}}; 'simscale_similarity' -> method_options: {sae_simscale: {similarity: ...}}",
                 id="select-old-threshold-keys"),
    pytest.param("job: select\nmethod_options: {sae_simscale: {similarity: dice}}\n", [], "'similarity'",
                 id="select-simscale-similarity-dice"),
    pytest.param("job: select\nmethod_options: {alpagsus: {threshold: 4}}\n", [], "Unknown selection method 'alpagsus'",
                 id="select-method-options-unknown-method"),
    pytest.param("job: select\njudge_backend: openai\njudge_base_url: http://localhost:8000/v1\njudge_batch_size: 4\n", [],
                 "'judge_base_url' -> judge: {base_url: ...}; 'judge_batch_size' -> judge: {batch_size: ...} (transformers) "
                 "or judge: {concurrency: ...} (openai)", id="select-old-judge-keys"),
    pytest.param("job: select\noutput_dir: {tmp}/out\n", ["--judge_model", "x"], "'judge_model' -> judge: {model: ...}",
                 id="select-old-judge-flag"),
    pytest.param("job: select\njudge_backend: openai\njudge: {base_url: http://localhost:8000/v1, concurency: 4}\n", [],
                 "Unknown key 'concurency' in `judge` (OpenAIBackend's fields). Did you mean 'concurrency'?",
                 id="select-judge-typo"),
    pytest.param("job: select\njudge_backend: transformers\njudge: {dtype: float8}\n", [],
                 "`judge` (TransformersBackend's fields)", id="select-judge-dtype-float8"),
    pytest.param("job: select\njudge_backend: openai\njudge: {model: judge}\n", [], "judge.base_url", id="select-judge-no-url"),
    pytest.param("job: no_such_job\n", [], "'no_such_job'", id="unknown-job"),
    pytest.param("job: select\nbudget: 0\n", [], "budget", id="select-budget-0"),
    pytest.param("- job\n- select\n", [], "mapping", id="recipe-not-a-mapping"),
    pytest.param("job: select\nsae_hookpoint: ../../etc\noutput_dir: {tmp}/out\n", [], "'sae_hookpoint' -> nothing: the SAE's "
                 "subfolder is derived from featurizer.layer", id="select-sae-hookpoint-refused"),
    pytest.param("job: select\nfeaturizer: {sae_subfolder: ../../etc}\noutput_dir: {tmp}/out\n", [],
                 "featurizer.sae_subfolder is set by featurizer.layer", id="select-featurizer-subfolder-refused"),
    pytest.param("job: select\ntokenizer: ./no/such/tokenizer\noutput_dir: {tmp}/out\n", [], "'./no/such/tokenizer'",
                 id="select-tokenizer-missing"),
    pytest.param("job: select\ndataset: {tmp}/missing.jsonl\noutput_dir: {tmp}/out\n", [], "missing.jsonl",
                 id="select-dataset-missing"),
    pytest.param("job: select\ndataset: {tmp}/latin1.jsonl\noutput_dir: {tmp}/out\n", [], "latin1.jsonl' is not UTF-8",
                 id="select-dataset-latin1"),
    pytest.param("job: select\nbudget: [1\n", [], "not valid YAML", id="recipe-invalid-yaml"),
    pytest.param("job: bts\nnum_stitch_layers: 2\n", [], "write stitch: {num_stitch_layers: ...} instead", id="bts-flat-stitch-key"),
    pytest.param("job: bts\nstitch_steps: 20\n", [], "write stitch_training: {max_steps: ...} instead", id="bts-flat-stitch-steps"),
    pytest.param("job: bts\noutput_dir: {tmp}/out\n", ["--gate_offset_final", "1.0"], "stitch_training: {gate_offset_final: ...}",
                 id="bts-flat-stitch-flag"),
    pytest.param("job: bts\nstitch: {num_stitch_layers: two}\n", [], "BTSConfig.stitch: Field 'num_stitch_layers' must be an integer",
                 id="bts-stitch-wrong-type"),
    pytest.param("job: bts\nstitch: {num_stitch_layers: 0}\n", [], "StitchConfig.num_stitch_layers must be >= 1", id="bts-stitch-zero-layers"),
    pytest.param("job: bts\nstitch: {layers: 2}\n", [], "BTSConfig.stitch: Unknown key 'layers'", id="bts-stitch-unknown-key"),
    pytest.param("job: bts\nstitch: {expert_names: [a]}\n", [], "BTSConfig.stitch.expert_names is not a setting here", id="bts-stitch-set-by-job"),
    pytest.param("job: bts\nstitch_training: {max_steps: 10, num_stitch_layers: 2}\n", [],
                 "BTSConfig.stitch_training.num_stitch_layers is not a setting here: put it under stitch", id="bts-training-layer-key"),
    pytest.param("job: bts\nstitch_training: {learning_rate: 0.01}\n", [], "stitch_training.max_steps must be a positive number",
                 id="bts-training-no-max-steps"),
    pytest.param("job: bts\nstitch: {gate_offset: 1.0}\n", [], "gate_offset_final=2.0 is larger than stitch.gate_offset=1.0",
                 id="bts-final-above-stitch-beta"),
]


@pytest.mark.parametrize("recipe, flags, fragment", FIELD_CASES)
def test_recipe_field_bad_input(recipe, flags, fragment, tmp_path, capsys):
    (tmp_path / "latin1.jsonl").write_bytes(b'{"instruction": "caf\xe9", "input": "", "output": "x", "category": "qa"}\n')
    err = _run(tmp_path, capsys, recipe.replace("{tmp}", str(tmp_path)), *flags)
    assert fragment in err


@pytest.mark.parametrize("flag", ["--target_loss", "--multiplier"])
def test_scaling_plan_cli_refuses_nan(flag, tmp_path, capsys):
    _scaling_law(tmp_path)
    argv = ["scaling", "plan", "--fit", str(tmp_path / "law.json"), "--target_loss", "2.5", flag, "nan"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert flag.lstrip("-") in err and "finite" in err and "Traceback" not in err


def test_missing_recipe_file_names_it(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


# -- public loaders × bad files ----------------------------------------------------------------------
def _sae(folder: Path) -> Path:
    from hf_ext.select.sae.model import TopKSAE

    TopKSAE(d_in=8, num_latents=16, k=2).save_pretrained(folder)
    return folder


def _tiny_model(folder: Path) -> Path:
    from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    save_tiny(folder, tiny_llama(tokenizer=tok), tok)
    return folder


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _load_sae(folder, subfolder=None):
    from hf_ext.select.sae.model import TopKSAE

    return TopKSAE.from_pretrained(folder, subfolder)


def _case_sae_truncated(tmp):
    _truncate(_sae(tmp / "sae") / "sae.safetensors")
    return lambda: _load_sae(tmp / "sae"), "sae.safetensors"


def _case_sae_garbage(tmp):
    (_sae(tmp / "sae") / "sae.safetensors").write_bytes(b"\xff" * 64)
    return lambda: _load_sae(tmp / "sae"), "sae.safetensors"


def _case_sae_cfg_not_json(tmp):
    (_sae(tmp / "sae") / "cfg.json").write_text("{d_in: 8,")
    return lambda: _load_sae(tmp / "sae"), "cfg.json"


def _case_sae_cfg_not_object(tmp):
    (_sae(tmp / "sae") / "cfg.json").write_text("[8, 16]")
    return lambda: _load_sae(tmp / "sae"), "cfg.json"


def _case_sae_cfg_latin1(tmp):
    (_sae(tmp / "sae") / "cfg.json").write_bytes(b'{"d_in": 8, "note": "caf\xe9"}')
    return lambda: _load_sae(tmp / "sae"), "cfg.json"


def _case_sae_missing_weights(tmp):
    (_sae(tmp / "sae") / "sae.safetensors").unlink()
    return lambda: _load_sae(tmp / "sae"), "sae.safetensors"


def _case_sae_hookpoint_dotdot(tmp):
    _sae(tmp / "outside")
    (tmp / "repo").mkdir()
    return lambda: _load_sae(tmp / "repo", "../outside"), "'../outside'"


def _case_sae_hookpoint_absolute(tmp):
    (tmp / "repo").mkdir()
    return lambda: _load_sae(tmp / "repo", str(_sae(tmp / "abs"))), "would reach outside"


def _case_sae_missing_folder(tmp):
    return lambda: _load_sae(tmp / "no" / "such" / "sae"), "neither an existing folder"


def _case_model_missing_path(tmp):
    from hf_ext.models import load_model

    return lambda: load_model(str(tmp / "no_such_model")), "no_such_model"


def _case_model_missing_relative(tmp):
    from hf_ext.models import load_model

    return lambda: load_model("./models/none-here"), "./models/none-here"


def _case_tokenizer_missing_path(tmp):
    from hf_ext.models import load_tokenizer

    return lambda: load_tokenizer(str(tmp / "no_such_tokenizer")), "no_such_tokenizer"


def _case_model_is_a_file(tmp):
    from hf_ext.models import load_model

    (tmp / "weights.bin").write_bytes(b"x")
    return lambda: load_model(str(tmp / "weights.bin")), "weights.bin"


def _case_model_truncated_safetensors(tmp):
    from hf_ext.models import load_model

    _truncate(_tiny_model(tmp / "m") / "model.safetensors")
    return lambda: load_model(str(tmp / "m")), "model.safetensors"


def _case_model_garbage_safetensors(tmp):
    from hf_ext.models import load_model

    (_tiny_model(tmp / "m") / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json header!")
    return lambda: load_model(str(tmp / "m")), "model.safetensors"


def _case_weightsource_truncated(tmp):
    from hf_ext.merge import WeightSource

    _truncate(_tiny_model(tmp / "m") / "model.safetensors", keep=0.9)
    source = WeightSource(tmp / "m")
    return lambda: [source.get(k) for k in source.keys()], "model.safetensors"


def _case_weightsource_no_weights(tmp):
    from hf_ext.merge import WeightSource

    (tmp / "m").mkdir()
    (tmp / "m" / "config.json").write_text("{}")
    return lambda: WeightSource(tmp / "m"), "model.safetensors"


def _pool_file(name: str, data: bytes):
    def case(tmp):
        from hf_ext.data import load_pool

        (tmp / name).write_bytes(data)
        return lambda: load_pool(str(tmp / name)), name

    return case


_case_pool_latin1_jsonl = _pool_file("pool.jsonl", b'{"instruction": "caf\xe9", "output": "x"}\n')
_case_pool_latin1_csv = _pool_file("pool.csv", b"instruction,output\nna\xefve,x\n")
_case_pool_empty_file = _pool_file("pool.jsonl", b"")
_case_pool_unknown_type = _pool_file("pool.xlsx", b"PK")


def _case_pool_missing_path(tmp):
    from hf_ext.data import load_pool

    return lambda: load_pool(str(tmp / "none" / "pool.jsonl")), "pool.jsonl"


def _case_recipe_duplicate_key_direct(tmp):
    from hf_ext.config import load_recipe

    (tmp / "r.yaml").write_text("budget: 1\nbudget: 2\n")
    return lambda: load_recipe(tmp / "r.yaml"), "lines 1 and 2"


def _case_recipe_nested_duplicate(tmp):
    from hf_ext.config import load_recipe

    (tmp / "r.yaml").write_text("step_options:\n  language_id: {min_score: 0.5}\n  language_id: {min_score: 0.7}\n")
    return lambda: load_recipe(tmp / "r.yaml"), "'language_id'"


def _case_ensemble_names_escape(tmp):
    from hf_ext.merge.ensemble import ExpertEnsemble

    (tmp / "ens").mkdir()
    (tmp / "ens" / "ensemble_config.json").write_text(json.dumps({"expert_names": ["../../etc"], "mixing": "probability",
                                                                  "top_k": None, "router": {"type": "bayesian"}}))
    return lambda: ExpertEnsemble.from_pretrained(tmp / "ens"), "'../../etc'"


def _case_ensemble_config_not_json(tmp):
    from hf_ext.merge.ensemble import ExpertEnsemble

    (tmp / "ens").mkdir()
    (tmp / "ens" / "ensemble_config.json").write_text("{expert_names: [")
    return lambda: ExpertEnsemble.from_pretrained(tmp / "ens"), "ensemble_config.json"


def _case_selection_sae_no_layer_folder(tmp):
    from hf_ext.select.pipeline import SelectionConfig
    from hf_ext.select.sae.job import prepare_sae

    _sae(tmp / "repo" / "layers.0")
    config = SelectionConfig(method="sae_greedy", featurizer={"sae": str(tmp / "repo"), "layer": 5}, output_dir=str(tmp / "o"))
    return lambda: prepare_sae(config, None), "no SAE for featurizer.layer 5 (block 5): no layers.5 or blocks.5.hook_resid_post"


def _case_openai_bad_url(tmp):
    from hf_ext.critique.backends import OpenAIBackend

    return lambda: OpenAIBackend(base_url="localhost:8000/v1"), "base_url"


def _case_openai_zero_timeout(tmp):
    from hf_ext.critique.backends import OpenAIBackend

    return lambda: OpenAIBackend(timeout=0), "timeout"


def _case_transformers_backend_float8(tmp):
    from hf_ext.critique.backends import TransformersBackend

    return lambda: TransformersBackend(dtype="float8"), "dtype"


def _case_featurizer_float8(tmp):
    from hf_ext.select.sae.featurizer import SAEFeaturizer

    return lambda: SAEFeaturizer(dtype="float8"), "dtype"


def _case_selector_unknown(tmp):
    from hf_ext.select.selectors import get_selector

    return lambda: get_selector("sae_gredy"), "'sae_gredy'"


def _case_selector_wrong_prefix(tmp):
    from hf_ext.select.selectors import select

    return lambda: select({"np2_ids": [[1], [2]]}, "sae_greedy", 1), "prefix='np2'"


def _null_fingerprint_vector():
    """(base, finetune, τ = finetune − base with its base fingerprint cleared)."""
    import copy

    import torch

    from hf_ext.adapters.time_vector import TimeVector
    from hf_ext.testing import tiny_llama

    base = tiny_llama(seed=0)
    ft = copy.deepcopy(base)
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(0.01)
    tau = TimeVector.from_models(base, ft)
    tau.config.base_fingerprint = None
    return base, ft, tau


def _case_time_vector_null_fingerprint(tmp):
    import copy

    base, _, tau = _null_fingerprint_vector()
    return lambda: tau.apply_to(copy.deepcopy(base)), "base_fingerprint"


def _case_time_vector_config_not_json(tmp):
    from hf_ext.adapters.time_vector import TimeVector

    (tmp / "tv").mkdir()
    (tmp / "tv" / "time_vector_config.json").write_text("{base_model: x")
    return lambda: TimeVector.from_pretrained(tmp / "tv"), "time_vector_config.json"


def _case_stitch_config_not_json(tmp):
    from hf_ext.adapters.stitch import StitchConfig

    (tmp / "st").mkdir()
    (tmp / "st" / "stitch_config.json").write_text('{"num_stitch_layers": 2,')
    return lambda: StitchConfig.from_pretrained(tmp / "st"), "stitch_config.json"


def _case_writable_dir_file(tmp):
    from hf_ext.config import check_writable_dir

    (tmp / "f").write_text("x")
    return lambda: check_writable_dir(tmp / "f" / "out"), "output_dir"


def _scaling_law(tmp):
    from hf_ext.scaling import OvertrainingLaw

    law = OvertrainingLaw({"alpha": 140.0, "beta_prime": 420.0, "beta": -0.26, "E": 1.75})
    law.save(tmp / "law.json")
    return law


def _case_scaling_plan_nan_target_loss(tmp):
    from hf_ext.scaling.planning import plan_for_loss

    law = _scaling_law(tmp)
    return lambda: plan_for_loss(law, float("nan")), "target_loss"


def _case_scaling_plan_inf_multiplier(tmp):
    from hf_ext.scaling.planning import plan_for_loss

    law = _scaling_law(tmp)
    return lambda: plan_for_loss(law, 2.5, multiplier=float("inf")), "multiplier"


LOADER_CASES = {name[len("_case_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("_case_")}


@pytest.mark.parametrize("case", sorted(LOADER_CASES))
def test_loader_bad_input(case, tmp_path):
    call, fragment = LOADER_CASES[case](tmp_path)
    with pytest.raises(InputError) as err:
        call()
    assert fragment in str(err.value), str(err.value)


# -- inputs that look wrong but are right: they must work, and do the right thing -------------------
def _ok_quoted_off(tmp):
    from hf_ext.config import load_recipe, parse_config
    from hf_ext.curate.job import CurateConfig

    (tmp / "docs.jsonl").write_text(json.dumps({"text": "A document."}) + "\n")
    (tmp / "r.yaml").write_text(f'html: "off"\ndataset: {tmp / "docs.jsonl"}\noutput_dir: {tmp / "out"}\n')
    return parse_config(CurateConfig, load_recipe(tmp / "r.yaml")).html == "off"


def _ok_same_key_in_two_mappings(tmp):
    from hf_ext.config import load_recipe

    (tmp / "r.yaml").write_text("a: {x: 1}\nb: {x: 2}\n")
    return load_recipe(tmp / "r.yaml") == {"a": {"x": 1}, "b": {"x": 2}}


def _ok_utf8_bom_and_accents(tmp):
    from hf_ext.config import load_recipe

    (tmp / "r.yaml").write_bytes("\ufeffjob: select\ndataset: café.jsonl\n".encode("utf-8"))
    return load_recipe(tmp / "r.yaml") == {"job": "select", "dataset": "café.jsonl"}


def _ok_largest_seed(tmp):
    from hf_ext.config import parse_config
    from hf_ext.select.pipeline import SelectionConfig

    return parse_config(SelectionConfig, {"seed": 2**32 - 1, "output_dir": str(tmp / "o")}).seed == 2**32 - 1


def _ok_new_nested_output_dir(tmp):
    from hf_ext.config import check_writable_dir

    check_writable_dir(tmp / "a" / "b" / "c")
    return not (tmp / "a").exists() and list(tmp.iterdir()) == []  # probed, nothing left behind


def _ok_judge_99_not_selected(tmp):
    from hf_ext.select.judge import parse_alpagasus_score
    from hf_ext.select.selectors import select

    scores = [parse_alpagasus_score(t) for t in ("99", "4.8", "inf", "nan", "5")]
    return scores == [-1.0, 4.8, -1.0, -1.0, 5.0] and select({"judge_score": scores}, "alpagasus", 5) == [4, 1]


def _ok_nothing_passes_threshold(tmp):
    from hf_ext.select.selectors import select

    return select({"judge_score": [3.0, 4.0]}, "alpagasus", 2) == []


def _ok_nested_hookpoint(tmp):
    from hf_ext.select.sae.model import TopKSAE

    TopKSAE(d_in=8, num_latents=16, k=2).save_pretrained(tmp / "repo" / "blocks" / "layers.3")
    return _load_sae(tmp / "repo", "blocks/layers.3").num_latents == 16


def _ok_dotted_expert_name(tmp):
    from hf_ext.paths import check_plain_name

    return check_plain_name("en-US_v1.2", field="expert name") == "en-US_v1.2"


def _ok_prefixed_columns_with_prefix(tmp):
    from hf_ext.select.selectors import select

    ids = [[1, 2], [3], [1]]
    return select({"np2_ids": ids}, "sae_greedy", 2, prefix="np2") == select({"sae_ids": ids}, "sae_greedy", 2)


def _ok_empty_string_content(tmp):
    from openai_server import OpenAICompatibleServer

    from hf_ext.critique.backends import OpenAIBackend

    with OpenAICompatibleServer(lambda body: "") as server:
        return OpenAIBackend(base_url=server.base_url, max_retries=0).generate([[{"role": "user", "content": "hi"}]]) == [""]


def _ok_base_url_with_query(tmp):
    from hf_ext.critique.backends import OpenAIBackend

    url = OpenAIBackend(base_url="https://h.example/openai/v1?api-version=2024-06-01").completions_url()
    return url == "https://h.example/openai/v1/chat/completions?api-version=2024-06-01"


def _ok_time_vector_forced(tmp):
    import copy

    import torch

    base, ft, tau = _null_fingerprint_vector()
    out = tau.apply_to(copy.deepcopy(base), force=True)
    return all(torch.equal(v, ft.state_dict()[k]) for k, v in out.state_dict().items())


def _ok_pool_utf8_gz(tmp):
    import gzip

    from hf_ext.data import load_pool

    with gzip.open(tmp / "pool.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"instruction": "naïve café", "output": "ok"}) + "\n")
    ds, _ = load_pool(str(tmp / "pool.jsonl.gz"))
    return ds[0]["instruction"] == "naïve café"


OK_CASES = {name[len("_ok_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("_ok_")}


@pytest.mark.parametrize("case", sorted(OK_CASES))
def test_ok_input(case, tmp_path):
    assert OK_CASES[case](tmp_path) is True
