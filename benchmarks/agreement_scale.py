"""How long the lead dashboard's agreement report takes at 10k, 100k and 1M judgments.

    .venv/bin/python benchmarks/agreement_scale.py [--sizes 10000,100000,1000000] [--repeat 1]
    DEBUG=1 .venv/bin/python benchmarks/agreement_scale.py --from-db [--repeat 2]
    DATABASE_URL=postgres://postgres@127.0.0.1:55432/postgres DEBUG=1 \
        .venv/bin/python benchmarks/agreement_scale.py --from-db


Synthetic judgments (3 per comparison, ~1 annotator per 5,000 judgments, a
length-biased latent preference, 3 rubric axes) go through
`annotate.agreement.project_report`, the function the dashboard, the
`agreement` command and the API call. By default the frame is built in
memory; `--from-db` (benchmarks/agreement_db_run.py) writes the same judgments
into a scratch database and times what a lead's refresh really does,
`agreement_report(refresh=True)`: load from the database, then compute.
Times are wall seconds (best of --repeat) plus this process's CPU seconds,
which stay honest when other jobs share the machine.

Peers, in the same run, on the same data, computing the same numbers for the
overall axis (the script asserts the values agree):
- alpha: `krippendorff.alpha` on the raw reliability matrix (annotators x
  comparisons, NaN where unrated) -- the package's usual entry point -- vs ours
  (per-comparison value counts, same package);
- pairwise: a per-comparison Python loop for pairwise agreement plus the
  usual index-resampling bootstrap (same replicates) vs ours (counts, then a
  multinomial over the few distinct (agree, pairs) kinds);
- kappa: sklearn `cohen_kappa_score` per annotator pair on label vectors from a
  self-join vs ours (one bincount of contingency tables, statsmodels per table),
  on the same (capped) set of pairs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

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


def _overall_counts(frame: pd.DataFrame) -> np.ndarray:
    """(M, 3) judgments per comparison and side: how the report shapes every axis."""
    comp, comps = pd.factorize(frame["comparison"])
    cat = agreement.overall_codes(frame["overall"].to_numpy())
    return np.bincount(comp * 3 + cat, minlength=len(comps) * 3).reshape(-1, 3)


def ours_alpha(frame: pd.DataFrame) -> float | None:
    return agreement._alpha(_overall_counts(frame), "nominal")


def peer_alpha_raw_matrix(frame: pd.DataFrame) -> float:
    comp, _ = pd.factorize(frame["comparison"])
    ann, names = pd.factorize(frame["annotator"])
    matrix = np.full((len(names), comp.max() + 1), np.nan)
    matrix[ann, comp] = np.sign(frame["overall"].to_numpy())
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal"))


def ours_pairwise(frame: pd.DataFrame, n_boot: int) -> float:
    return agreement._pairwise(_overall_counts(frame), np.random.default_rng(0), n_boot)["value"]


def peer_pairwise_loop(frame: pd.DataFrame, n_boot: int) -> float:
    sides: dict[int, list[int]] = {}
    comps, overall = frame["comparison"].tolist(), frame["overall"].tolist()
    for c, o in zip(comps, overall, strict=True):
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


def ours_kappa(frame: pd.DataFrame) -> dict[tuple[str, str], float | None]:
    rows = agreement._rows(frame)
    cat = agreement.overall_codes(frame["overall"].to_numpy())
    fig = agreement._cohen(rows, cat, agreement.MIN_SHARED_FOR_KAPPA)
    return {tuple(p["annotators"]): p["value"] for p in fig["pairs"]}


def peer_kappa_sklearn(
    frame: pd.DataFrame, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], float]:
    small = pd.DataFrame(
        {
            "c": frame["comparison"].to_numpy(),
            "a": frame["annotator"].astype(str).to_numpy(),
            "v": np.sign(frame["overall"].to_numpy()),
        }
    )
    joined = small.merge(small, on="c")
    joined = joined[joined["a_x"] < joined["a_y"]]
    wanted = set(pairs)
    out = {}
    for (a1, a2), group in joined.groupby(["a_x", "a_y"], sort=False):
        if (a1, a2) in wanted:
            out[(a1, a2)] = float(cohen_kappa_score(group["v_x"], group["v_y"], labels=[-1, 0, 1]))
    return out


def _print_machine(workers: int) -> None:
    load1, load5, _ = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs, load average {load1:.1f} (1 min) {load5:.1f} (5 min); "
        f"report threads: {workers}"
    )


def from_db(sizes: list[int], args: argparse.Namespace) -> None:
    """The `--from-db` mode (benchmarks/agreement_db_run.py): database in the loop."""
    import agreement_db_run  # benchmarks/ is on sys.path when this runs as a script

    agreement_db_run.run(
        sizes,
        repeat=args.repeat,
        frame_for=synthetic_frame,
        keep_db=args.keep_db,
        peers=not args.no_peers,
    )


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Best wall time, the CPU time of that run, and the result."""
    best = (float("inf"), 0.0, None)
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best[0]:
            best = (wall, cpu, out)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=1, help="best of N timings")
    parser.add_argument("--boot", type=int, default=agreement.N_BOOT)
    parser.add_argument("--workers", type=int, default=2, help="threads for the axes (report)")
    parser.add_argument(
        "--from-db",
        action="store_true",
        help="time a lead's refresh (agreement_report) on a scratch database instead: "
        "SQLite under /tmp, or PostgreSQL when DATABASE_URL=postgres://...",
    )
    parser.add_argument("--keep-db", action="store_true", help="--from-db: keep the database")
    parser.add_argument("--no-peers", action="store_true", help="--from-db: skip the load peers")
    parser.add_argument(
        "--db-size",
        type=int,
        default=0,
        help="after the in-memory table, also run --from-db for this one size (0: skip)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.from_db:
        _print_machine(args.workers)
        from_db(sizes, args)
        return
    _print_machine(args.workers)
    print(f"{'judgments':>10}  {'task':<34} {'ours s':>8} {'(cpu)':>7} {'peer s':>8} {'ratio':>7}")
    for n in sizes:
        frame = synthetic_frame(n)
        wall, cpu, report = timed(
            lambda f=frame: agreement.project_report(
                f,
                project="bench",
                axes=AXES,
                max_strength=3,
                n_boot=args.boot,
                workers=args.workers,
            ),
            args.repeat,
        )
        print(f"{n:>10}  {'whole report (4 axes, all figures)':<34} {wall:>8.3f} {cpu:>7.3f}")
        overall = report["axes"]["overall"]
        o_alpha = timed(lambda f=frame: ours_alpha(f), args.repeat)
        p_alpha = timed(lambda f=frame: peer_alpha_raw_matrix(f), args.repeat)
        assert (
            abs(o_alpha[2] - p_alpha[2]) < 1e-9
            and o_alpha[2] == overall["krippendorff_alpha_nominal"]
        )
        o_pw = timed(lambda f=frame: ours_pairwise(f, args.boot), args.repeat)
        p_pw = timed(lambda f=frame: peer_pairwise_loop(f, args.boot), args.repeat)
        assert abs(o_pw[2] - p_pw[2]) < 1e-12 and o_pw[2] == overall["pairwise_agreement"]["value"]
        o_k = timed(lambda f=frame: ours_kappa(f), args.repeat)
        p_k = timed(lambda f=frame, k=list(o_k[2]): peer_kappa_sklearn(f, k), args.repeat)
        assert o_k[2].keys() == p_k[2].keys()
        assert all(abs(o_k[2][k] - p_k[2][k]) < 1e-9 for k in o_k[2])
        tasks = [
            ("alpha nominal vs raw matrix", o_alpha, p_alpha),
            ("pairwise + bootstrap vs py loop", o_pw, p_pw),
            (f"cohen kappa, {len(o_k[2])} pairs vs sklearn", o_k, p_k),
        ]
        for name, ours, peer in tasks:
            times = f"{ours[0]:>8.3f} {ours[1]:>7.3f} {peer[0]:>8.3f} {peer[0] / ours[0]:>6.1f}x"
            print(f"{'':>10}  {name:<34} {times}")
    print("ratio = peer wall time / ours; the values agree (asserted).")
    if args.db_size:
        from_db([args.db_size], args)


if __name__ == "__main__":
    main()
