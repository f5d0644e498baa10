"""Weights fingerprint benchmark: the strided fingerprint (hf_ext.fingerprint) beside the two
schemes it sits between, on one real checkpoint, in the same run.

    python benchmarks/fingerprint.py [--model HUB_ID_OR_FOLDER] [--out FILE.json]

- ``first256_seconds``: the replaced scheme (first 256 values of every tensor; it accepted a base
  that differed everywhere past value 256).
- ``strided_seconds``: ``hf_ext.weights.fingerprint`` (whole tensors up to 65,536 values,
  else 1,024 windows of 16 values), file source, warm page cache.
- ``full_sha256_seconds``: sha256 of every safetensors byte (what hashing "everything" costs).
- ``in_memory_seconds``: the same fingerprint of the loaded model (``WeightSource(model)``).
- ``sampled_fraction``: values hashed / values in the model; ratios of the times.
Each time is the best of 3 (the machine is shared). ``--quick`` uses a 10M-parameter tiny Llama.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import benchmark_args, best_of, write_results  # noqa: E402


def main() -> None:
    args = benchmark_args(__doc__.split("\n")[0], lambda p: p.add_argument(
        "--model", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="Hub id (resolved offline) or model folder."))
    import math

    from hf_ext.fingerprint import sample_windows
    from hf_ext.weights import DTYPES, WeightSource, fingerprint
    from hf_ext.models import load_model, resolve_model

    tmp = None
    if args.quick:
        from hf_ext.testing import save_tiny, tiny_llama, tiny_tokenizer

        tmp = tempfile.TemporaryDirectory()
        tok = tiny_tokenizer()
        folder = save_tiny(Path(tmp.name) / "tiny", tiny_llama(tokenizer=tok, hidden_size=256, num_layers=8), tok)
    else:
        folder = Path(resolve_model(args.model))
    source = WeightSource(folder)

    def first256() -> str:
        h = hashlib.sha256()
        for key in sorted(source.keys()):
            path, start, entry = source._files[key]
            begin, end = entry["data_offsets"]
            with open(path, "rb") as f:
                f.seek(start + begin)
                raw = f.read(min(end - begin, 256 * DTYPES[entry["dtype"]].itemsize))
            h.update(f"{key}|{list(source.shape(key))}|{source.dtype(key)}|".encode())
            h.update(raw)
        return h.hexdigest()

    def full() -> str:
        h = hashlib.sha256()
        for path in sorted(folder.glob("*.safetensors")):
            with open(path, "rb") as f:
                while block := f.read(1 << 24):
                    h.update(block)
        return h.hexdigest()

    full()  # warm the page cache for every variant alike
    results = {"model": args.model if not args.quick else "tiny_llama(256, 8 layers)", "tensors": len(source.keys()),
               "model_bytes": source.nbytes()}
    results["first256_seconds"] = best_of(first256)
    results["strided_seconds"] = best_of(lambda: fingerprint(source))
    results["full_sha256_seconds"] = best_of(full)
    from transformers import AutoModelForCausalLM

    model = load_model(str(folder), AutoModelForCausalLM)
    memory = WeightSource(model)
    results["in_memory_seconds"] = best_of(lambda: fingerprint(memory))
    results["in_memory_equals_file"] = fingerprint(memory) == fingerprint(source)
    total = sum(math.prod(source.shape(k)) for k in source.keys())
    sampled = sum(length for k in source.keys() for _, length in sample_windows(math.prod(source.shape(k))))
    results["sampled_fraction"] = round(sampled / total, 5)
    results["strided_vs_full_sha256"] = round(results["strided_seconds"] / results["full_sha256_seconds"], 3)
    results["strided_vs_first256"] = round(results["strided_seconds"] / results["first256_seconds"], 1)
    write_results(args.out, results)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
