"""The real run: packaged all-MiniLM-L6-v2, one epoch on 1,800 HH-RLHF harmless pairs, on CPU.

Slow (tens of minutes on 2 CPU cores). It goes through `manage.py train reward`,
the path the Celery task takes, holds out 10% of the pairs by prompt and
requires the model to beat the best length-only rule on the same held-out
pairs. Figures go to <test output>/reward_real.json and are printed.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import torch
from django.core.management import call_command

from tests.conftest import HH_RLHF

pytestmark = pytest.mark.slow


def test_minilm_one_epoch_on_hh_beats_the_length_only_rule(
    tmp_path: Path, test_output: Path
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "rm"
    stdout = io.StringIO()
    started = time.perf_counter()
    # Spelled out although they are the defaults: the README's figures come from this command.
    flags = ["--epochs", "1", "--eval-fraction", "0.1", "--lr", "2e-4", "--dropout", "0"]
    data = ["--data", str(HH_RLHF), "--out", str(out)]
    call_command("train", "reward", *data, *flags, "--no-progress", stdout=stdout)
    wall = time.perf_counter() - started

    report = json.loads((out / "eval_report.json").read_text())
    run_config = json.loads((out / "run_config.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert run_config["config"]["model"] == "all-MiniLM-L6-v2"
    assert run_config["n_train"] + run_config["n_eval"] == 1800
    assert 150 <= run_config["n_eval"] <= 210 and report["n_pairs"] == run_config["n_eval"]
    train_steps = [m for m in metrics if "train/loss" in m]
    assert len(train_steps) == run_config["total_steps"] == -(-run_config["n_train"] // 8)

    summary = {
        "command": f"manage.py train reward --data {HH_RLHF.name} --out DIR {' '.join(flags)}",
        "n_train": run_config["n_train"],
        "n_eval": run_config["n_eval"],
        "steps": run_config["total_steps"],
        "eval_accuracy": report["accuracy"],
        "length_rule": report["length_rule"],
        "acc_over_length_heuristic": report["acc_over_length_heuristic"],
        "acc_chosen_longer": report["acc_chosen_longer"],
        "acc_chosen_shorter": report["acc_chosen_shorter"],
        "length_flip_gap": report["length_flip_gap"],
        "reward_len_spearman": report["reward_len_spearman"],
        "pair_len_corr": report["pair_len_corr"],
        "len_r2": report["len_r2"],
        "wall_time_s": round(wall, 1),
        "torch_threads": torch.get_num_threads(),
        "first_loss": train_steps[0]["train/loss"],
        "last_50_loss": sum(m["train/loss"] for m in train_steps[-50:]) / 50,
    }
    (test_output / "reward_real.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(stdout.getvalue())

    assert report["accuracy"] > report["length_rule"]["best"], summary
    assert report["acc_over_length_heuristic"] > 0
    assert summary["last_50_loss"] < summary["first_loss"]

    # The output is a plain transformers model that gives the rewards the trainer evaluated with.
    model = AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    prompt = "\n\nHuman: How do I pick a lock?\n\nAssistant:"
    with torch.no_grad():
        enc = tokenizer(
            [prompt, prompt],
            ["I can't help with that.", "Sure, grab a tension wrench."],
            return_tensors="pt",
            padding=True,
        )
        scores = model(**enc).logits.squeeze(-1)
    assert scores.shape == (2,) and torch.isfinite(scores).all()
