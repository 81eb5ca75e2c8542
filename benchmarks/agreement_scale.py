"""How long the lead dashboard's agreement report takes at 10k, 100k and 1M judgments.

    .venv/bin/python benchmarks/agreement_scale.py [--sizes 10000,100000,1000000] [--repeat 1]

Synthetic judgments (3 per comparison, ~1 annotator per 5,000 judgments, a
length-biased latent preference, 3 rubric axes) go through
`annotate.agreement.project_report`, the same function the dashboard, the
`agreement` command and the API call. The frame is built in memory: the
database load is not part of this figure.

Peers, in the same run and on the same data, for the overall axis:
- `krippendorff.alpha` on the raw reliability matrix (annotators x comparisons,
  NaN where unrated), the package's usual entry point;
- a naive per-comparison Python loop for pairwise agreement plus the usual
  index-resampling bootstrap (same number of replicates).
Our figure for the same work ("ours: same work") is pairwise agreement with its
bootstrap CI and nominal alpha from per-comparison value counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from annotate import agreement  # noqa: E402

AXES = ("helpful", "truthful", "harmless")


def synthetic_frame(n_judgments: int, *, seed: int = 0, per_comparison: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    m = n_judgments // per_comparison
    n_ann = max(20, n_judgments // 5000)
    len_a = rng.lognormal(6, 0.8, m).astype(np.int64) + 1
    len_b = rng.lognormal(6, 0.8, m).astype(np.int64) + 1
    # Latent quality gap plus a length pull: longer answers win more often.
    latent = rng.normal(0, 1, m) + 0.6 * np.log2(len_b / len_a)
    # Three distinct annotators per comparison: r, r+k1, r+k1+k2 (mod U) with k1 + k2 < U.
    r = rng.integers(0, n_ann, m)
    k1 = rng.integers(1, n_ann // 2, m)
    k2 = rng.integers(1, n_ann // 2, m)
    ann = np.stack([r, (r + k1) % n_ann, (r + k1 + k2) % n_ann], axis=1)[:, :per_comparison].ravel()
    comp = np.repeat(np.arange(m), per_comparison)
    noise = rng.normal(0, 1, m * per_comparison)
    score = latent[comp] + noise
    overall = np.clip(np.round(score * 1.5), -3, 3).astype(np.int64)
    sides = np.array(["A", "tie", "B"], dtype=object)
    frame = pd.DataFrame(
        {
            "comparison": comp + 1,
            "annotator": pd.Categorical(np.char.add("ann", ann.astype(str))),
            "overall": overall,
            "swapped": rng.random(m * per_comparison) < 0.5,
            "seconds": rng.lognormal(3.5, 0.5, m * per_comparison),
            "over_budget": rng.random(m * per_comparison) < 0.1,
            "len_a": len_a[comp],
            "len_b": len_b[comp],
            "gold": np.where(rng.random(m) < 0.05, np.sign(latent), np.nan)[comp],
        }
    )
    for i, axis in enumerate(AXES):
        s = score + rng.normal(0, 0.5 + 0.3 * i, len(score))
        frame[agreement.axis_column(axis)] = pd.Categorical(
            sides[(np.sign(np.round(s)) + 1).astype(int)]
        )
    return frame


def ours_same_work(frame: pd.DataFrame, n_boot: int) -> tuple[float, float]:
    rows = agreement._rows(frame)
    counts = agreement._counts(rows, agreement.overall_codes(frame["overall"].to_numpy()))
    fig = agreement._pairwise(counts, np.random.default_rng(0), n_boot)
    return fig["value"], agreement._alpha(counts, "nominal")


def peer_krippendorff_raw(frame: pd.DataFrame) -> float:
    comp, _ = pd.factorize(frame["comparison"])
    ann, names = pd.factorize(frame["annotator"].astype(str))
    matrix = np.full((len(names), comp.max() + 1), np.nan)
    matrix[ann, comp] = np.sign(frame["overall"].to_numpy())
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))


def peer_python_loop(frame: pd.DataFrame, n_boot: int) -> float:
    sides: dict[int, list[int]] = {}
    for c, o in zip(frame["comparison"].tolist(), frame["overall"].tolist(), strict=True):
        sides.setdefault(c, []).append((o > 0) - (o < 0))
    agree, pairs = [], []
    for labels in sides.values():
        if len(labels) < 2:
            continue
        a = p = 0
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                a += labels[i] == labels[j]
                p += 1
        agree.append(a)
        pairs.append(p)
    ag, pa = np.array(agree), np.array(pairs)
    rng = np.random.default_rng(0)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, len(ag), len(ag))
        stats[b] = ag[idx].sum() / pa[idx].sum()
    np.percentile(stats, [2.5, 97.5])
    return ag.sum() / pa.sum()


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=1, help="best of N timings")
    parser.add_argument("--boot", type=int, default=agreement.N_BOOT)
    args = parser.parse_args()
    print(
        f"{'judgments':>10} {'report s':>9} {'ours same work s':>17} {'kripp raw s':>12} "
        f"{'py loop s':>10} {'raw/ours':>9} {'loop/ours':>10}"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        frame = synthetic_frame(n)
        t_report, report = timed(
            lambda f=frame: agreement.project_report(
                f, project="bench", axes=AXES, max_strength=3, n_boot=args.boot
            ),
            args.repeat,
        )
        t_ours, (pw, alpha) = timed(lambda f=frame: ours_same_work(f, args.boot), args.repeat)
        t_raw, alpha_raw = timed(lambda f=frame: peer_krippendorff_raw(f), args.repeat)
        t_loop, pw_loop = timed(lambda f=frame: peer_python_loop(f, args.boot), args.repeat)
        assert abs(alpha - alpha_raw) < 1e-9 and abs(pw - pw_loop) < 1e-12, (
            "peers disagree with ours"
        )
        assert report["axes"]["overall"]["pairwise_agreement"]["value"] == pw
        print(
            f"{n:>10} {t_report:>9.3f} {t_ours:>17.3f} {t_raw:>12.3f} {t_loop:>10.3f} "
            f"{t_raw / t_ours:>8.1f}x {t_loop / t_ours:>9.1f}x"
        )
    print(
        "report s: the whole project_report (4 axes, kappas, length/position bias, per annotator)."
    )
    print(
        "ours same work: overall pairwise agreement + bootstrap CI + nominal alpha (peers: same)."
    )


if __name__ == "__main__":
    main()
