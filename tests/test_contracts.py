"""Contract tests over every registry (PEFT's test_decoder_models.py x testing_common.py): each entry of
``SELECTORS``, ``FEATURIZERS`` (and the featurizer classes), ``MERGE_METHODS``, curation ``STEPS`` and
``JOBS`` goes through the same checks: it pickles, its datasets fingerprint is stable across two
constructions and changes when a setting changes, bad input gets an ``InputError`` naming the field, its
settings round-trip (merge params, a job's config through a recipe), and every job's recipes parse.

The matrix is parametrised from the registries themselves: an entry registered later is checked too.
"""

from __future__ import annotations

import dataclasses
import pickle
import typing
from functools import lru_cache

import pytest
import torch
import yaml
from datasets.fingerprint import Hasher

from contract_common import as_recipe, changed, changed_argument, featurizer_cases, int_field, job_recipes, make_pool
from hf_ext.config import JOBS, import_path, parse_config
from hf_ext.curate.base import Filter
from hf_ext.curate.pipeline import STEPS, CurationPipeline, build_step
from hf_ext.errors import InputError, RecipeError
from hf_ext.merge.methods import MERGE_METHODS, get_merge_method
from hf_ext.select.featurize import FEATURIZERS
from hf_ext.select.selectors import SELECTORS, get_selector

# --- selectors ---------------------------------------------------------------------------------------------

BUDGET, POOL = 10, 40


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_selector_picks_budget_distinct_rows_reproducibly(name):
    selector = get_selector(name)
    pool = make_pool(selector.requires, n=POOL)
    picked = selector.select(pool, BUDGET, seed=3)
    assert len(picked) == BUDGET and len(set(picked)) == BUDGET, picked
    assert all(isinstance(i, int) and 0 <= i < POOL for i in picked)
    assert selector.select(pool, BUDGET, seed=3) == picked
    assert selector.select(make_pool(selector.requires, n=POOL), BUDGET, seed=3) == picked  # same pool, new dicts


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_selector_pickles_and_fingerprints_stably(name):
    selector = get_selector(name)
    back = pickle.loads(pickle.dumps(selector))
    assert back == selector and back.fn is selector.fn
    assert Hasher.hash(back) == Hasher.hash(get_selector(name))
    assert Hasher.hash(dataclasses.replace(selector, prefix=changed(selector.prefix or "sae"))) != Hasher.hash(selector)


def test_selectors_have_distinct_fingerprints():
    hashes = {name: Hasher.hash(s) for name, s in SELECTORS.items()}
    assert len(set(hashes.values())) == len(hashes), hashes


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_selector_bad_input_names_the_field(name):
    selector = get_selector(name)
    pool = make_pool(selector.requires, n=POOL)
    with pytest.raises(InputError, match="budget"):
        selector.select(pool, POOL + 1)
    with pytest.raises(InputError, match="budget"):
        selector.select(pool, 0)
    with pytest.raises(InputError, match="empty pool"):
        selector.select({c: [] for c in pool}, 1)
    for column in selector.requires:
        with pytest.raises(InputError, match=column):
            selector.select({k: v for k, v in pool.items() if k != column}, BUDGET)


@pytest.mark.parametrize("name", sorted(n for n, s in SELECTORS.items() if s.prefix))
def test_selector_reads_a_featurizer_prefix(name):
    selector = get_selector(name)
    pool = make_pool(selector.requires, n=POOL)
    head = selector.prefix + "_"
    renamed = {("np2_" + k[len(head):] if k.startswith(head) else k): v for k, v in pool.items()}
    assert selector.select(renamed, BUDGET, seed=1, prefix="np2") == selector.select(pool, BUDGET, seed=1)
    with pytest.raises(InputError, match="prefix='np2'"):  # the default prefix is missing: the error names the one found
        selector.select(renamed, BUDGET)


# Columns a job of their own writes (not a featurizer of the select job), and that job.
JOB_COLUMNS = {"less_score": "less_select"}  # gradient datastore + target matching (hf_ext.select.less)


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_every_column_a_selector_reads_has_a_featurizer(name):
    assert all(job in JOBS for job in JOB_COLUMNS.values())
    missing = [c for c in get_selector(name).requires if c not in FEATURIZERS and c not in JOB_COLUMNS]
    assert not missing, f"selector {name!r} reads {missing}, which no FEATURIZERS entry produces"


# --- featurizers ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def featurizers(tmp_path_factory):
    return featurizer_cases(tmp_path_factory.mktemp("featurizers"))


def _case_names():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        return sorted(featurizer_cases(Path(tmp)))


FEATURIZER_NAMES = _case_names()


def test_every_featurizer_column_is_made_by_a_checked_featurizer(featurizers):
    made = {c for case in featurizers.values() for c in case["columns"]}
    missing = sorted(set(FEATURIZERS) - made)
    assert not missing, f"FEATURIZERS columns {missing} come from a featurizer without a case in tests/contract_common.py"


