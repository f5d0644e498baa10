"""Two CPU processes (torchrun, gloo): each featurizes its shard, the features are gathered, and
every rank ends with exactly the single-process output."""

import json
import os
import subprocess
import sys
import textwrap

from datasets import Dataset

from hf_ext.dist import map_features
from hf_ext.select.sae import SAEFeaturizer, TopKSAE
from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

ROWS = {
    "instruction": [f"Question {i}: explain the model data" for i in range(9)],
    "input": [""] * 9,
    "output": [" ".join(["the model selects data"] * (i + 1)) for i in range(9)],
}

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from datasets import Dataset
    from hf_ext.dist import map_features
    from hf_ext.select.sae import SAEFeaturizer

    rows, model, sae, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    ds = map_features(Dataset.from_dict(rows), SAEFeaturizer(model=model, sae=sae, layer=1), batch_size=2)
    rank = int(os.environ["RANK"])
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"ids": list(ds["sae_ids"]), "count": list(ds["sae_count"]), "n": len(ds)}, f)
""")


def test_two_process_sharded_featurization_equals_single_process(tmp_path):
    tok = tiny_tokenizer()
    save_tiny(tmp_path / "llama", tiny_llama(tokenizer=tok, num_layers=2, seed=7), tok)
    TopKSAE(32, 80, k=5, seed=8).save_pretrained(tmp_path / "sae")
    single = map_features(Dataset.from_dict(ROWS), SAEFeaturizer(model=str(tmp_path / "llama"), sae=str(tmp_path / "sae"), layer=1))
    (tmp_path / "run.py").write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         str(tmp_path / "run.py"), json.dumps(ROWS), str(tmp_path / "llama"), str(tmp_path / "sae"), str(tmp_path / "out")],
        check=True, env=env, timeout=600, capture_output=True,
    )
    for rank in (0, 1):
        got = json.loads((tmp_path / f"out.{rank}").read_text())
        assert got["n"] == 9
        assert got["ids"] == [list(map(int, x)) for x in single["sae_ids"]]
        assert got["count"] == list(single["sae_count"])
