"""Text-generation backends shared by the judge scorers and critique generation.

Two backends with one interface, ``backend.generate(conversations) -> list[str]``, where a
conversation is a list of ``{"role": ..., "content": ...}`` messages:

- :class:`TransformersBackend`: a local causal LM (batched ``generate`` with its chat
  template), loaded lazily through :mod:`hf_ext.models` so packaged copies run offline.
- :class:`OpenAIBackend`: any server with ``/v1/chat/completions`` (vLLM, TGI, llama.cpp,
  OpenAI). The API key is read from the environment variable named by ``api_key_env`` and is
  never printed or pickled.

Both hold only their settings when pickled, so a scorer that captures one hashes cheaply for
``datasets.map`` fingerprints and can be sent to ``num_proc`` workers.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import HfExtError, InputError, redact
from ..models import check_dtype

Conversation = list[dict[str, str]]
ResultCallback = Callable[[int, str], None]


class BackendError(HfExtError, RuntimeError):
    """A generation request failed after its retries (credentials in the message are redacted).

    Args:
        message (`str`):
            What failed; passed through `hf_ext.errors.redact` so keys and tokens in it are masked.
    """

    def __init__(self, message: str):
        super().__init__(redact(message))


def _identity(backend: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return {"backend": type(backend).__name__, **{name: getattr(backend, name) for name in fields}}


@dataclass
class TransformersBackend:
    """Generate with a local transformers causal LM.

    Args:
        model (`str`, *optional*, defaults to `"HuggingFaceTB/SmolLM2-135M-Instruct"`):
            Hub id or local path (packaged copies are resolved by `hf_ext.models`).
        max_new_tokens (`int`, *optional*, defaults to `64`):
            Tokens to generate per conversation.
        temperature (`float`, *optional*, defaults to `0.0`):
            0 means greedy decoding.
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus-sampling probability mass; used only when `temperature` > 0.
        batch_size (`int`, *optional*, defaults to `8`):
            Conversations per `generate` call (similar lengths together, left padding).
        device (`str` or `None`, *optional*, defaults to `None`):
            Torch device; defaults to CUDA when available.
        revision (`str` or `None`, *optional*, defaults to `None`):
            Hub revision (branch, tag or commit) of `model` for the tokenizer and weights (None: the default branch).
        seed (`int`, *optional*, defaults to `0`):
            ``torch.manual_seed`` set before each sampled `generate` call (unused with greedy decoding).
        dtype (`str` or `None`, *optional*, defaults to `None`):
            Weights' precision (``"bfloat16"`` is faster on GPUs and AMX CPUs); None keeps the checkpoint's.
    """

    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 8
    device: str | None = None
    revision: str | None = None
    seed: int = 0
    dtype: str | None = None

    def __post_init__(self) -> None:
        self._model = None
        self._tokenizer = None
        check_dtype(self.dtype, "TransformersBackend.dtype")

    def __getstate__(self) -> dict[str, Any]:
        return asdict(self)  # settings only: cheap fingerprints, no weights pickled

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def identity(self) -> dict[str, Any]:
        """What decides the generated text (caches key on it): model, revision, sampling, precision."""
        return _identity(self, ("model", "revision", "max_new_tokens", "temperature", "top_p", "seed", "dtype"))

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM

        from ..models import load_model, load_tokenizer

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._tokenizer = load_tokenizer(self.model, revision=self.revision)
        self._tokenizer.padding_side = "left"  # decoder-only batches must be left-padded
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        kwargs = {"dtype": getattr(torch, self.dtype)} if self.dtype else {}
        self._model = load_model(self.model, auto_class=AutoModelForCausalLM, revision=self.revision, **kwargs).to(device).eval()

    def generate(self, conversations: list[Conversation], on_result: ResultCallback | None = None) -> list[str]:
        """Answer every conversation; `on_result(index, text)` is called as each batch finishes
        (critique generation uses it to write results to disk before the next batch)."""
        import torch

        self._load()
        tok, model = self._tokenizer, self._model
        generator_kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "pad_token_id": tok.pad_token_id}
        if self.temperature > 0:
            generator_kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
            torch.manual_seed(self.seed)
        else:
            generator_kwargs.update(do_sample=False)
        prompts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
        ids = tok(prompts, add_special_tokens=False)["input_ids"]
        # Batch conversations of similar length (less left padding), answer in the caller's order.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        outputs: list[str] = [""] * len(ids)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            enc = tok.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt").to(model.device)
            with torch.inference_mode():
                out = model.generate(**enc, **generator_kwargs)
            new_tokens = out[:, enc["input_ids"].shape[1] :]
            for i, text in zip(chunk, tok.batch_decode(new_tokens, skip_special_tokens=True)):
                outputs[i] = text
                if on_result is not None:
                    on_result(i, text)
        return outputs

    def next_token_logprobs(self, conversations: list[Conversation], candidates: list[str],
                            assistant_prefix: str = "") -> list[list[float]]:
        """Log-probabilities (over the whole vocabulary) of each of `candidates` as the next token
        after each chat-templated conversation (generation prompt added) followed by
        `assistant_prefix`: one forward pass per batch, nothing generated. Each candidate must
        be a single token there (checked on the first conversation; the prompts all end with
        the same template tail and prefix), else InputError."""
        import torch

        self._load()
        tok, model = self._tokenizer, self._model
        prompts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) + assistant_prefix
                   for c in conversations]
        ids = tok(prompts, add_special_tokens=False)["input_ids"]
        if not ids:
            return []
        token_ids = []
        for cand in candidates:
            full = tok(prompts[0] + cand, add_special_tokens=False)["input_ids"]
            if len(full) != len(ids[0]) + 1 or full[:-1] != ids[0]:
                raise InputError(f"Candidate {cand!r} is not one token after the prompt ending {prompts[0][-40:]!r} "
                                 f"for {self.model}; change the assistant prefix or the candidates.")
            token_ids.append(full[-1])
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        outputs: list[list[float]] = [[] for _ in ids]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            enc = tok.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt").to(model.device)
            # left padding: positions count real tokens only, so a padded prompt scores as alone
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = model(**enc, position_ids=positions, logits_to_keep=1).logits[:, -1].float()
            picked = logits.log_softmax(-1)[:, token_ids]
            for i, row in zip(chunk, picked.tolist()):
                outputs[i] = row
        return outputs


@dataclass
class OpenAIBackend:
    """Generate through an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        base_url (`str`, *optional*, defaults to `"http://localhost:8000/v1"`):
            E.g. ``http://localhost:8000/v1`` (vLLM) or ``https://api.openai.com/v1``.
        model (`str`, *optional*, defaults to `"default"`):
            The model name the server expects.
        api_key_env (`str`, *optional*, defaults to `"OPENAI_API_KEY"`):
            Name of the environment variable holding the key (may be unset for local servers). The key itself is
            never stored in the object.
        max_new_tokens (`int`, *optional*, defaults to `64`):
            Tokens to generate per conversation (the request's ``max_tokens``).
        temperature (`float`, *optional*, defaults to `0.0`):
            Sampling temperature sent with each request (0: greedy on most servers).
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus-sampling probability mass sent with each request.
        timeout (`float`, *optional*, defaults to `60.0`):
            Deadline in seconds for each try of a request, from connecting to the last byte of the answer (a
            server that trickles bytes cannot hold it longer; the try may overrun by one network read, which
            itself waits at most `timeout`).
        max_retries (`int`, *optional*, defaults to `3`):
            Retries after the first try, with exponential backoff; a 429/503 answer's ``Retry-After`` (seconds or
            an HTTP date, at most `max_retry_after`) replaces the backoff.
        backoff (`float`, *optional*, defaults to `1.0`):
            Seconds waited after the first failed try; each later wait doubles it (``backoff * 2**attempt``).
        concurrency (`int`, *optional*, defaults to `8`):
            Requests in flight at once.
        extra_body (`dict[str, Any]`, *optional*, defaults to `{}`):
            Further fields of every request's JSON body (e.g. server-specific sampling options); they override the
            standard ones of the same name.
        max_retry_after (`float`, *optional*, defaults to `120.0`):
            Longest wait, in seconds, honoured from a ``Retry-After`` header.
    """

    base_url: str = "http://localhost:8000/v1"
    model: str = "default"
    api_key_env: str = "OPENAI_API_KEY"
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    timeout: float = 60.0
    max_retries: int = 3
    backoff: float = 1.0
    concurrency: int = 8
    extra_body: dict[str, Any] = field(default_factory=dict)
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise InputError(f"OpenAIBackend.base_url must start with http:// or https://, got {redact(self.base_url)!r}.")
        if not self.timeout > 0:
            raise InputError(f"OpenAIBackend.timeout must be a positive number of seconds, got {self.timeout!r}.")

    def identity(self) -> dict[str, Any]:
        """What decides the generated text (caches key on it): server, model, sampling, extra body."""
        return _identity(self, ("base_url", "model", "max_new_tokens", "temperature", "top_p", "extra_body"))

    def completions_url(self) -> str:
        """``base_url`` + ``/chat/completions``, keeping a query string (``?api-version=…``) at the end."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.base_url)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/chat/completions"))

    def _post(self, client: Any, url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """One try: (status, headers, body bytes), ending by the deadline however slowly bytes come."""
        import httpx

        deadline = time.monotonic() + self.timeout
        chunks = []
        with client.stream("POST", url, json=body) as response:
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout(f"the answer did not finish within the {self.timeout:g} s deadline")
            return response.status_code, {k.lower(): v for k, v in response.headers.items()}, b"".join(chunks)

    def _retry_after(self, headers: dict[str, str]) -> float | None:
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            seconds = when.timestamp() - time.time()
        return min(max(seconds, 0.0), self.max_retry_after)

    def _request(self, client: Any, conversation: Conversation) -> str:
        import httpx

        body = {
            "model": self.model,
            "messages": conversation,
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            **self.extra_body,
        }
        url = self.completions_url()
        last_error = ""
        for attempt in range(self.max_retries + 1):
            wait = self.backoff * 2**attempt
            try:
                status, headers, raw = self._post(client, url, body)
                if status == 200:
                    content = json.loads(raw)["choices"][0]["message"]["content"]
                    if isinstance(content, str):
                        return content
                    last_error = (f"the answer's choices[0].message.content is {type(content).__name__} "
                                  f"({json.dumps(content)[:80]}), not a string")
                else:
                    last_error = f"HTTP {status}: {raw[:200].decode('utf-8', 'replace')}"
                    if status < 500 and status != 429:
                        break  # a client error will not fix itself by retrying
                    retry_after = self._retry_after(headers)
                    if retry_after is not None:
                        wait = retry_after
            except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if attempt < self.max_retries:
                time.sleep(wait)
        raise BackendError(
            f"Request to {url} (model {self.model!r}) failed after {self.max_retries + 1} tries: {last_error}. "
            "Check that the server is up and the model name is right; raise `timeout` or `max_retries` for slow servers."
        )

    def generate(self, conversations: list[Conversation], on_result: ResultCallback | None = None) -> list[str]:
        """Answer every conversation with at most `concurrency` requests in flight.

        `on_result(index, text)` is called (from this thread) as each request succeeds, so
        finished results can be kept even when another request fails. A request that still
        fails after its retries raises :class:`BackendError` naming its index, once every
        other request has finished."""
        import httpx

        key = os.environ.get(self.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        outputs: list[str | None] = [None] * len(conversations)
        errors: dict[int, BackendError] = {}
        with httpx.Client(timeout=self.timeout, headers=headers) as client:
            with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
                futures = {pool.submit(self._request, client, c): i for i, c in enumerate(conversations)}
                for future in as_completed(futures):
                    index = futures[future]
                    try:
                        outputs[index] = future.result()
                    except BackendError as exc:
                        errors[index] = exc
                        continue
                    if on_result is not None:
                        on_result(index, outputs[index])
        if errors:
            first = min(errors)
            raise BackendError(f"Request #{first} of {len(conversations)} failed ({len(errors)} failed in all; "
                               f"{len(conversations) - len(errors)} finished): {errors[first]}") from errors[first]
        return outputs  # type: ignore[return-value]


BACKENDS = {"transformers": TransformersBackend, "openai": OpenAIBackend}


def make_backend(kind: str, **settings: Any) -> TransformersBackend | OpenAIBackend:
    """Build a backend by name ("transformers" or "openai") from its settings.

    Args:
        kind (`str`):
            ``"transformers"`` (`TransformersBackend`) or ``"openai"`` (`OpenAIBackend`).
        **settings:
            The backend's fields (an unknown one raises `TypeError`).
    """
    if kind not in BACKENDS:
        raise InputError(f"Unknown generation backend {kind!r}; choose one of {sorted(BACKENDS)}.")
    return BACKENDS[kind](**settings)