@pytest.mark.parametrize("name", FEATURIZER_NAMES)
def test_featurizer_pickles_to_its_settings_and_fingerprints_stably(featurizers, name):
    case = featurizers[name]
    fn = case["build"](**case["kwargs"])
    blob = pickle.dumps(fn)
    assert len(blob) < 20_000, f"{name} pickles to {len(blob)} bytes: it should hold settings, not a model"
    back = pickle.loads(blob)
    assert back.__getstate__() == fn.__getstate__()
    assert Hasher.hash(back) == Hasher.hash(case["build"](**case["kwargs"]))
    field, value = case["change"]
    assert Hasher.hash(case["build"](**{**case["kwargs"], field: value})) != Hasher.hash(fn)


@pytest.mark.parametrize("name", FEATURIZER_NAMES)
def test_featurizer_bad_input_names_the_field(featurizers, name):
    case = featurizers[name]
    if "bad" in case:
        kwargs, field = case["bad"]
        with pytest.raises(InputError, match=field):
            case["build"](**{**case["kwargs"], **kwargs})
    if "batch_error" in case:
        batch, column = case["batch_error"]
        with pytest.raises(InputError, match=repr(column)):
            case["build"](**case["kwargs"])(batch)
    assert "bad" in case or "batch_error" in case


# --- merge methods ---------------------------------------------------------------------------------------------

