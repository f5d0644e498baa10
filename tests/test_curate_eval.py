"""DCLM CORE / EXTENDED aggregation against the published DCLM-7B (2.6T) numbers."""

import json

import pytest

from hf_ext.curate.dclm_eval import CORE_TASKS, DCLM_TASKS, aggregate, centered
from hf_ext.errors import InputError

# Per-task accuracies of DCLM-7B as published in mlfoundations/dclm
# exp_data/evals/evaluation_open_lm_dclm_7b_8k.json (eval_metrics.icl).
DCLM_7B = {"mmlu_zeroshot": 0.5534879434527012,"hellaswag_zeroshot": 0.7932682633399963,"jeopardy": 0.5252136588096619,"bigbench_qa_wikidata": 0.734412670135498,"arc_easy": 0.8249158263206482,"arc_challenge": 0.6126279830932617,"mmlu_fewshot": 0.6368585218463028,"bigbench_misconceptions": 0.6849315166473389,"copa": 0.8799999952316284,"siqa": 0.8270214796066284,"commonsense_qa": 0.7993447780609131,"piqa": 0.8161044716835022,"openbook_qa": 0.44999998807907104,"bigbench_novel_concepts": 0.65625,"bigbench_strange_stories": 0.7758620977401733,"bigbench_strategy_qa": 0.6539973616600037,"lambada_openai": 0.7552881836891174,"hellaswag": 0.8102967739105225,"winograd": 0.901098906993866,"winogrande": 0.7395422458648682,"bigbench_conlang_translation": 0.12195122241973877,"bigbench_language_identification": 0.5216000080108643,"bigbench_conceptual_combinations": 0.6796116232872009,"bigbench_elementary_math_qa": 0.34997379779815674,"bigbench_dyck_languages": 0.34700000286102295,"agi_eval_lsat_ar": 0.260869562625885,"bigbench_cs_algorithms": 0.5378788113594055,"bigbench_logical_deduction": 0.36533331871032715,"bigbench_operators": 0.5,"bigbench_repeat_copy_logic": 0.53125,"simple_arithmetic_nospaces": 0.30000001192092896,"simple_arithmetic_withspaces": 0.3070000112056732,"math_qa": 0.3107609748840332,"logi_qa": 0.41474655270576477,"pubmed_qa_labeled": 0.7170000076293945,"squad": 0.6316934823989868,"agi_eval_lsat_rc": 0.7014925479888916,"agi_eval_lsat_lr": 0.5372549295425415,"coqa": 0.49805837869644165,"bigbench_understanding_fables": 0.7089946866035461,"boolq": 0.8284403681755066,"agi_eval_sat_en": 0.8252426981925964,"winogender_mc_female": 0.6333333253860474,"winogender_mc_male": 0.5833333134651184,"enterprise_pii_classification": 0.8091310858726501,"bbq": 0.6419720812277361,"gpqa_main": 0.2611607015132904,"gpqa_diamond": 0.21717171370983124,"gsm8k_cot": 0.10235026478767395,"agi_eval_sat_math_cot": 0.22272726893424988,"aqua_cot": 0.1061224490404129,"svamp_cot": 0.5133333206176758,"triviaqa_sm_sub": 0.5703333616256714}


def test_task_counts():
    assert len(DCLM_TASKS) == 53 and len(CORE_TASKS) == 22 and set(CORE_TASKS) <= set(DCLM_TASKS)


@pytest.mark.parametrize(
    "version, core, extended",
    [("v1", 0.5713606422986358, 0.4538447428718087), ("v2", 0.5596126827249299, 0.4425599551383186)],
)
def test_dclm_7b_reference_values(version, core, extended):
    out = aggregate(DCLM_7B, version=version)
    assert out["core"] == pytest.approx(core, abs=1e-12)
    assert out["extended"] == pytest.approx(extended, abs=1e-12)
    # SPECS §3 check values, to 4 decimals
    assert round(out["core"], 4) == {"v1": 0.5714, "v2": 0.5596}[version]
    assert round(out["extended"], 4) == {"v1": 0.4538, "v2": 0.4426}[version]


def test_v2_category_means_match_published():
    published = {  # aggregated_task_categories_centered in the same JSON (v2)
        "commonsense reasoning": 0.5472747787358972, "language understanding": 0.5642354373092675,
        "reading comprehension": 0.5949073712292471, "safety": 0.333884902975776,
        "symbolic problem solving": 0.27515628900792866, "world knowledge": 0.4341452977113557,
    }
    cats = aggregate(DCLM_7B, version="v2")["categories"]
    assert cats == pytest.approx(published, abs=1e-12)


def test_missing_task_gives_none_and_eval_json(tmp_path):
    partial = dict(DCLM_7B)
    partial.pop("copa")
    out = aggregate(partial, version="v1")
    assert out["core"] is None and out["extended"] is None and out["missing_core"] == ["copa"]
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"eval_metrics": {"icl": DCLM_7B}}))
    assert aggregate(str(path), "v1")["core"] == pytest.approx(0.5713606422986358, abs=1e-12)


def test_centered_and_bad_inputs():
    assert centered(0.25, 25) == 0.0 and centered(1.0, 50) == 1.0
    with pytest.raises(InputError, match="version"):
        aggregate(DCLM_7B, version="v3")
    with pytest.raises(InputError, match="copa"):
        aggregate({"copa": "high"})


def test_evaluate_module_by_path():
    import evaluate

    from hf_ext.metrics import metric_path

    metric = evaluate.load(metric_path("dclm_core"))
    tasks = list(DCLM_7B)
    out = metric.compute(tasks=tasks, accuracies=[DCLM_7B[t] for t in tasks], version="v1")
    assert round(out["core"], 4) == 0.5714 and round(out["extended"], 4) == 0.4538
