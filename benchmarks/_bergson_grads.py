"""bergson's gradient collection on hf_ext's examples, for ``benchmarks/less.py --bergson``.

Runs in a separate environment that has ``bergson`` (it pulls a CUDA torch; see
ENVIRONMENT.md), never in hf_ext's own: ``less.py`` starts it as a subprocess with that
environment's python and reads back a ``.npz``. Input: a JSON spec with the LoRA checkpoint
folder (its ``adapter_config.json`` names the base model), the tokenised rows (``input_ids``,
``labels`` with -100 on prompt tokens, exactly those hf_ext featurized), the micro-batches
(lists of row indices, as hf_ext batched them), the projection dimension and seed, and the
thread count. For each requested projection mode it builds bergson's gradient index with
bergson's own API (``setup_model_and_peft`` → ``create_processor`` → ``collect_gradients``,
what ``bergson build`` runs) and writes the per-example projected gradients and the
collection's wall time.

    python benchmarks/_bergson_grads.py SPEC.json OUT.npz

The environment used for the numbers in the LESS issue (CPU torch first, then bergson and its
torch add-on without their CUDA requirements; bitsandbytes and torchaudio are not imported on
this path):

    python -m venv /work/venv-bergson
    /work/venv-bergson/bin/pip install torch==2.13.0          # the CPU build
    /work/venv-bergson/bin/pip install transformers==5.24.0 peft==0.21.2 datasets==5.2.0 accelerate==1.15.0 \
        jaxtyping ml_dtypes natsort petname simple-parsing optree
    /work/venv-bergson/bin/pip install --no-deps bergson==2.5.1 torchopt torchvision==0.28.0
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path


def main(spec_path: str, out_path: str) -> None:
    import numpy as np

    spec = json.loads(Path(spec_path).read_text())
    result: dict = {"bergson_error": None}
    try:
        import torch

        torch.set_num_threads(int(spec["threads"]))
        import bergson
        from bergson import collect_gradients, load_gradients
        from bergson.config.config import IndexConfig
        from bergson.utils.worker_utils import create_processor, setup_model_and_peft
        from datasets import Dataset

        result["bergson_version"] = bergson.__version__
        result["torch_version"] = torch.__version__
        rows = spec["rows"]
        data = Dataset.from_dict({"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"] for r in rows],
                                  "length": [len(r["input_ids"]) for r in rows]})
        for mode in spec["modes"]:
            # global: one d-dimensional Rademacher JL of the whole flattened gradient (LESS's projection);
            # per_module: bergson's default, a p x p two-sided projection of every module's gradient.
            dim = spec["proj_dim"] if mode == "global" else spec["per_module_dim"]
            run = Path(spec["run_dir"]) / mode
            cfg = IndexConfig(run_path=str(run), model=spec["checkpoint"], precision="fp32", projection_dim=dim,
                              projection_type="rademacher", projection_target=mode, projection_seed=spec["seed"],
                              loss_reduction="mean", overwrite=True)
            cfg.partial_run_path.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            model, target_modules = setup_model_and_peft(cfg)
            model.eval()  # no LoRA dropout, like hf_ext's featurizer
            processor = create_processor(model, cfg, target_modules)
            load_s = time.perf_counter() - start
            # Warm-up on the first micro-batch (allocations, first-call overheads), then the timed run.
            warm = Path(spec["run_dir"]) / f"{mode}-warmup"
            wcfg = IndexConfig(**{**cfg.__dict__, "run_path": str(warm)})
            wcfg.partial_run_path.mkdir(parents=True, exist_ok=True)
            collect_gradients(model, data.select(spec["batches"][0]), processor, wcfg,
                              batches=[list(range(len(spec["batches"][0])))], target_modules=target_modules)
            start = time.perf_counter()
            collect_gradients(model, data, processor, cfg, batches=spec["batches"], target_modules=target_modules)
            seconds = time.perf_counter() - start
            grads = np.asarray(load_gradients(cfg.partial_run_path), dtype=np.float32)
            result[f"{mode}_features"] = grads
            result[f"{mode}_seconds"] = seconds
            result[f"{mode}_load_seconds"] = load_s
            result[f"{mode}_tracked_modules"] = len(target_modules or ())
    except Exception as exc:  # reported, not raised: less.py records why bergson could not run
        result["bergson_error"] = f"{type(exc).__name__}: {exc}"
        result["bergson_traceback"] = traceback.format_exc()
    np.savez(out_path, **{k: (v if isinstance(v, np.ndarray) else np.array(json.dumps(v))) for k, v in result.items()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
