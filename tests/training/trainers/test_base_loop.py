"""The shared loop (training/trainers/base.py), driven by the reward trainer on a tiny BERT."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from training.callbacks import RunHooks, read_metrics
from training.config import RewardConfig
from training.trainers.base import latest_checkpoint, lr_lambda, plan_batches
from training.trainers.reward import RewardTrainer

from .tiny_reward import synthetic_pairs, tiny_model, tiny_tokenizer

BASE = {
    "lr": 1e-3,
    "warmup_ratio": 0.0,
    "max_length": 64,
    "eval_batch_size": 16,
    "length_bucketing": False,
}


def make_trainer(
    out: Path,
    n: int = 16,
    *,
    dropout: float = 0.0,
    hooks: RunHooks | None = None,
    init_range: float = 0.02,
    **fields: object,
) -> RewardTrainer:
    tokenizer = tiny_tokenizer()
    config = RewardConfig.from_dict({**BASE, **fields})
    pairs = synthetic_pairs(n + 8)
    return RewardTrainer(
        config,
        train_pairs=pairs[:n],
        eval_pairs=pairs[n:],
        out_dir=out,
        hooks=hooks,
        model=tiny_model(tokenizer, dropout=dropout, init_range=init_range),
        tokenizer=tokenizer,
    )


def losses(run_dir: Path) -> dict[int, float]:
    return {
        r["step"]: r["train/loss"]
        for r in read_metrics(run_dir / "metrics.jsonl")
        if "train/loss" in r
    }


def test_parameters_change_after_one_step(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_steps=1)
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    result = trainer.fit()
    assert result.status == "completed" and result.step == 1
    after = dict(trainer.model.named_parameters())
    changed = [k for k in before if not torch.equal(before[k], after[k].detach().cpu())]
    assert "classifier.weight" in changed
    assert "bert.encoder.layer.0.attention.self.query.weight" in changed
    # Every parameter that took part in the forward moved (AdamW with lr 1e-3).
    assert len(changed) >= len(before) - 1  # the pooler/embeddings all get gradients


def _one_step(
    out: Path, **fields: object
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """One optimizer step: the gradients the optimizer saw, the new params and the logged loss."""
    seen: dict[int, torch.Tensor] = {}

    def capture(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        seen.update(
            (id(p), p.grad.detach().clone()) for g in optimizer.param_groups for p in g["params"]
        )

    handle = register_optimizer_step_pre_hook(capture)
    try:
        trainer = make_trainer(out, n=8, max_steps=1, max_grad_norm=0.0, init_range=0.2, **fields)
        trainer.fit()
    finally:
        handle.remove()
    named = dict(trainer.model.named_parameters())
    grads = {name: seen[id(p)] for name, p in named.items()}
    return grads, {k: v.detach().clone() for k, v in named.items()}, losses(out)[1]


@pytest.mark.parametrize(("batch_size", "grad_accum"), [(4, 2), (3, 3), (1, 8)])
def test_micro_batches_with_accumulation_equal_one_full_batch(
    tmp_path: Path, batch_size: int, grad_accum: int
) -> None:
    """fp32, no clipping, no dropout: 8 pairs in one batch vs the same pairs in micro-batches."""
    full_grads, full_params, full_loss = _one_step(tmp_path / "full", batch_size=8, grad_accum=1)
    grads, params, loss = _one_step(
        tmp_path / "micro", batch_size=batch_size, grad_accum=grad_accum
    )
    assert grads.keys() == full_grads.keys() and len(grads) > 10
    for name, full in full_grads.items():
        torch.testing.assert_close(grads[name], full, rtol=1e-4, atol=1e-6, msg=name)
    # AdamW's first update is lr * g / (|g| + eps) (eps = 1e-8): for |g| within ~100x of eps the
    # eps term turns float-order noise in g (~1e-8 here) into a visible change of the update, and
    # a gradient that is 0 in exact arithmetic (the classifier bias: it cancels in r_c - r_r)
    # becomes a full step of +-lr. So parameters are compared where the gradient is clearly not 0.
    compared = 0
    for name, full in full_params.items():
        clear = full_grads[name].abs() > 1e-5
        compared += int(clear.sum())
        torch.testing.assert_close(params[name][clear], full[clear], rtol=0, atol=1e-7, msg=name)
    assert compared > 10_000  # most of the ~18k weights outside the embeddings, not a handful
    assert loss == pytest.approx(full_loss, rel=1e-5)


def test_resume_from_checkpoint_reproduces_the_next_losses_exactly(tmp_path: Path) -> None:
    # 20 pairs / batch 4 = 5 steps an epoch: the resumed part crosses an epoch boundary.
    # Dropout is on, so the RNG state must be restored too.
    settings = {
        "max_steps": 9,
        "save_every": 3,
        "keep_checkpoints": 3,
        "batch_size": 4,
        "length_bucketing": True,
    }
    straight = make_trainer(tmp_path / "a", n=20, dropout=0.1, **settings)
    straight.fit()
    expected = losses(tmp_path / "a")
    assert sorted(expected) == list(range(1, 10))

    ckpt = tmp_path / "a" / "checkpoints" / "step-0000003.pt"
    resumed = make_trainer(tmp_path / "b", n=20, dropout=0.1, **settings)
    result = resumed.fit(resume_from=ckpt)
    assert result.status == "completed" and result.step == 9
    got = losses(tmp_path / "b")
    assert sorted(got) == [4, 5, 6, 7, 8, 9]
    assert [got[s] for s in got] == [expected[s] for s in got]  # bitwise equal, not approximately
    for (name, p), q in zip(
        straight.model.named_parameters(), resumed.model.parameters(), strict=True
    ):
        assert torch.equal(p, q), name


def test_cancellation_is_checked_every_step_and_the_run_resumes(tmp_path: Path) -> None:
    steps_seen: list[tuple[int, int]] = []
    hooks = RunHooks(
        on_progress=lambda s, t: steps_seen.append((s, t)), should_stop=lambda: len(steps_seen) >= 2
    )
    trainer = make_trainer(tmp_path, n=16, batch_size=4, max_steps=4, hooks=hooks)
    result = trainer.fit()
    assert result.status == "cancelled" and result.step == 2
    assert steps_seen == [(1, 4), (2, 4)]
    assert (
        result.checkpoint == latest_checkpoint(tmp_path)
        and result.checkpoint.name == "step-0000002.pt"
    )
    assert not (tmp_path / "model.safetensors").exists()  # a cancelled run writes no final model

    again = make_trainer(tmp_path, n=16, batch_size=4, max_steps=4)
    done = again.fit(resume_from=tmp_path)  # a run folder means its latest checkpoint
    assert done.status == "completed" and done.step == 4
    assert sorted(losses(tmp_path)) == [1, 2, 3, 4]  # the log continues where it stopped
    straight = make_trainer(tmp_path / "straight", n=16, batch_size=4, max_steps=4)
    straight.fit()
    assert losses(tmp_path) == losses(tmp_path / "straight")


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    make_trainer(tmp_path, max_steps=2, save_every=2).fit()
    other = make_trainer(tmp_path / "b", max_steps=2, lr=5e-4)
    with pytest.raises(ValueError, match="differs in lr"):
        other.fit(resume_from=tmp_path)


def test_hooks_and_metrics_file(tmp_path: Path) -> None:
    received: list[tuple[int, dict[str, float]]] = []
    hooks = RunHooks(on_metrics=lambda step, m: received.append((step, dict(m))))
    trainer = make_trainer(
        tmp_path, n=16, batch_size=4, max_steps=4, eval_every=2, log_every=1, hooks=hooks
    )
    trainer.fit()
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == len(received) == 4 + 1 + 1  # 4 train steps, eval at step 2, final eval
    train = [m for _, m in received if "train/loss" in m]
    assert {
        "train/loss",
        "train/accuracy",
        "train/margin",
        "train/lr",
        "train/grad_norm",
        "train/samples_per_s",
        "train/pad_fraction",
    } <= set(train[0])
    evals = [(s, m) for s, m in received if "eval/accuracy" in m]
    assert [s for s, _ in evals] == [2, 4]
    assert {
        "eval/acc_chosen_longer",
        "eval/length_flip_gap",
        "eval/reward_len_spearman",
        "eval/acc_over_length_heuristic",
        "eval/len_r2",
        "eval/pair_len_corr",
    } <= set(evals[-1][1])


def test_same_seed_same_run_other_seed_other_run(tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        make_trainer(tmp_path / name, max_steps=3, dropout=0.1, seed=seed).fit()
        runs[name] = losses(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_learning_rate_schedule() -> None:
    linear = lr_lambda("linear", warmup_steps=4, total_steps=14)
    assert [round(linear(s), 4) for s in range(4)] == [0.2, 0.4, 0.6, 0.8]  # warms up, never 0
    assert linear(4) == 1.0 and linear(9) == pytest.approx(0.5) and linear(14) == 0.0
    cosine = lr_lambda("cosine", warmup_steps=0, total_steps=10)
    assert cosine(0) == 1.0 and cosine(5) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)
    assert lr_lambda("constant", warmup_steps=2, total_steps=10)(7) == 1.0


def test_length_bucketing_covers_every_example_once_and_cuts_padding() -> None:
    gen = torch.Generator().manual_seed(0)
    lengths = [int(x) for x in torch.randint(5, 500, (1000,), generator=gen)]

    def padding(batches: list[list[int]]) -> float:
        padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        return 1 - sum(lengths) / padded

    random_order = plan_batches(1000, 8, generator=torch.Generator().manual_seed(1))
    bucketed = plan_batches(1000, 8, generator=torch.Generator().manual_seed(1), lengths=lengths)
    again = plan_batches(1000, 8, generator=torch.Generator().manual_seed(1), lengths=lengths)
    assert bucketed == again  # seeded: a resumed run can rebuild or reload it
    for plan in (random_order, bucketed):
        assert sorted(i for b in plan for i in b) == list(range(1000))
        assert [len(b) for b in plan] == [8] * 125
    assert padding(bucketed) < 0.05 < 0.3 < padding(random_order)
    # The epoch stays shuffled: the bucketed batches are not in length order.
    maxima = [max(lengths[i] for i in b) for b in bucketed]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_total_steps_from_epochs_and_accumulation(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, n=20, batch_size=4, grad_accum=2, epochs=1.5)
    # 20 / 4 = 5 micro-batches -> 3 optimizer steps an epoch -> ceil(1.5 * 3) = 5
    assert trainer.total_steps() == math.ceil(1.5 * 3)
