"""`SAEFeaturizer`: sparse SAE feature ids per example, as a ``datasets.map`` function.

For each example it runs the model **only up to the hooked layer** (the layers above are
dropped when the model loads and a forward hook stops the pass right after the layer, so no
compute is spent above it, nor on an LM head), encodes that layer's residual stream with a
sparse autoencoder, and adds per-example columns:

- ``sae_ids``: the latents activated (value > ``threshold``) at any non-padding, non-BOS token;
- ``sae_values``: their max-pooled values (same order);
- ``sae_count``: how many (the example's "richness" |F(x)|);
- ``sae_embedding``: the mean-pooled hidden state (for k-center and diversity), optional;
- ``sae_truncated``: whether the text was cut at ``max_length`` (counted, never an error).

Nothing dense over the latents is stored. Examples are sorted by length inside each map batch
and cut into micro-batches under a token budget, then put back in order. A decoder's micro-batch
is one packed row (``position_ids`` restarting per example, causal SDPA per example with the
GQA heads shared inside the kernel: no padding, no dense mask); an encoder's is right-padded.
Instruction + response go through the model's chat template when it has one (the paper's
setting), else they are joined with a blank line.

The callable pickles to its settings only (the model and SAE load lazily in each worker), so
``datasets`` fingerprints it from model id + revision + layer + SAE id + threshold (+ the
SAE file's size and mtime for a local SAE), never from weights; ``num_proc`` works, and
:func:`hf_ext.dist.map_features` shards by rank under ``accelerate launch`` / ``torchrun`` and gathers.

>>> from hf_ext.select.sae import SAEFeaturizer
>>> fn = SAEFeaturizer(model="HuggingFaceTB/SmolLM2-135M-Instruct", sae="org/sae-repo", sae_subfolder="layers.15", layer=15)
>>> fn.output_columns()
['sae_ids', 'sae_values', 'sae_count', 'sae_embedding', 'sae_truncated']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...models import check_dtype
from ..columns import join_prompt, require_columns, require_strings

logger = logging.getLogger(__name__)
_IMPORT_PID = os.getpid()  # a different pid in load() means a forked worker (datasets num_proc)


class _StopForward(Exception):
    """Raised by the hook on the target layer: carries its output and ends the forward pass."""

    def __init__(self, hidden):
        self.hidden = hidden


def decoder_layers(model) -> tuple[Any, str, Any]:
    """(parent module, attribute name, ModuleList) of the model's transformer blocks.

    Args:
        model (`transformers.PreTrainedModel`):
            The model; its blocks are the `nn.ModuleList` as long as `config.num_hidden_layers`.
    """
    import torch

    n = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and n:
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, attr, module
    raise InputError(f"Could not find the {n} transformer layers of {type(model).__name__}; SAEFeaturizer supports "
                     "models whose blocks are one nn.ModuleList (Llama, Mistral, Qwen, GPT-2, BERT families).")


def resolve_layer(layer: int, num_layers: int, model_name: str) -> int:
    """The 0-based index of `layer` (negative counts from the end); an `InputError` when out of range.

    Args:
        layer (`int`):
            Block index, 0-based, or negative from the end (-1 = last).
        num_layers (`int`):
            Number of blocks of the model.
        model_name (`str`):
            The model's id, for the error message.
    """
    if not -num_layers <= layer < num_layers:
        raise InputError(f"Unknown layer index {layer}: {model_name} has {num_layers} layers (0..{num_layers - 1}, "
                         "or negative to count from the end, -1 = last).")
    return layer % num_layers


@dataclass
class SAEFeaturizer:
    """``ds.map(SAEFeaturizer(...), batched=True)``: SAE feature ids per example.

    Args:
        model (`str`, *optional*, defaults to `"sentence-transformers/all-MiniLM-L6-v2"`):
            Hub id or folder of a transformers model (decoder or encoder); packaged copies resolve offline through
            `hf_ext.models`.
        sae (`str` or `None`, *optional*, defaults to `None`):
            Hub repo or folder of the SAE (sparsify or sae-lens layout); ``None`` only to read hidden states (what
            the SAE trainer does).
        layer (`int`, *optional*, defaults to `-1`):
            Block whose output the SAE reads (0-based; -1 = last). Same convention as sparsify's ``layers.N`` and
            sae-lens' ``blocks.N.hook_resid_post``.
        sae_subfolder (`str` or `None`, *optional*, defaults to `None`):
            The SAE's folder inside ``sae`` (``layers.15``), if it holds several.
        sae_format (`str`, *optional*, defaults to `"auto"`):
            Weight layout of the SAE: ``"sparsify"``, ``"sae_lens"`` or ``"auto"`` (detected from the weight
            file's name).
        threshold (`float`, *optional*, defaults to `0.0`):
            A latent counts as activated when its value is above this (paper: 10 on its SAE).
        revision (`str` or `None`, *optional*, defaults to `None`):
            Revision (branch, tag or commit) of `model` on the Hub; part of the fingerprint.
        instruction_column (`str` or `None`, *optional*, defaults to `"instruction"`):
            Column with the instruction (the user turn); `None` when the data has none.
        input_column (`str` or `None`, *optional*, defaults to `"input"`):
            Column with the optional input, joined to the instruction after a blank line; `None` when the data
            has none.
        response_column (`str` or `None`, *optional*, defaults to `"output"`):
            Column with the response (the assistant turn); `None` to read prompts only.
        text_column (`str` or `None`, *optional*, defaults to `None`):
            Column of plain text read as is (no chat template) instead of the instruction/input/response columns.
        use_chat_template (`bool`, *optional*, defaults to `True`):
            Format instruction + response with the tokenizer's chat template when it has one (the paper's
            setting); otherwise they are joined with a blank line.
        max_length (`int`, *optional*, defaults to `512`):
            Tokens per example at most (also capped by the model's context); longer texts are truncated and
            flagged in ``sae_truncated``.
        batch_size (`int`, *optional*, defaults to `32`):
            Rows per forward micro-batch at most.
        max_batch_tokens (`int`, *optional*, defaults to `8192`):
            Tokens per forward micro-batch (a decoder's are packed, so all are real; an encoder's count padding);
            ``batch_size`` caps its rows.
        store_embedding (`bool`, *optional*, defaults to `True`):
            Also add ``sae_embedding``, the mean-pooled hidden state (kcenter and the diversity report read it).
        prefix (`str`, *optional*, defaults to `"sae"`):
            Prefix of the added columns (``<prefix>_ids``, ...); pass the same ``prefix=`` to the selectors.
        device (`str` or `None`, *optional*, defaults to `None`):
            Where the model and SAE run (``"cuda"``, ``"cpu"``); `None`: CUDA when available.
        dtype (`str`, *optional*, defaults to `"float32"`):
            Weights and activations of the model and the SAE: ``"float32"`` (default, exact), ``"bfloat16"``
            (about 2× faster on GPUs and on CPUs with AMX/AVX512-BF16, the paper's precision; a latent right at the
            threshold may flip) or ``"float16"``. Pooled values are stored as float32 either way.
    """

    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    sae: str | None = None
    layer: int = -1
    sae_subfolder: str | None = None
    sae_format: str = "auto"
    threshold: float = 0.0
    revision: str | None = None
    instruction_column: str | None = "instruction"
    input_column: str | None = "input"
    response_column: str | None = "output"
    text_column: str | None = None
    use_chat_template: bool = True
    max_length: int = 512
    batch_size: int = 32
    max_batch_tokens: int = 8192
    store_embedding: bool = True
    prefix: str = "sae"
    device: str | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self._model = self._tok = self._sae = None
        if self.text_column is None and not (self.instruction_column or self.response_column):
            raise InputError("SAEFeaturizer needs text_column, or instruction_column and/or response_column.")
        if self.max_length < 2:
            raise InputError(f"max_length must be at least 2 tokens, got {self.max_length}.")
        check_dtype(self.dtype, "SAEFeaturizer.dtype")

    # -- pickling / fingerprint --------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = asdict(self)
        state["_sae_stamp"] = _sae_stamp(self.sae, self.sae_subfolder)  # a changed local SAE is a new fingerprint
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**{f.name: state[f.name] for f in fields(self)})

    def output_columns(self) -> list[str]:
        cols = ["ids", "values", "count"] + (["embedding"] if self.store_embedding else []) + ["truncated"]
        return [f"{self.prefix}_{c}" for c in cols]

    # -- lazy loading ------------------------------------------------------------------------
    def _device(self):
        import torch

        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def load(self) -> SAEFeaturizer:
        """Load tokenizer, model (cut after `layer`) and SAE; called on first use in each worker."""
        if self._model is not None:
            return self
        import torch

        from ...models import load_model, load_tokenizer

        if os.getpid() != _IMPORT_PID:
            # A forked datasets worker: OpenMP's pool does not survive fork (the first parallel op
            # would hang), and num_proc workers already share the cores. One thread each.
            torch.set_num_threads(1)

        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the base model loads from a *ForCausalLM checkpoint: its head is unused
        try:
            tok = load_tokenizer(self.model, revision=self.revision)
            model = load_model(self.model, revision=self.revision, dtype=getattr(torch, self.dtype)).eval()
        finally:
            hf_logging.set_verbosity(verbosity)
        parent, attr, layers = decoder_layers(model)
        self.layer_index = resolve_layer(self.layer, len(layers), self.model)
        # Drop the blocks above the hooked one (memory) and stop right after it (compute).
        setattr(parent, attr, torch.nn.ModuleList(list(layers)[: self.layer_index + 1]))
        getattr(parent, attr)[self.layer_index].register_forward_hook(_stop_hook)
        self.packed = _use_packed_attention(model)
        if self.dtype != "float32":
            _low_precision_rms_norms(model)  # the float32 path keeps transformers' modules (and its ids) as they are
        self.hidden_size = int(model.config.hidden_size)
        context = getattr(model.config, "max_position_embeddings", None) or self.max_length
        self.max_tokens = min(self.max_length, int(context))
        self.special_ids = set(tok.all_special_ids)
        if self.sae is not None:
            from .model import TopKSAE

            sae = TopKSAE.from_pretrained(self.sae, self.sae_subfolder, format=self.sae_format)
            if sae.d_in != self.hidden_size:
                raise InputError(f"SAE width mismatch: the SAE reads {sae.d_in}-dimensional activations, but {self.model} "
                                 f"has hidden size {self.hidden_size}. Use an SAE trained on this model.")
            self._sae = sae.to(self._device(), getattr(torch, self.dtype)).eval()
        self._tok, self._model = tok, model.to(self._device())
        if self.packed and not self._packed_matches_padded():
            logger.warning("SAEFeaturizer: %s does not pass the packing boundaries to its attention; using padded batches.", self.model)
            self._model.set_attn_implementation("sdpa")
            self.packed = False
        return self

    def _packed_matches_padded(self) -> bool:
        """One packed row of two short sequences gives each sequence's own forward (a model whose
        layers drop the ``cu_seq_lens_q`` keyword would attend across them and fail this)."""
        import torch

        seqs = [[5, 9, 3, 7], [4, 8, 6]]
        self.packed = True
        rows, inputs, keep, _ = next(self.model_inputs(seqs))
        with torch.inference_mode():
            packed = self._forward(**inputs)[0]
            alone = [self._forward(torch.tensor([seqs[r]], device=self._device()))[0] for r in rows]
        return torch.allclose(packed, torch.cat(alone), rtol=1e-2, atol=1e-2)

    # -- text -> token ids -------------------------------------------------------------------
    def texts(self, batch: dict[str, list]) -> list[str]:
        if self.text_column:
            require_columns(batch.keys(), [self.text_column], what="SAEFeaturizer")
            texts = batch[self.text_column]
            require_strings(texts, self.text_column)
            prompts, responses = texts, [None] * len(texts)
        else:
            require_columns(batch.keys(), [self.instruction_column, self.input_column, self.response_column], what="SAEFeaturizer")
            n = len(next(iter(batch.values())))
            col = lambda name: batch[name] if name else [None] * n  # noqa: E731
            for name in (self.instruction_column, self.response_column):
                if name:
                    require_strings(batch[name], name)
            if self.input_column:
                require_strings(batch[self.input_column], self.input_column, allow_none=True)
            prompts = [join_prompt(i or "", x) for i, x in zip(col(self.instruction_column), col(self.input_column))]
            responses = list(col(self.response_column))
        for i, (p, r) in enumerate(zip(prompts, responses)):
            if not (p or "").strip() and not (r or "").strip():
                raise InputError(f"Row {i} of this map batch has empty text (no instruction, input or response). "
                                 "Drop such rows first, e.g. ds.filter(lambda x: x['output'].strip() != '').")
        chat = self.use_chat_template and getattr(self._tok, "chat_template", None) and not self.text_column
        if chat:
            return [self._tok.apply_chat_template(_messages(p, r), tokenize=False) for p, r in zip(prompts, responses)]
        return [p if r is None else (f"{p}\n\n{r}" if p else r) for p, r in zip(prompts, responses)]

    def token_ids(self, batch: dict[str, list]) -> tuple[list[list[int]], list[bool]]:
        texts = self.texts(batch)
        chat = self.use_chat_template and getattr(self._tok, "chat_template", None) and not self.text_column
        ids = self._tok(texts, add_special_tokens=not chat, verbose=False)["input_ids"]
        truncated = [len(x) > self.max_tokens for x in ids]
        if any(truncated):
            logger.info("SAEFeaturizer: truncated %d of %d examples to %d tokens.", sum(truncated), len(ids), self.max_tokens)
        return [x[: self.max_tokens] for x in ids], truncated

    # -- forward -----------------------------------------------------------------------------
    def micro_batches(self, lengths: list[int]) -> Iterator[list[int]]:
        """Row indices grouped by similar length under the token budget (longest first).

        Packed (decoders): the budget counts real tokens. Padded (encoders): rows × the longest row.
        """
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        start = 0
        while start < len(order):
            if getattr(self, "packed", False):
                rows, total = 0, 0
                while start + rows < len(order) and rows < self.batch_size and (
                        rows == 0 or total + lengths[order[start + rows]] <= self.max_batch_tokens):
                    total += lengths[order[start + rows]]
                    rows += 1
            else:
                rows = max(1, min(self.batch_size, self.max_batch_tokens // max(lengths[order[start]], 1)))
            yield order[start:start + rows]
            start += rows

    @staticmethod
    def padded(ids: list[list[int]], rows: list[int], pad: int):
        """Right-padded ``input_ids`` and ``attention_mask`` (CPU) of the given rows."""
        import torch

        width = max(len(ids[r]) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            input_ids[j, : len(ids[r])] = torch.tensor(ids[r])
            attention[j, : len(ids[r])] = 1
        return input_ids, attention

    def model_inputs(self, ids: list[list[int]]) -> Iterator[tuple[list[int], dict[str, Any], Any, Any]]:
        """For each micro-batch: (row indices, the model's keyword inputs on the device, kept-token
        mask over the output positions, row of each kept token). What the forward sees, nothing else.

        Decoders get one packed row: the sequences concatenated, ``position_ids`` restarting at 0
        and the boundaries as ``cu_seq_lens_q`` (varlen FlashAttention's convention), which the
        packed attention reads: no padding and no mask. Encoders get right-padded rows. Kept tokens
        are real (not padding) and not a special token in position 0 (BOS/CLS).
        """
        import torch

        self.load()
        device, pad = self._device(), self._tok.pad_token_id if self._tok.pad_token_id is not None else 0
        for rows in self.micro_batches([len(x) for x in ids]):
            first_special = torch.tensor([bool(ids[r]) and ids[r][0] in self.special_ids for r in rows])
            if self.packed:
                lengths = torch.tensor([len(ids[r]) for r in rows])
                starts = torch.cumsum(lengths, 0) - lengths
                flat = torch.tensor([t for r in rows for t in ids[r]], dtype=torch.long)
                positions = torch.arange(len(flat)) - torch.repeat_interleave(starts, lengths)
                keep = torch.ones(len(flat), dtype=torch.bool)
                keep[starts[first_special]] = False
                token_rows = torch.repeat_interleave(torch.arange(len(rows)), lengths)[keep]
                cu = torch.cat([starts, lengths.sum()[None]]).to(torch.int32)
                inputs = {"input_ids": flat[None].to(device), "position_ids": positions[None].to(device), "cu_seq_lens_q": cu,
                          "cu_seq_lens_k": cu, "max_length_q": int(lengths.max()), "max_length_k": int(lengths.max())}
                yield rows, inputs, keep.to(device), token_rows.to(device)
                continue
            input_ids, attention = self.padded(ids, rows, pad)
            keep = attention.bool()
            keep[:, 0] &= ~first_special
            token_rows = torch.arange(len(rows))[:, None].expand_as(keep)[keep]
            mask = None if len(ids[rows[-1]]) == input_ids.shape[1] else attention.to(device)  # unpadded: no mask
            yield rows, {"input_ids": input_ids.to(device), "attention_mask": mask}, keep.to(device), token_rows.to(device)

    def hidden_states(self, ids: list[list[int]]) -> Iterator[tuple[list[int], Any, Any]]:
        """For each micro-batch: (row indices, hidden states [n_tok, d] of kept tokens, row of each token)."""
        import torch

        for rows, inputs, keep, token_rows in self.model_inputs(ids):
            with torch.inference_mode():
                hidden = self._forward(**inputs)
                yield rows, hidden.reshape(-1, hidden.shape[-1])[keep.reshape(-1)], token_rows

    def _forward(self, input_ids, attention_mask=None, **kwargs):
        try:
            out = self._model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs) if _is_decoder(self._model) \
                else self._model(input_ids=input_ids, attention_mask=attention_mask)
        except _StopForward as stop:
            return stop.hidden
        raise RuntimeError("The forward pass did not reach the hooked layer.")  # pragma: no cover

    # -- SAE encoding ------------------------------------------------------------------------
    def encode(self, hidden, token_rows, num_rows: int):
        """Max-pool the SAE latents above threshold per row: (row, latent id, value) triples, sorted."""
        import torch

        # Chunks of tokens whose dense pre-activations stay cache-sized (~16 MB at float32): the
        # encoder matmul writes a [tokens, latents] block, and a larger one is memory-bound.
        sae, chunk = self._sae, max(64, (1 << 22) // self._sae.num_latents)
        keys, vals = [], []
        for s in range(0, hidden.shape[0], chunk):
            h, r = hidden[s:s + chunk], token_rows[s:s + chunk]
            if sae.k and sae.threshold is None:  # TopK: one GEMM, then an exact top-k in two cheap stages
                x = h - sae.b_dec if sae.apply_b_dec_to_input else h
                values, ids = _topk(sae.encoder(x), sae.k)
                values = torch.relu(values)
                rr = r[:, None].expand_as(ids)
            elif sae.k:
                ids, values = sae.encode_topk(h)
                rr = r[:, None].expand_as(ids)
            else:
                z = sae.pre_acts(h)
                nz = (z > self.threshold).nonzero(as_tuple=True)
                ids, values, rr = nz[1], z[nz], r[nz[0]]
            hit = values > self.threshold
            keys.append(rr[hit].long() * sae.num_latents + ids[hit].long())
            vals.append(values[hit])
        keys, vals = torch.cat(keys), torch.cat(vals)
        uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        pooled = torch.full((uniq.numel(),), float("-inf"), device=vals.device).scatter_reduce(0, inverse, vals.float(), "amax")
        rows = uniq // sae.num_latents
        counts = torch.bincount(rows, minlength=num_rows)
        return (uniq % sae.num_latents).int().cpu().numpy(), pooled.float().cpu().numpy(), counts.cpu().numpy()

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        import torch

        self.load()
        if self._sae is None:
            raise InputError("SAEFeaturizer has no SAE: pass sae= (a folder or Hub repo), or train one with train_sae().")
        ids, truncated = self.token_ids(batch)
        n = len(ids)
        out_ids: list = [None] * n
        out_vals: list = [None] * n
        embeddings: list = [None] * n
        for rows, hidden, token_rows in self.hidden_states(ids):
            latent, value, counts = self.encode(hidden, token_rows, len(rows))
            bounds = np.concatenate([[0], np.cumsum(counts)])
            if self.store_embedding:
                sums = torch.zeros(len(rows), hidden.shape[1], device=hidden.device).index_add_(0, token_rows, hidden.float())
                tokens = torch.bincount(token_rows, minlength=len(rows)).clamp_min(1)
                mean = (sums / tokens[:, None]).float().cpu().numpy()
            for j, r in enumerate(rows):
                out_ids[r] = latent[bounds[j]:bounds[j + 1]]
                out_vals[r] = value[bounds[j]:bounds[j + 1]]
                if self.store_embedding:
                    embeddings[r] = mean[j]
        p = self.prefix
        out = {f"{p}_ids": out_ids, f"{p}_values": out_vals, f"{p}_count": [len(x) for x in out_ids]}
        if self.store_embedding:
            out[f"{p}_embedding"] = embeddings
        out[f"{p}_truncated"] = truncated
        return out

    def features(self):
        """`datasets.Features` of the added columns (fixed types even for empty id lists)."""
        from datasets import Features, List, Value

        p = self.prefix
        feats = {f"{p}_ids": List(Value("int32")), f"{p}_values": List(Value("float32")), f"{p}_count": Value("int64")}
        if self.store_embedding:
            feats[f"{p}_embedding"] = List(Value("float32"))
        feats[f"{p}_truncated"] = Value("bool")
        return Features(feats)


def _messages(prompt: str, response: str | None) -> list[dict[str, str]]:
    msgs = [{"role": "user", "content": prompt}]
    if response is not None:
        msgs.append({"role": "assistant", "content": response})
    return msgs


def _is_decoder(model) -> bool:
    return not getattr(model.config, "is_encoder_decoder", False) and getattr(model.config, "model_type", "") not in (
        "bert", "roberta", "distilbert", "xlm-roberta", "electra", "deberta", "deberta-v2", "mpnet")


def _topk(z, k: int):
    """``z.topk(k, dim=-1, sorted=False)`` as (values, ids), exactly, at a fraction of its cost on wide rows.

    The row is cut into groups of 32; a group holding one of the k largest values has its own
    maximum among the k largest group maxima (else k groups would each hold a larger value), so
    the top k of the row are the top k of those k groups' 32·k values. The pick may differ from
    ``topk``'s only among exactly equal values, which carry the same value either way.
    """
    n, width = z.shape
    group = 32
    if width % group or width <= 4 * group * k:
        values, ids = z.topk(k, dim=-1, sorted=False)
        return values, ids
    grouped = z.view(n, width // group, group)
    best = grouped.amax(-1).topk(k, dim=-1, sorted=False).indices  # [n, k] groups
    candidates = grouped.gather(1, best[:, :, None].expand(n, k, group)).view(n, k * group)
    values, pos = candidates.topk(k, dim=-1, sorted=False)
    ids = best.gather(1, pos // group) * group + pos % group
    return values, ids


PACKED_ATTENTION = "hf_ext_packed_sdpa"


def _packed_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, cu_seq_lens_q=None, **kwargs):
    """Causal SDPA over the sequences of a packed row (boundaries in ``cu_seq_lens_q``), GQA inside the
    kernel, no mask. Without boundaries it is transformers' ``sdpa``.

    Sequences of similar length (the row is sorted longest first) are stacked right-padded into one
    SDPA call with ``is_causal``: a real query only sees keys at or before it, so the padding never
    reaches it and needs no mask. One call per group, not per sequence: each call is a parallel
    region, and many short ones cost more than they compute on a few (shared) cores.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None or attention_mask is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    bounds = cu_seq_lens_q.tolist()
    out = query.new_empty(query.shape[0], query.shape[2], query.shape[1], value.shape[-1])
    for starts, lengths in _attention_groups(bounds):
        width, n = max(lengths), torch.tensor(lengths, device=query.device)
        steps = torch.arange(width, device=query.device)[None]
        pos = (torch.tensor(starts, device=query.device)[:, None] + torch.minimum(steps, n[:, None] - 1)).reshape(-1)
        take = lambda x: x[0][:, pos].view(x.shape[1], len(starts), width, x.shape[-1]).transpose(0, 1)  # noqa: E731  [B, H, W, D]
        o = torch.nn.functional.scaled_dot_product_attention(take(query), take(key), take(value), scale=scaling,
                                                             is_causal=width > 1, enable_gqa=gqa)
        # The group's sequences are consecutive in the row: their real positions, in order, fill it.
        out[0, starts[0]:starts[0] + sum(lengths)] = o.transpose(1, 2)[steps < n[:, None]]
    return out, None


def _attention_groups(bounds: list[int], slack: float = 1.25) -> Iterator[tuple[list[int], list[int]]]:
    """Consecutive sequences of a packed row, grouped while the padded size stays within ``slack`` × the real one."""
    starts, lengths = bounds[:-1], [e - s for s, e in zip(bounds[:-1], bounds[1:])]
    i = 0
    while i < len(starts):
        j, width = i + 1, lengths[i]
        while j < len(starts):
            w = max(width, lengths[j])
            if w * (j + 1 - i) > slack * sum(lengths[i:j + 1]):
                break
            width, j = w, j + 1
        yield starts[i:j], lengths[i:j]
        i = j


def _use_packed_attention(model) -> bool:
    """Decoders on transformers' attention interface with sdpa get the packed attention (registered once)."""
    if not (_is_decoder(model) and getattr(model, "_supports_attention_backend", False)
            and getattr(model.config, "_attn_implementation", None) == "sdpa" and getattr(model.config, "is_causal", True)):
        return False
    from transformers import AttentionInterface

    if PACKED_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(PACKED_ATTENTION, _packed_sdpa)
    model.set_attn_implementation(PACKED_ATTENTION)
    return True


def _low_precision_rms_norms(model) -> None:
    """RMSNorms in bfloat16/float16 without a float32 copy of the activations: the sum of squares is
    accumulated in float32 inside ``vector_norm`` and only the per-token scale is float32."""
    import torch

    def forward(self, x):
        eps = getattr(self, "variance_epsilon", getattr(self, "eps", 1e-6))
        ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32).square_() / x.shape[-1]
        return (x * ms.add_(eps).rsqrt_().to(x.dtype)).mul_(self.weight)

    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm") and getattr(module, "weight", None) is not None and \
                hasattr(module, "variance_epsilon") and getattr(module, "weight", None).shape == (model.config.hidden_size,):
            module.forward = forward.__get__(module)


def _stop_hook(module, args, output):
    raise _StopForward(output[0] if isinstance(output, tuple) else output)


def _sae_stamp(sae: str | None, subfolder: str | None) -> list:
    """Cheap identity of a local SAE: its cfg.json and the weight files' size + mtime (never their bytes)."""
    if sae is None or not Path(sae).expanduser().exists():
        return []
    folder = Path(sae).expanduser() / (subfolder or "")
    stamp = []
    for name in ("cfg.json", "sae.safetensors", "sae_weights.safetensors"):
        f = folder / name
        if f.is_file():
            st = f.stat()
            stamp.append((name, st.st_size, st.st_mtime_ns, f.read_text() if name == "cfg.json" else ""))
    return stamp


__all__ = ["SAEFeaturizer", "decoder_layers", "resolve_layer"]
