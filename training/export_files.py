"""Preference records -> files: JSONL, Parquet or an HF DatasetDict, plus manifest.json.

The record rules live in `training.exports` (pure); this module only writes,
hashes and zips. Nothing time-dependent is written (no timestamps, ids or
users: those are in the `DatasetExport` row), so the same records give the
same bytes. pyarrow and datasets are imported lazily (web code imports this).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from training.exports import COLUMNS, MANIFEST, SCHEMA_VERSION, ExportParams

if TYPE_CHECKING:
    import pyarrow as pa


def arrow_schema() -> pa.Schema:
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema(
        [
            ("prompt", pa.string()),
            ("prompt_messages", pa.list_(message)),
            ("chosen", pa.string()),
            ("rejected", pa.string()),
            ("margin", pa.float64()),
            ("axis", pa.string()),
            ("n_judgments", pa.int32()),
            ("agreement", pa.float64()),
            ("comparison_id", pa.int64()),
            ("external_id", pa.string()),
            ("annotators", pa.list_(pa.string())),
            ("model_chosen", pa.string()),
            ("model_rejected", pa.string()),
            ("len_chosen", pa.int32()),
            ("len_rejected", pa.int32()),
        ]
    )


def _jsonl_bytes(records: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _write_split(out: Path, split: str, records: Sequence[dict[str, Any]], fmt: str) -> None:
    if fmt == "jsonl":
        (out / f"{split}.jsonl").write_bytes(_jsonl_bytes(records))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Parquet embeds only the writer version ("parquet-cpp-arrow version X"),
    # no timestamps, so equal inputs give equal bytes on the same pyarrow.
    pq.write_table(
        pa.Table.from_pylist(list(records), schema=arrow_schema()), out / f"{split}.parquet"
    )


def _write_hf(out: Path, splits: Mapping[str, Sequence[dict[str, Any]]]) -> None:
    import datasets
    import pyarrow as pa

    datasets.disable_progress_bars()
    dd = datasets.DatasetDict(
        {
            # An explicit fingerprint (a hash of the split's content) keeps
            # state.json deterministic whatever `datasets` would pick itself.
            name: datasets.Dataset(
                pa.Table.from_pylist(list(recs), schema=arrow_schema()),
                fingerprint=hashlib.sha256(_jsonl_bytes(recs)).hexdigest()[:16],
            )
            for name, recs in splits.items()
        }
    )
    dd.save_to_disk(str(out))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_files(out: Path) -> list[Path]:
    """Every file of an export (manifest included), sorted by relative path."""
    return sorted(
        (p for p in out.rglob("*") if p.is_file()), key=lambda p: p.relative_to(out).as_posix()
    )


def write_export(
    out: Path,
    *,
    train: Sequence[dict[str, Any]],
    held_out: Sequence[dict[str, Any]],
    params: ExportParams,
    project_slug: str,
    max_strength: int,
    stats: Mapping[str, Any],
) -> dict[str, str]:
    """Write the split files and manifest.json into `out` (created); {relative path: sha256}."""
    out.mkdir(parents=True, exist_ok=False)
    splits = {"train": train, "eval": held_out}
    if params.fmt == "hf":
        _write_hf(out, splits)
    else:
        for name, recs in splits.items():
            _write_split(out, name, recs, params.fmt)
    hashes = {p.relative_to(out).as_posix(): sha256_file(p) for p in data_files(out)}
    manifest = {
        "schema": SCHEMA_VERSION,
        "project": project_slug,
        "params": params.as_dict(),
        "rows": {"train": len(train), "eval": len(held_out)},
        "stats": dict(stats),
        "files": {
            name: {"sha256": sha, "bytes": (out / name).stat().st_size}
            for name, sha in hashes.items()
        },
        "columns": COLUMNS,
        "margin_mapping": (
            f"overall: |overall| / max_strength (max_strength = {max_strength}; on the "
            "7-point scale much better 1, better 2/3, slightly better 1/3, tie 0, as in "
            "Llama 2); rubric axes: 1 decided, "
            "0 tie; majority/unanimous: mean over the judgments on the winning side"
        ),
        "lengths": "characters (Unicode code points), not tokens",
        "split": (
            "by prompt: eval iff int(sha256(f'{seed}\\n{prompt}')[:8 bytes]) / 2**64"
            " < eval_fraction"
        ),
        "load_with": _load_hint(params.fmt),
    }
    # Sorted keys and no timestamps or ids: the manifest is as reproducible as the data.
    (out / MANIFEST).write_text(
        json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )
    hashes[MANIFEST] = sha256_file(out / MANIFEST)
    return dict(sorted(hashes.items()))


def _load_hint(fmt: str) -> str:
    if fmt == "hf":
        return "datasets.load_from_disk(DIR)"
    builder = "json" if fmt == "jsonl" else "parquet"
    files = f'{{"train": "train.{fmt}", "eval": "eval.{fmt}"}}'
    return f'datasets.load_dataset("{builder}", data_files={files})'


def zip_export(out: Path) -> IO[bytes]:
    """A zip of an export directory (rewound temp file, spilled to disk past 32 MB)."""
    import tempfile
    import zipfile

    buf = tempfile.SpooledTemporaryFile(max_size=32 << 20)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in data_files(out):
            zf.write(path, arcname=path.relative_to(out).as_posix())
    buf.seek(0)
    return buf  # type: ignore[return-value]
