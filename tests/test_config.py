"""Recipe parsing: keys are exactly the config fields; types are checked; flags win."""

from pathlib import Path

import pytest

from hf_ext.config import load_recipe, parse_config
from hf_ext.errors import RecipeError
from hf_ext.select.pipeline import SelectionConfig

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_recipe_parses_to_selection_config():
    values = load_recipe(REPO / "recipes" / "quickstart.yaml")
    assert values.pop("job") == "select"
    config = parse_config(SelectionConfig, values)
    assert (config.method, config.budget) == ("sae_greedy", 300)
    assert {"longest", "random"} <= set(config.compare_methods)
    assert config.dataset == "dolly_alpagasus_3k"


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(RecipeError) as err:
        parse_config(SelectionConfig, {"budgett": 10})
    message = str(err.value)
    assert "'budgett'" in message and "Did you mean 'budget'?" in message
    assert "Valid keys:" in message and "compare_methods" in message


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"budget": "ten"}, "Field 'budget' must be an integer"),
        ({"budget": 3.5}, "Field 'budget' must be an integer"),
        ({"budget": True}, "Field 'budget' must be an integer"),
        ({"compare_methods": {"a": 1}}, "Field 'compare_methods' must be a list"),
        ({"judge_backend": "gpt"}, "must be one of ['none', 'transformers', 'openai']"),
        ({"method_options": {"alpagasus": {"threshold": "high"}}}, "Field 'threshold' must be a number"),
        ({"hub_private_repo": "yes"}, "Field 'hub_private_repo' must be true or false"),
        ({"dataset": 5}, "Field 'dataset' must be a string"),
    ],
)
def test_wrong_types_fail_with_the_field_name(values, fragment):
    with pytest.raises(RecipeError, match=None) as err:
        parse_config(SelectionConfig, values)
    assert fragment in str(err.value)


def test_lossless_conversions_only():
    config = parse_config(SelectionConfig, {"method_options": {"alpagasus": {"threshold": 4}}, "compare_methods": "random",
                                            "input_column": None})
    threshold = config.selector_options("alpagasus")["threshold"]
    assert threshold == 4.0 and isinstance(threshold, float)
    assert config.compare_methods == ["random"]
    assert config.input_column is None


def test_cli_flags_override_recipe_values():
    config = parse_config(SelectionConfig, {"budget": 10, "seed": 1}, ["--budget", "20", "--compare_methods", "random", "longest"])
    assert (config.budget, config.seed, config.compare_methods) == (20, 1, ["random", "longest"])


def test_a_mapping_flag_takes_yaml_and_updates_the_recipe_mapping_key_by_key():
    recipe = {"featurizer": {"model": "org/model", "layer": 3}}
    config = parse_config(SelectionConfig, recipe, ["--featurizer", "{layer: 15, dtype: bfloat16}", "--budget", "5"])
    assert config.featurizer == {"model": "org/model", "layer": 15, "dtype": "bfloat16"} and config.budget == 5
    assert parse_config(SelectionConfig, recipe, ['--featurizer={"layer": 1}']).featurizer == {"model": "org/model", "layer": 1}
    assert parse_config(SelectionConfig, {}, ["--sae_training", "{k: 8}"]).sae_training == {"k": 8}  # over the default {}
    assert recipe == {"featurizer": {"model": "org/model", "layer": 3}}  # the recipe's values are not changed
    with pytest.raises(RecipeError, match="Flag --featurizer takes a YAML mapping"):
        parse_config(SelectionConfig, recipe, ["--featurizer", "{layer: ["])
    with pytest.raises(RecipeError, match="'featurizer' must be a mapping"):
        parse_config(SelectionConfig, recipe, ["--featurizer", "15"])
    with pytest.raises(RecipeError, match="Unknown key 'layr' in `featurizer`"):
        parse_config(SelectionConfig, recipe, ["--featurizer", "{layr: 15}"])


def test_unknown_flag_fails_clearly():
    with pytest.raises(RecipeError, match="Valid flags for SelectionConfig"):
        parse_config(SelectionConfig, {}, ["--not_a_field", "1"])


def test_missing_and_malformed_recipe_files(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("budget: [1, 2\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- budget\n- 3\n")
    with pytest.raises(RecipeError, match="must be a YAML mapping"):
        load_recipe(listy)


def test_unsafe_yaml_is_refused(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("budget: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(evil)


@pytest.mark.filterwarnings("error::FutureWarning")  # recipes use current field names, not deprecated aliases
@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_parses(recipe):
    from hf_ext.config import JOBS, import_path

    values = load_recipe(recipe)
    job = values.pop("job", "select")
    assert job in JOBS, f"{recipe.name}: unknown job {job!r}"
    parse_config(import_path(JOBS[job][0]), values)
