"""Trainer hyperparameters: one frozen dataclass per trainer, validated in one place.

Every field carries its documentation in `metadata["help"]` (shown by the
`train` command's `--help` and usable as web-form help text) and its bounds in
`metadata` (`min`, `max`, `choices`). `from_dict` is the only way untrusted
input (a JSON config file, a web form, a Celery payload) becomes a config: it
rejects unknown fields, wrong types and out-of-range values and names every bad
field at once in `ConfigError.errors`.

No torch here: web code imports this module to validate forms.

Adding a trainer: subclass `LoopConfig` (the shared loop's knobs), add fields
with `_f(...)`, and override `_cross_field_errors` for rules that involve more
than one field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

DEFAULT_REWARD_MODEL = "all-MiniLM-L6-v2"

_MISSING = object()


def _f(default: Any, help: str, **bounds: Any) -> Any:
    """A dataclass field with its help text and validation bounds in metadata."""
    return field(default=default, metadata={"help": help, **bounds})


class ConfigError(ValueError):
    """Invalid hyperparameters. `errors` maps each bad field name to a message."""

    def __init__(self, errors: Mapping[str, str], *, config_name: str = "config") -> None:
        self.errors: dict[str, str] = dict(errors)
        detail = "; ".join(f"{name}: {msg}" for name, msg in self.errors.items())
        super().__init__(f"invalid {config_name}: {detail}")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Return `value` converted to `annotation`, or raise ValueError with a reason.

    Accepts what JSON and HTML forms produce: ints for float fields, numeric
    strings, "true"/"false" strings, lists for tuple fields. Never truncates
    (2.5 is not an int).
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner)
    if value is None:
        raise ValueError("must not be null")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {
            "true",
            "1",
            "yes",
            "on",
            "false",
            "0",
            "no",
            "off",
        }:
            return value.strip().lower() in {"true", "1", "yes", "on"}
        raise ValueError(f"expected a boolean, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):  # bool is an int subclass; True is not a step count
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        if isinstance(value, int | float):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value.strip())
            except ValueError:
                raise ValueError(f"expected a number, got {value!r}") from None
        else:
            raise ValueError(f"expected a number, got {value!r}")
        if result != result or result in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return result
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type(value).__name__}")
        return value
    if origin is tuple:  # tuple[str, ...]
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list, got {type(value).__name__}")
        return tuple(_coerce(name, item, args[0]) for item in value)
    raise TypeError(f"field {name}: unsupported annotation {annotation!r}")  # a bug in this module


@dataclass(frozen=True)
class LoopConfig:
    """Knobs of the shared training loop (`training/trainers/base.py`)."""

    kind: ClassVar[str] = "loop"

    seed: int = _f(
        0, "Seed for model init, dropout and data order; the same seed gives the same run.", min=0
    )
    epochs: float = _f(
        1.0,
        "Passes over the training pairs (fractions allowed); ignored when max_steps is set.",
        min=0.0,
        min_exclusive=True,
        max=1000.0,
    )
    max_steps: int | None = _f(None, "Optimizer steps to run; overrides epochs when set.", min=1)
    batch_size: int = _f(8, "Examples (pairs) per micro-batch.", min=1, max=4096)
    grad_accum: int = _f(
        1,
        "Micro-batches accumulated per optimizer step (effective batch = batch_size x this).",
        min=1,
        max=1024,
    )
    lr: float = _f(2e-5, "Peak learning rate of AdamW.", min=0.0, min_exclusive=True, max=1.0)
    weight_decay: float = _f(
        0.0, "AdamW weight decay (never applied to biases and norms).", min=0.0, max=1.0
    )
    warmup_ratio: float = _f(
        0.1,
        "Share of the steps spent warming the learning rate up linearly from 0.",
        min=0.0,
        max=1.0,
    )
    schedule: str = _f(
        "linear",
        "Decay after warmup: linear to 0, cosine to 0, or constant.",
        choices=("linear", "cosine", "constant"),
    )
    max_grad_norm: float = _f(
        1.0, "Clip the global gradient norm to this (0 disables clipping).", min=0.0
    )
    eval_every: int = _f(0, "Evaluate every N steps (0: only at the end).", min=0)
    save_every: int = _f(
        0, "Write a resumable checkpoint every N steps (0: only when cancelled).", min=0
    )
    keep_checkpoints: int = _f(1, "Checkpoints kept on disk; older ones are deleted.", min=1)
    log_every: int = _f(1, "Write training metrics every N steps.", min=1)
    device: str = _f(
        "auto", "auto (CUDA when present, else CPU), cpu or cuda.", choices=("auto", "cpu", "cuda")
    )
    precision: str = _f(
        "auto",
        "auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16.",
        choices=("auto", "fp32", "bf16"),
    )
    gradient_checkpointing: bool = _f(
        False, "Recompute activations in backward: less memory, ~30% slower."
    )
    lora_r: int = _f(
        0, "LoRA rank (0: full fine-tuning). For models too large to train fully.", min=0, max=1024
    )
    lora_alpha: float = _f(
        16.0, "LoRA scaling numerator (the update is scaled by lora_alpha / lora_r).", min=0.0
    )
    lora_dropout: float = _f(0.05, "Dropout on the LoRA branch.", min=0.0, max=1.0)
    lora_target_modules: tuple[str, ...] = _f(
        ("all-linear",),
        "Module names LoRA adapts ('all-linear': every linear layer but the output head).",
    )

    # --- construction -----------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Validate `data` and build the config; raise ConfigError naming every bad field.

        Missing fields take their defaults; unknown fields are errors (a typo
        like `learning_rate` must not be silently ignored).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(
                {"__all__": f"expected an object, got {type(data).__name__}"},
                config_name=cls.__name__,
            )
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in dataclasses.fields(cls)}
        errors: dict[str, str] = {}
        values: dict[str, Any] = {}
        for name in data:
            if name not in known:
                errors[str(name)] = "unknown field"
        for name, fld in known.items():
            raw = data.get(name, _MISSING)
            if raw is _MISSING:
                continue
            try:
                value = _coerce(name, raw, hints[name])
            except ValueError as exc:
                errors[name] = str(exc)
                continue
            problem = _bounds_error(value, fld.metadata)
            if problem:
                errors[name] = problem
            else:
                values[name] = value
        if not errors:
            config = cls(**values)
            errors.update(config._cross_field_errors())
            if not errors:
                return config
        raise ConfigError(errors, config_name=cls.__name__)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with `changes` applied (same rules as from_dict)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists); `from_dict(to_dict())` round-trips."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Field name -> help text, for forms and `--help`."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}

    def _cross_field_errors(self) -> dict[str, str]:
        """Rules involving several fields. Subclasses extend this."""
        errors: dict[str, str] = {}
        if self.lora_r and not self.lora_target_modules:
            errors["lora_target_modules"] = "must name at least one module when lora_r > 0"
        return errors


def _bounds_error(value: Any, meta: Mapping[str, Any]) -> str | None:
    if value is None:
        return None
    if "choices" in meta and value not in meta["choices"]:
        return f"must be one of {', '.join(meta['choices'])}; got {value!r}"
    if "min" in meta:
        if meta.get("min_exclusive") and value <= meta["min"]:
            return f"must be > {meta['min']}; got {value}"
        if value < meta["min"]:
            return f"must be >= {meta['min']}; got {value}"
    if "max" in meta and value > meta["max"]:
        return f"must be <= {meta['max']}; got {value}"
    return None


@dataclass(frozen=True)
class RewardConfig(LoopConfig):
    """Bradley-Terry reward model (`training/trainers/reward.py`)."""

    kind: ClassVar[str] = "reward"

    model: str = _f(
        DEFAULT_REWARD_MODEL,
        "Backbone: a local folder or a hub name already in the local cache "
        f"(never downloaded); '{DEFAULT_REWARD_MODEL}' is the packaged MiniLM.",
    )
    lr: float = _f(
        2e-4,
        "Peak learning rate of AdamW for the backbone (the head: x head_lr_mult). One epoch of "
        "MiniLM on 1.6k HH pairs: 5e-5 stays near chance, 2e-4 beats the length-only rule.",
        min=0.0,
        min_exclusive=True,
        max=1.0,
    )
    max_length: int = _f(
        256,
        "Tokens per prompt+response; the prompt is cut from the left first, the response "
        "keeps at least half.",
        min=8,
        max=32768,
    )
    head_lr_mult: float = _f(
        10.0,
        "The new reward head's learning rate is lr x this: with Adam a weight "
        "moves at most ~lr a step, so a freshly initialised head at the backbone's lr "
        "barely moves in one epoch.",
        min=0.0,
        min_exclusive=True,
        max=1000.0,
    )
    center_coef: float = _f(
        0.0,
        "Reward-centering weight: adds coef * mean((r_c + r_r)^2) (Eisenstein et al. "
        "2023); 0.01 is typical.",
        min=0.0,
    )
    use_margin: bool = _f(
        True, "Subtract the data's `margin` column inside the sigmoid when present (Llama 2)."
    )
    length_bucketing: bool = _f(
        True, "Group pairs of similar length into micro-batches so little compute goes to padding."
    )
    eval_fraction: float = _f(
        0.1,
        "Share of pairs held out for evaluation (split by prompt) when no eval data is given.",
        min=0.0,
        max=0.9,
    )
    eval_batch_size: int = _f(32, "Pairs per evaluation forward pass.", min=1, max=4096)
    dropout: float | None = _f(
        0.0,
        "Dropout probability set in the backbone (null keeps the checkpoint's). Off by default, "
        "as in TRL and OpenRLHF reward training: faster, and noise-free rewards.",
        min=0.0,
        max=1.0,
    )

    def _cross_field_errors(self) -> dict[str, str]:
        errors = super()._cross_field_errors()
        if not self.model.strip():
            errors["model"] = "must not be empty"
        return errors


# Every trainer config by kind; the train command and the Celery task look configs up here.
CONFIGS: dict[str, type[LoopConfig]] = {RewardConfig.kind: RewardConfig}


@dataclass(frozen=True)
class PPOConfig(LoopConfig):
    """PPO fine-tuning against a learned reward model (`training/trainers/ppo.py`).

    One iteration ("step" on the command line) = a rollout of
    `rollout_batch_size` episodes, then `ppo_epochs` passes over them in
    minibatches of `batch_size x grad_accum` episodes, one optimizer step per
    minibatch. The loop's `eval_every` / `save_every` / `log_every` count
    optimizer steps; `epochs` and `max_steps` are not used (set `steps`).
    """

    kind: ClassVar[str] = "ppo"

    model: str = _f("SmolLM2-135M-Instruct", "Policy: a local folder, a cached hub name, or the packaged "
                    "SmolLM2-135M-Instruct. The frozen reference is the same weights.")
    reward_model: str = _f("", "Folder written by the reward trainer (save_pretrained model + tokenizer); "
                           "required for real runs.")
    steps: int = _f(20, "PPO iterations (rollout + ppo_epochs update passes).", min=1, max=1_000_000)
    rollout_batch_size: int = _f(16, "Prompts (episodes) sampled and scored per iteration; a multiple of "
                                 "batch_size x grad_accum.", min=1, max=65536)
    batch_size: int = _f(4, "Episodes per micro-batch of the update.", min=1, max=4096)
    ppo_epochs: int = _f(4, "Passes over each rollout (Schulman et al. 2017 use 3-10).", min=1, max=100)
    lr: float = _f(1e-5, "Peak learning rate of AdamW (policy and value head).", min=0.0, min_exclusive=True,
                   max=1.0)
    warmup_ratio: float = _f(0.0, "Share of the optimizer steps spent warming the learning rate up.",
                             min=0.0, max=1.0)
    max_prompt_length: int = _f(256, "Prompt tokens kept (the END of the prompt: the turn being answered).",
                                min=1, max=32768)
    max_new_tokens: int = _f(64, "Completion tokens sampled at most; a completion that hits it without EOS "
                             "counts as clipped.", min=1, max=32768)
    temperature: float = _f(0.7, "Sampling temperature; log-probs use the same temperature so the ratio "
                            "and the KL are those of the sampling distribution.", min=0.0, min_exclusive=True,
                            max=10.0)
    top_p: float = _f(1.0, "Nucleus sampling (1 = off). Below 1 the samples are no longer from the "
                      "distribution the log-probs describe: the KL estimates are biased.", min=0.0,
                      min_exclusive=True, max=1.0)
    generation_batch_size: int = _f(16, "Prompts generated together (left-padded).", min=1, max=4096)
    missing_eos_penalty: float | None = _f(None, "Subtracted from the score of a completion without EOS "
                                           "(null: no penalty).", min=0.0)
    kl_coef: float = _f(0.05, "beta of the per-token KL penalty -beta * (log pi - log pi_ref) in the reward "
                        "(initial value when adaptive).", min=0.0, max=100.0)
    adaptive_kl: bool = _f(False, "Adapt beta toward kl_target (Ziegler et al. 2019).")
    kl_target: float = _f(6.0, "Target sequence KL (nats) of the adaptive controller.", min=0.0,
                          min_exclusive=True)
    kl_horizon: int = _f(10000, "Horizon of the adaptive controller, in episodes.", min=1)
    gamma: float = _f(1.0, "Discount of GAE.", min=0.0, max=1.0)
    lam: float = _f(0.95, "lambda of GAE.", min=0.0, max=1.0)
    clip_range: float = _f(0.2, "epsilon of the clipped policy ratio.", min=0.0, min_exclusive=True, max=10.0)
    clip_range_value: float = _f(0.2, "epsilon of the clipped value update.", min=0.0, min_exclusive=True)
    vf_coef: float = _f(0.1, "Weight of the value loss (the value head shares the policy's trunk).", min=0.0)
    whiten_rewards: bool = _f(False, "Scale per-token rewards to unit variance before GAE.")
    reward_max_length: int | None = _f(None, "Tokens the reward model reads (null: its training max_length "
                                       "from run_config.json, else 512).", min=8, max=32768)
    reward_batch_size: int = _f(16, "Completions scored per reward-model forward pass.", min=1, max=4096)
    eval_prompts: int = _f(16, "Fixed eval prompts (held out from training) for nrg_ratio and the length "
                           "probe; 0 disables evaluation.", min=0, max=100000)
    nrg_bucket_tokens: int = _f(20, "Length bucket width of nrg_ratio (Singhal et al. 2023 use 20).", min=1)
    eval_seed: int = _f(1234, "Seed of the eval generations (the same for the initial and later policies).",
                        min=0)

    def micro_batches_per_rollout(self) -> int:
        return self.rollout_batch_size // self.batch_size

    def optimizer_steps(self) -> int:
        """Optimizer steps of the whole run."""
        return self.steps * self.ppo_epochs * self.micro_batches_per_rollout() // self.grad_accum

    def _cross_field_errors(self) -> dict[str, str]:
        errors = super()._cross_field_errors()
        minibatch = self.batch_size * self.grad_accum
        if self.rollout_batch_size % minibatch:
            errors["rollout_batch_size"] = (f"must be a multiple of batch_size x grad_accum = {minibatch}; "
                                            f"got {self.rollout_batch_size}")
        if self.max_steps is not None:
            errors["max_steps"] = "PPO counts iterations: set steps instead"
        if not self.model.strip():
            errors["model"] = "must not be empty"
        return errors


CONFIGS[PPOConfig.kind] = PPOConfig


@dataclass(frozen=True)
class DPOConfig(LoopConfig):
    """Direct preference optimisation and its variants (`training/trainers/dpo.py`)."""

    kind: ClassVar[str] = "dpo"

    model: str = _f("SmolLM2-135M-Instruct", "Policy: a local folder, a cached hub name, or the packaged "
                    "SmolLM2-135M-Instruct (converted once to a safetensors cache). The reference is the same "
                    "weights, frozen.")
    lr: float = _f(1e-6, "Peak learning rate of AdamW (DPO uses small rates; 5e-7 to 5e-6 is typical).",
                   min=0.0, min_exclusive=True, max=1.0)
    batch_size: int = _f(4, "Pairs per micro-batch (each pair is two sequences in one forward pass).",
                         min=1, max=4096)
    max_length: int = _f(512, "Tokens per prompt+completion; the prompt keeps its END (the turn answered) "
                         "and at least half the budget, then the completion is cut.", min=8, max=32768)
    beta: float = _f(0.1, "beta: strength of the KL anchor to the reference (DPO's temperature); for simpo "
                     "the reward scale (2.0 is typical).", min=0.0, min_exclusive=True, max=100.0)
    variant: str = _f("sigmoid", "Loss: sigmoid (DPO), ipo, hinge (SLiC), rdpo (length-regularised DPO) or "
                      "simpo (reference-free, length-normalised).",
                      choices=("sigmoid", "ipo", "hinge", "rdpo", "simpo"))
    label_smoothing: float = _f(0.0, "cDPO: assumed share of flipped labels (sigmoid, rdpo, simpo).",
                                min=0.0, max=0.49)
    alpha: float = _f(0.0, "rdpo: weight of the length gap |y_w| - |y_l| (tokens) inside the sigmoid "
                      "(Park et al. 2024 use 0.005-0.05 with beta 0.1).", min=0.0)
    gamma: float = _f(0.5, "simpo: target reward margin (Meng et al. 2024 use gamma/beta around 0.5).",
                      min=0.0)
    reference: str = _f("precomputed", "precomputed: reference log-probs computed in one pass before "
                        "training (no second model in memory); live: a frozen copy scores every batch. "
                        "simpo uses no reference.",
                        choices=("precomputed", "live"))
    packing: bool = _f(True, "Padding-free batches (sequences concatenated, positions restarted) when the "
                       "model's attention keeps them apart; checked once at start, else padded.")
    eval_fraction: float = _f(0.1, "Share of pairs held out for evaluation (split by prompt) when no eval "
                              "data is given.", min=0.0, max=0.9)
    eval_batch_size: int = _f(8, "Pairs per evaluation / reference forward pass.", min=1, max=4096)
    probe_prompts: int = _f(8, "Fixed eval prompts of the generation probe, run at every evaluation "
                            "(0 disables it).", min=0, max=10000)
    probe_max_new_tokens: int = _f(128, "Tokens the probe samples at most per prompt; reaching it without a "
                                   "stop token counts as truncated.", min=1, max=32768)
    probe_temperature: float = _f(1.0, "Sampling temperature of the probe (1 keeps gen/kl_seq unbiased; 0 is "
                                  "greedy).", min=0.0, max=10.0)
    probe_seed: int = _f(1234, "Seed of the probe's sampling, the same at every probe.", min=0)

    def _cross_field_errors(self) -> dict[str, str]:
        errors = super()._cross_field_errors()
        if not self.model.strip():
            errors["model"] = "must not be empty"
        return errors


CONFIGS[DPOConfig.kind] = DPOConfig
