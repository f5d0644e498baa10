"""`TimeVectorConfig`: what a saved time vector is (JSON next to its safetensors, like PEFT's adapter_config.json)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...config import read_json_object
from ...errors import InputError

CONFIG_NAME = "time_vector_config.json"
WEIGHTS_PREFIX = "time_vector"  # time_vector.safetensors, or time_vector-0000i-of-0000n.safetensors + index


@dataclass
class TimeVectorConfig:
    """Metadata of a :class:`~hf_ext.adapters.time_vector.TimeVector` τ = θ_ft − θ_base.

    Args:
        base_model (`str` or `None`, *optional*, defaults to `None`):
            Hub id (or local path) of θ_base, the model τ applies to.
        base_fingerprint (`str` or `None`, *optional*, defaults to `None`):
            Fingerprint of θ_base's weights; applying τ to another model is an error unless forced.
        period (`str` or `None`, *optional*, defaults to `None`):
            The period the vector moves the base to, e.g. '2016'.
        relation (`str`, *optional*, defaults to `"finetune"`):
            How τ was made: finetune, lora, interpolation, analogy or arithmetic.
        finetuned_model (`str` or `None`, *optional*, defaults to `None`):
            Hub id of θ_ft when τ = θ_ft − θ_base.
        formula (`str` or `None`, *optional*, defaults to `None`):
            The arithmetic that built τ, e.g. '0.3·τ(2012) + 0.7·τ(2016)'.
        extra (`dict[str, Any]`, *optional*, defaults to `{}`):
            Free-form metadata (training data, metrics).
        peft_type (`str`, *optional*, defaults to `"TIME_VECTOR"`):
            Marks the folder as an hf_ext time vector.
    """

    base_model: str | None = field(default=None, metadata={"help": "Hub id (or local path) of θ_base, the model τ applies to."})
    base_fingerprint: str | None = field(default=None, metadata={"help": "Fingerprint of θ_base's weights; applying τ to another model is an error unless forced."})
    period: str | None = field(default=None, metadata={"help": "The period the vector moves the base to, e.g. '2016'."})
    relation: str = field(default="finetune", metadata={"help": "How τ was made: finetune, lora, interpolation, analogy or arithmetic."})
    finetuned_model: str | None = field(default=None, metadata={"help": "Hub id of θ_ft when τ = θ_ft − θ_base."})
    formula: str | None = field(default=None, metadata={"help": "The arithmetic that built τ, e.g. '0.3·τ(2012) + 0.7·τ(2016)'."})
    extra: dict[str, Any] = field(default_factory=dict, metadata={"help": "Free-form metadata (training data, metrics)."})
    peft_type: str = field(default="TIME_VECTOR", metadata={"help": "Marks the folder as an hf_ext time vector."})

    def save(self, folder: str | os.PathLike) -> None:
        """Write the config as ``time_vector_config.json``.

        Args:
            folder (`str` or `os.PathLike`):
                An existing folder (the time vector's).
        """
        Path(folder, CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(self), indent=2, default=str) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> TimeVectorConfig:
        """Read ``time_vector_config.json``; keys that are not fields are ignored.

        Args:
            folder (`str` or `os.PathLike`):
                A saved time vector's folder.
        """
        path = Path(folder, CONFIG_NAME)
        if not path.is_file():
            raise InputError(f"{str(folder)!r} has no {CONFIG_NAME}: it is not a saved time vector (TimeVector.save_pretrained writes one).")
        data = read_json_object(path, "save the time vector again with TimeVector.save_pretrained")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
