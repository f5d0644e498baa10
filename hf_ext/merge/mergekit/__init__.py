"""mergekit YAML configs, run by hf_ext's streaming merge (mergekit itself is never imported).

:func:`from_mergekit_config` reads a config in mergekit's schema — ``merge_method``, ``base_model``,
``models: [{model, parameters}]`` or ``slices: [{sources: [{model, layer_range, parameters}]}]``, global
``parameters``, ``dtype``, ``out_dtype``, ``tokenizer_source`` — and returns a :class:`MergekitMerge`
whose :meth:`~MergekitMerge.run` writes the merged model like ``mergekit-yaml CONFIG OUT``:

- **Parameters** resolve as mergekit resolves them, per output tensor: a model's own ``parameters``, then
  the slice's, then the global ones; a value is a number, a gradient (``t: [0, 0.5, 1]``, interpolated
  linearly over the layers of each slice, ``t = layer / (layers − 1)``; embeddings and the head take the
  first value) or a list of ``{filter, value}`` whose ``filter`` is a substring of the tensor name.
- **Methods** map to hf_ext's method objects (:mod:`hf_ext.merge.methods`): ``linear``, ``task_arithmetic``,
  ``ties``, ``dare_ties``, ``dare_linear``, ``della``, ``della_linear``, ``breadcrumbs``, ``breadcrumbs_ties``,
  ``slerp``, ``nuslerp``, ``model_stock``, ``passthrough``. TIES and DARE use ``convention="mergekit"``
  (signs elected on the weighted task vectors, normalised by the sum of the agreeing weights), so a ported
  config keeps its meaning; hf_ext's own recipes keep PEFT's arithmetic (``convention="peft"``).
- **Random methods** (DARE, DELLA) draw from one generator seeded once with `seed`, in mergekit's tensor
  order, so the output equals ``mergekit-yaml --random-seed SEED``.
- ``int8_mask`` changes only the dtype of mergekit's sign mask, never the result: accepted, no effect.
  hf_ext computes in float32 and casts to ``out_dtype`` (else ``dtype``, else the input's); with
  ``dtype: float32`` (or fp32 inputs) the result equals mergekit's to ≤ 1e-6.
- ``slices`` stack layers (``passthrough`` frankenmerges): the output config's ``num_hidden_layers`` is the
  sum of the slices' layer counts. Layer tensors must be named ``….layers.N.…`` (Llama, Mistral, Qwen,
  Gemma, …).

Anything else in the schema (``modules``, ``tokenizer``, ``chat_template``, LoRA references ``model+lora``,
``tokenizer_source: union``, other methods) is refused naming the key.

One concept per module: :mod:`.settings` (mergekit's parameter language and method table), :mod:`.plan` (which
tensors are merged from where, with which settings), :mod:`.config` (the parsed config and its run).
"""

from .config import MergekitMerge, from_mergekit_config, is_mergekit_config
from .settings import MERGEKIT_METHODS

__all__ = ["from_mergekit_config", "MergekitMerge", "MERGEKIT_METHODS", "is_mergekit_config"]
