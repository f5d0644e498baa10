"""`StitchConfig`: where the stitch layers of Branch-Train-Stitch (arXiv 2502.00075) go and how
they start. Saved as ``stitch_config.json`` beside ``stitch_model.safetensors``."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ...config import read_json_object
from ...errors import InputError

CONFIG_NAME = "stitch_config.json"
WEIGHTS_NAME = "stitch_model.safetensors"


@dataclass
class StitchConfig:
    """Stitch layers joining a frozen seed ("hub") with frozen experts branched from it.

    One stitch layer follows every ⌊L/K⌋ transformer layers (or the layers named in
    ``stitch_after``). Types alternate between hub-into-experts (H2E) and experts-into-hub
    (E2H) so that the last one is E2H: the stitched model's output is the hub's output.

    Initialisation (our choice beyond the paper): projections start as identities and gate
    weights at zero, and the hub's gate logit gets a fixed offset ``gate_offset``. An E2H
    softmax then gives the hub a weight of 1 − n·e^(−β) and an H2E sigmoid σ(z_i − z_0)
    gives every expert e^(−β): at step 0 the stitched model equals the seed (to fp32
    rounding for β ≥ 16) and every expert runs as if alone. Adam's per-coordinate step size
    does not depend on the (small) gradient scale, so the gates still open during training.

    Args:
        expert_names (`list[str]`, *optional*):
            Names of the experts, in order (the keys of `experts` when loading).
        num_stitch_layers (`int`, *optional*, defaults to `4`):
            K, the number of stitch layers (one after every floor(L/K) layers).
        stitch_after (`list[int]` or `None`, *optional*, defaults to `None`):
            Explicit 1-based layer indices after which a stitch layer runs (overrides num_stitch_layers).
        dropout (`float`, *optional*, defaults to `0.0`):
            Dropout on the projected states inside the stitch layers (training only).
        init (`Literal['identity', 'random']`, *optional*, defaults to `"identity"`):
            'identity': stitched model equals the seed at step 0; 'random': normal gate weights (ablations).
        gate_offset (`float`, *optional*, defaults to `16.0`):
            Fixed offset beta added to the hub's gate logit (not trained); e^-beta is the experts' share at step 0. A saved
            config holds the beta the layers used when saved (StitchTrainer anneals it).
        width_projections (`bool`, *optional*, defaults to `False`):
            Allow experts whose hidden size differs from the seed's: their projections are rectangular (d_i x d, the
            identity cut or zero-padded, so step 0 still equals the seed). False: such an expert is refused.
        init_std (`float`, *optional*, defaults to `0.02`):
            Std of the gate weights when init='random'.
        seed_model (`str` or `None`, *optional*, defaults to `None`):
            Hub id of the seed (hub) model, for cards.
        expert_models (`list[str]` or `None`, *optional*, defaults to `None`):
            Hub ids of the experts (same order as expert_names), for cards.
        num_hidden_layers (`int` or `None`, *optional*, defaults to `None`):
            Depth L of the seed (set from the models).
        hub_hidden_size (`int` or `None`, *optional*, defaults to `None`):
            Hidden size d of the seed (set from the models).
        expert_hidden_sizes (`dict[str, int]`, *optional*):
            Hidden size of each expert (set from the models).
        expert_hashes (`dict[str, str]`, *optional*):
            sha256 of each expert's config and a weight sample (set from the models); loading onto other experts fails
            unless forced.
        seed_hash (`str` or `None`, *optional*, defaults to `None`):
            Same hash of the seed (set from the models); loading onto another seed fails unless forced.
    """

    expert_names: list[str] = field(default_factory=list, metadata={"help": "Names of the experts, in order (the keys of `experts` when loading)."})
    num_stitch_layers: int = field(default=4, metadata={"help": "K, the number of stitch layers (one after every floor(L/K) layers)."})
    stitch_after: list[int] | None = field(default=None, metadata={"help": "Explicit 1-based layer indices after which a stitch layer runs (overrides num_stitch_layers)."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the projected states inside the stitch layers (training only)."})
    init: Literal["identity", "random"] = field(default="identity", metadata={"help": "'identity': stitched model equals the seed at step 0; 'random': normal gate weights (ablations)."})
    gate_offset: float = field(default=16.0, metadata={"help": "Fixed offset beta added to the hub's gate logit (not trained); e^-beta is the experts' share at step 0. A saved config holds the beta the layers used when saved (StitchTrainer anneals it)."})
    width_projections: bool = field(default=False, metadata={"help": "Allow experts whose hidden size differs from the seed's: their projections are rectangular (d_i x d, the identity cut or zero-padded, so step 0 still equals the seed). False: such an expert is refused."})
    init_std: float = field(default=0.02, metadata={"help": "Std of the gate weights when init='random'."})
    seed_model: str | None = field(default=None, metadata={"help": "Hub id of the seed (hub) model, for cards."})
    expert_models: list[str] | None = field(default=None, metadata={"help": "Hub ids of the experts (same order as expert_names), for cards."})
    # Filled in from the models when the stitched model is built; checked when loading.
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Depth L of the seed (set from the models)."})
    hub_hidden_size: int | None = field(default=None, metadata={"help": "Hidden size d of the seed (set from the models)."})
    expert_hidden_sizes: dict[str, int] = field(default_factory=dict, metadata={"help": "Hidden size of each expert (set from the models)."})
    expert_hashes: dict[str, str] = field(default_factory=dict, metadata={"help": "sha256 of each expert's config and a weight sample (set from the models); loading onto other experts fails unless forced."})
    seed_hash: str | None = field(default=None, metadata={"help": "Same hash of the seed (set from the models); loading onto another seed fails unless forced."})

    def __post_init__(self) -> None:
        if self.num_stitch_layers < 1:
            raise InputError(f"StitchConfig.num_stitch_layers must be >= 1, got {self.num_stitch_layers}.")
        if self.init not in ("identity", "random"):
            raise InputError(f"StitchConfig.init must be 'identity' or 'random', got {self.init!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"StitchConfig.dropout must be in [0, 1), got {self.dropout}.")
        if len(set(self.expert_names)) != len(self.expert_names):
            raise InputError(f"StitchConfig.expert_names has duplicates: {self.expert_names}. Give every expert its own name.")

    def placements(self, num_layers: int) -> list[int]:
        """1-based layer indices after which stitch layers run, checked against the depth."""
        if self.stitch_after is not None:
            after = sorted(set(self.stitch_after))
            if not after:
                raise InputError("StitchConfig.stitch_after is empty; give at least one layer index or set it to None.")
        else:
            if self.num_stitch_layers > num_layers:
                raise InputError(
                    f"StitchConfig.num_stitch_layers={self.num_stitch_layers} exceeds the model depth ({num_layers} layers); "
                    f"use at most {num_layers} stitch layers."
                )
            every = num_layers // self.num_stitch_layers
            after = [every * (k + 1) for k in range(self.num_stitch_layers)]
        bad = [a for a in after if not 1 <= a <= num_layers]
        if bad:
            raise InputError(
                f"StitchConfig.stitch_after has {bad} beyond the model depth: layers are numbered 1..{num_layers}. "
                "Place stitch layers after existing layers."
            )
        return after

    @staticmethod
    def layer_types(count: int) -> list[str]:
        """Alternate H2E / E2H so that the last stitch layer is E2H."""
        return ["e2h" if (count - 1 - k) % 2 == 0 else "h2e" for k in range(count)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "StitchConfig":
        path = Path(folder) / CONFIG_NAME
        if not path.is_file():
            raise InputError(f"No {CONFIG_NAME} in {str(folder)!r}; is this a folder written by StitchedModel.save_pretrained?")
        data = read_json_object(path, "save the stitch layers again with StitchedModel.save_pretrained")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{path} has unknown keys {unknown}; it was written by a newer hf_ext or is not a stitch config.")
        return cls(**data)