def _merge_change(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        new = changed(getattr(cls(), f.name), hints[f.name])
        if new is not None:
            try:
                return cls(**{f.name: new})
            except InputError:
                continue
    return None


@pytest.mark.parametrize("name", sorted(MERGE_METHODS))
def test_merge_method_pickles_fingerprints_and_round_trips_its_params(name):
    method = get_merge_method(name)
    assert pickle.loads(pickle.dumps(method)) == method
    assert Hasher.hash(method) == Hasher.hash(get_merge_method(name))
    params = method.params()
    assert params.pop("method") == name
    assert get_merge_method(name, **params) == method  # what cards and metrics record rebuilds the method
    other = _merge_change(type(method))
    if other is None:
        assert not dataclasses.fields(method), f"{name}: no setting could be changed"
    else:
        assert other != method and Hasher.hash(other) != Hasher.hash(method)
        assert get_merge_method(name, **{k: v for k, v in other.params().items() if k != "method"}) == other


@pytest.mark.parametrize("name", sorted(MERGE_METHODS))
def test_merge_method_bad_setting_names_it(name):
    with pytest.raises(InputError, match="'no_such_setting'") as err:
        get_merge_method(name, no_such_setting=1)
    for f in dataclasses.fields(MERGE_METHODS[name]):  # and lists the valid ones
        assert f.name in str(err.value)
    assert all(f.metadata.get("help") for f in dataclasses.fields(MERGE_METHODS[name])), "every setting has a help text"


@pytest.mark.parametrize("name", sorted(MERGE_METHODS))
def test_merging_copies_of_one_model_gives_that_model(name):
    method = get_merge_method(name)
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(6, 5, generator=g)
    for n in (2, 1):  # most methods take several models; passthrough copies one
        try:
            out = method.merge([theta.clone() for _ in range(n)], torch.full((n,), 1.0 / n), theta.clone(), key="w")
            break
        except InputError:
            continue
    else:
        pytest.fail(f"{name} merged neither two nor one copies")
    torch.testing.assert_close(out, theta, rtol=1e-5, atol=1e-6)


# --- curation steps ---------------------------------------------------------------------------------------------

# Steps whose `name` (the drop reason and drop-count key) differs from their registry key, and why.
STEP_NAMES_DIFFER = {"html_flag": "html"}  # the drop reason `html` is pinned by tests/test_curate_jobs.py
# Options a step needs before it can check a document (the failing test names a new one).
STEP_RUN_OPTIONS = {"token_kl": {"reference_counts": {"the": 50, "fox": 5, "dog": 5, "buy": 1}}}
TEXTS = ["The quick brown fox jumps over the lazy dog and the cat. " * 12, "Buy now!!! #### ... ... ...",
         "one line\none line\none line\n" * 5, "<html><body><p>The cat and the dog have a home with us.</p></body></html>"]


@pytest.mark.parametrize("name", sorted(STEPS))
def test_step_pickles_and_fingerprints_stably(name):
    step = build_step(name)
    back = pickle.loads(pickle.dumps(step))
    assert type(back) is type(step) and vars(back) == vars(step)
    assert Hasher.hash(step) == Hasher.hash(build_step(name))
    change = changed_argument(STEPS[name])
    if change is None:
        pytest.skip(f"{name} has no settings")
    argument, value = change
    assert Hasher.hash(build_step(name, {argument: value})) != Hasher.hash(step), f"{name}: {argument}={value!r}"


@pytest.mark.parametrize("name", sorted(STEPS))
def test_step_bad_option_names_it(name):
    with pytest.raises(InputError, match="no_such_option"):
        build_step(name, {"no_such_option": 1})
    with pytest.raises(InputError, match=name):
        CurationPipeline([name], step_options={name: {"no_such_option": 1}})


@pytest.mark.parametrize("name", sorted(STEPS))
def test_step_name_is_its_registry_key(name):
    assert getattr(STEPS[name], "name", None) == STEP_NAMES_DIFFER.get(name, name)


@pytest.mark.parametrize("name", sorted(n for n, s in STEPS.items() if not getattr(s, "needs_url", False)))
def test_step_drop_reasons_start_with_its_name(name):
    step = build_step(name, STEP_RUN_OPTIONS.get(name))
    texts, keep, reasons = CurationPipeline([step]).process(TEXTS)
    assert len(texts) == len(keep) == len(reasons) == len(TEXTS)
    for text, kept, reason, original in zip(texts, keep, reasons, TEXTS):
        assert (reason is None) == kept
        if not kept:
            assert reason.split(":")[0] == step.name and text == original  # dropped documents keep their text
    if isinstance(step, Filter):
        for text in TEXTS:
            kept, reason = step(text)
            assert isinstance(kept, bool) and (reason is None) == kept


# --- jobs -------------------------------------------------------------------------------------------------------

RECIPES = job_recipes()


@lru_cache(maxsize=None)
def _config_class(job):
    return import_path(JOBS[job].config)


def _first_recipe(job):
    if not RECIPES.get(job):
        pytest.fail(f"job {job!r} has no recipe under recipes/ (nor a compare recipe's selection): add one")
    return dict(RECIPES[job][0][1])


@lru_cache(maxsize=None)
def _config(job):
    return parse_config(_config_class(job), _first_recipe(job))


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_recipe_of_a_job_parses_into_its_config(job):
    cls = _config_class(job)
    assert RECIPES.get(job), f"job {job!r} has no recipe under recipes/ (nor a compare recipe's selection): add one"
    from transformers import TrainingArguments

    normalised = {f.name for f in dataclasses.fields(TrainingArguments)} if issubclass(cls, TrainingArguments) else set()
    for where, values in RECIPES[job]:
        config = parse_config(cls, dict(values))
        assert type(config) is cls, where
        adapt = getattr(cls, "adapt_recipe", None)  # a config that also reads another tool's schema (mergekit's)
        for key, value in (adapt(dict(values)) if adapt else values).items():  # every recipe value reaches the config (nothing silently renamed)
            if not isinstance(value, (dict, list)) and key not in normalised:  # transformers normalises its own
                got = getattr(config, key)
                assert got == value or getattr(got, "value", None) == value, f"{where}: {key}={value!r} became {got!r}"
    assert callable(import_path(JOBS[job].runner)) and JOBS[job].help


@pytest.mark.parametrize("job", sorted(JOBS))
def test_job_config_pickles_and_fingerprints_stably(job):
    config = _config(job)
    assert pickle.loads(pickle.dumps(config)) == config
    again = parse_config(_config_class(job), _first_recipe(job))
    assert Hasher.hash(again) == Hasher.hash(config)
    names = {f.name for f in dataclasses.fields(config) if f.init}
    field = "seed" if "seed" in names else int_field(type(config)) or "output_dir"
    values = {**_first_recipe(job), field: changed(getattr(config, field))}
    assert Hasher.hash(parse_config(_config_class(job), values)) != Hasher.hash(config), field


@pytest.mark.parametrize("job", sorted(JOBS))
def test_job_config_round_trips_through_a_recipe(job):
    config = _config(job)
    text = yaml.safe_dump(as_recipe(config), sort_keys=False)
    assert parse_config(_config_class(job), yaml.safe_load(text)) == config


@pytest.mark.parametrize("job", sorted(JOBS))
def test_job_bad_input_names_the_field(job):
    cls, values = _config_class(job), _first_recipe(job)
    with pytest.raises(RecipeError, match="'no_such_field'"):
        parse_config(cls, {**values, "no_such_field": 1})
    field = int_field(cls)
    if field is not None:
        with pytest.raises(RecipeError, match=f"Field '{field}' must be an integer"):
            parse_config(cls, {**values, field: "many"})
    with pytest.raises(InputError, match="hub_model_id"):
        parse_config(cls, {**{k: v for k, v in values.items() if k != "hub_model_id"}, "push_to_hub": True})


@pytest.mark.parametrize("job", sorted(JOBS))
def test_job_config_fields_all_have_help(job):
    missing = [f.name for f in dataclasses.fields(_config_class(job)) if f.init and not f.metadata.get("help")]
    assert not missing, f"{_config_class(job).__name__} fields without a help text: {missing}"
