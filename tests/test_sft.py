"""The sft job: only response tokens carry loss, selection metadata on the card, LoRA vs full,
evaluation in memory, and bad input."""

import json
from pathlib import Path

import pytest
import torch

from hf_ext.errors import InputError
from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer
from trainers.jobs.sft import SFTJobConfig, build_trainer, load_training_set, run_sft

DATA = Path(__file__).parent / "data" / "eval"
ROWS = [
    {"instruction": "Name a primary colour.", "input": "", "output": "Red is a primary colour.", "category": "open_qa"},
    {"instruction": "Summarise the text.", "input": "The cat sat on the mat all day.", "output": "A cat sat on a mat.", "category": "summarization"},
    {"instruction": "Is water wet?", "input": "", "output": "Yes, in everyday language.", "category": "open_qa"},
    {"instruction": "Translate to French: hello", "input": "", "output": "Bonjour.", "category": "general_qa"},
]
CPU = dict(bf16=False, activation_checkpointing=False, report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
           per_device_train_batch_size=2, max_steps=2, learning_rate=1e-3, seed=0, dataset_num_proc=None)


def _selection(folder: Path, with_metrics: bool = True) -> Path:
    import datasets

    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_list(ROWS).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    if with_metrics:
        (folder / "metrics.json").write_text(json.dumps({"method": "sae_greedy", "budget": 4, "dataset": "dolly_alpagasus_3k",
                                                         "source_datasets": ["databricks/databricks-dolly-15k"]}))
    return folder


@pytest.fixture()
def tiny_model(tmp_path):
    tok = tiny_tokenizer()
    return save_tiny(tmp_path / "base", tiny_llama(vocab_size=len(tok)), tok)


def test_only_response_tokens_carry_loss(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    config = SFTJobConfig(dataset=str(_selection(tmp_path / "sel")), output_dir=str(tmp_path / "out"), max_length=256, **CPU)
    train, _ = load_training_set(config, chat=True)
    trainer = build_trainer(config, model, tok, train, output_dir=str(tmp_path / "t"))
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()
    checked = 0
    for i in range(batch["input_ids"].shape[0]):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        n = int(mask.sum())
        text = tok.decode(ids[:n])
        row = next(r for r in ROWS if r["output"] in text)
        user = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        prompt_len = len(tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])
        assert (labels[:prompt_len] == -100).all(), "prompt tokens carry loss"
        assert torch.equal(labels[prompt_len:n], ids[prompt_len:n]), "response tokens must carry loss"
        checked += 1
    assert checked == batch["input_ids"].shape[0]
    # The trainer's loss is the mean NLL of the response tokens only, not of every token.
    with torch.no_grad():
        loss = trainer.compute_loss(model, {k: v for k, v in batch.items()})
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    target = batch["labels"][:, 1:]
    keep = target != -100
    nll = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    assert loss.item() == pytest.approx(nll[keep].mean().item(), rel=1e-5)
    every = batch["input_ids"][:, 1:]
    all_tokens = -logp.gather(-1, every.unsqueeze(-1)).squeeze(-1)[batch["attention_mask"][:, 1:].bool()].mean().item()
    assert abs(loss.item() - all_tokens) > 1e-3


def test_full_finetune_card_names_selection_and_eval(tmp_path, tiny_model):
    from huggingface_hub import ModelCard

    out = tmp_path / "sft"
    metrics = run_sft(SFTJobConfig(model_name_or_path=str(tiny_model), base_model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
                                   dataset=str(_selection(tmp_path / "sel")), output_dir=str(out), max_length=128,
                                   evaluate={"tasks": ["copa"], "eval_data_dir": str(DATA), "limit": 6}, **CPU))
    assert metrics["global_step"] == 2 and metrics["selection"] == {"method": "sae_greedy", "budget": 4, "pool": "dolly_alpagasus_3k", "found": True}
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.base_model_relation == "finetune"
    assert card.data.datasets == ["databricks/databricks-dolly-15k"]
    assert "`sae_greedy` selection of 4 examples" in card.text
    (copa,) = card.data.eval_results
    assert copa.dataset_name == "copa" and copa.metric_value == round(metrics["eval"]["tasks"]["copa"]["acc"], 4)
    assert json.loads((out / "metrics.json").read_text())["eval"]["tasks"]["copa"]["n"] == 6


def test_lora_without_selection_metrics(tmp_path, tiny_model):
    from huggingface_hub import ModelCard

    out = tmp_path / "lora"
    metrics = run_sft(SFTJobConfig(model_name_or_path=str(tiny_model), base_model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
                                   dataset=str(_selection(tmp_path / "plain", with_metrics=False)), output_dir=str(out), max_length=128,
                                   peft_config={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}, **CPU))
    assert metrics["selection"]["found"] is False
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model_relation == "adapter" and "unknown method" in card.text
    from hf_ext.evaluation import load_for_eval

    merged, _ = load_for_eval(str(out))  # the adapter folder loads on its base and merges
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in tiny_llama(vocab_size=512).parameters())


def test_bad_input(tmp_path, tiny_model):
    import datasets

    path = tmp_path / "no_response.jsonl"
    datasets.Dataset.from_list([{"instruction": "x", "input": "", "answer": "y"}]).to_json(str(path))
    with pytest.raises(InputError, match=r"no column 'output'.*response_column"):
        run_sft(SFTJobConfig(model_name_or_path=str(tiny_model), dataset=str(path), output_dir=str(tmp_path / "o"), **CPU))
    with pytest.raises(InputError, match="LoraConfig"):
        SFTJobConfig(peft_config={"rank": 4}, output_dir=str(tmp_path / "o"), **CPU)
    with pytest.raises(Exception, match="Unknown key 'task'"):
        SFTJobConfig(evaluate={"task": ["copa"]}, output_dir=str(tmp_path / "o"), **CPU)
    tok = tiny_tokenizer()
    tok.chat_template = None
    no_chat = save_tiny(tmp_path / "no_chat", tiny_llama(vocab_size=len(tok)), tok)
    with pytest.raises(InputError, match="chat template"):
        run_sft(SFTJobConfig(model_name_or_path=str(no_chat), dataset=str(_selection(tmp_path / "s2")), output_dir=str(tmp_path / "o"), **CPU))
    assert not (tmp_path / "o").exists()


def test_a_selection_whose_rows_disagree_with_its_metrics_is_refused(tmp_path, tiny_model):
    # A selection folder says how many rows it holds; training on another count (a stale datasets
    # cache once gave 4 of 300) is refused before any training.
    folder = _selection(tmp_path / "sel")
    (folder / "metrics.json").write_text(json.dumps({"method": "random", "budget": 9, "selected_size": 9}))
    with pytest.raises(InputError, match=r"loaded 4 rows but its metrics.json says 9"):
        run_sft(SFTJobConfig(model_name_or_path=str(tiny_model), dataset=str(folder), output_dir=str(tmp_path / "o"), **CPU))
    assert not (tmp_path / "o").exists()
    (folder / "metrics.json").write_text(json.dumps({"method": "random", "budget": 4, "selected_size": 4}))
    out = tmp_path / "ok"
    assert run_sft(SFTJobConfig(model_name_or_path=str(tiny_model), dataset=str(folder), output_dir=str(out), max_length=128,
                                **CPU))["train_rows"] == 4
