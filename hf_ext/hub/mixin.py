"""One ``push_to_hub`` for the hf_ext objects that save to a folder and have a model card."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

__all__ = ["PushToHubMixin"]


class PushToHubMixin:
    """``push_to_hub`` with one signature for every hf_ext object saved with ``save_pretrained``.

    The signature follows ``huggingface_hub.ModelHubMixin.push_to_hub`` and transformers'
    ``PushToHubMixin.push_to_hub``: the repo id, then keyword-only Hub options. The object is saved
    to a temporary folder, its card is written as ``README.md`` and the folder goes up as one commit
    of a model repo through :func:`hf_ext.hub.push_folder` (which checks every safetensors file
    first). The card is rendered before anything is saved, so a card that cannot be made (a missing
    ``base_model``) refuses the push before any work.

    A class using it defines ``save_pretrained(folder, **save_kwargs)`` and
    ``model_card(**model_card_kwargs)`` (a ``huggingface_hub.ModelCard``). It may override
    ``_hub_card(repo_id, **model_card_kwargs)`` when the card names the repo, and
    ``_hub_commit_message()`` for the default commit summary.
    """

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        endpoint: str | None = None,
        model_card_kwargs: dict[str, Any] | None = None,
        **save_kwargs: Any,
    ) -> Any:
        """Save to a temporary folder with the card as ``README.md`` and upload it in one commit.

        Args:
            repo_id (`str`):
                ``namespace/name`` of the model repo; created if it does not exist.
            commit_message (`str`, *optional*):
                Commit summary; defaults to one naming the object.
            private (`bool`, *optional*):
                Create the repo private; ``None`` (default) creates it public. Ignored for an existing repo.
            token (`str`, *optional*):
                Access token with write access; ``None`` uses ``HF_TOKEN`` or the saved login.
            revision (`str`, *optional*):
                Branch to commit to (created from ``main`` if missing); ``None`` means ``main``.
            endpoint (`str`, *optional*):
                Hub URL; ``None`` means ``HF_ENDPOINT`` or https://huggingface.co.
            model_card_kwargs (`dict`, *optional*):
                Passed to ``model_card`` (e.g. a summary or evaluation results).
            **save_kwargs:
                Passed to ``save_pretrained`` (e.g. ``dtype``, ``format``).

        Returns:
            The ``huggingface_hub.CommitInfo`` of the commit.
        """
        from .sync import push_folder

        card = self._hub_card(repo_id, **(model_card_kwargs or {}))
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, **save_kwargs)
            card.save(str(Path(tmp) / "README.md"))
            return push_folder(tmp, repo_id, repo_type="model", endpoint=endpoint, token=token, private=bool(private),
                               commit_message=commit_message or self._hub_commit_message(), revision=revision)

    def _hub_card(self, repo_id: str, **model_card_kwargs: Any) -> Any:
        return self.model_card(**model_card_kwargs)

    def _hub_commit_message(self) -> str:
        return f"Upload {type(self).__name__} with hf_ext"
