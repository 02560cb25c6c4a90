"""Seed material in: a text file (passages separated by blank lines), a JSONL, CSV (with a header
row) or Parquet file, a local `datasets` directory (or a dataset directory this tool wrote), or a
Hub dataset id. Every seed gets a stable `seed_id` (its `id` column, or a
hash of its text) so a rerun with a few new seeds recomputes only theirs.

Bad input stops here, before any model call, with a message that names the problem and the fix.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from tasks.pipeline.network import hub_reachable
from tasks.rows import Row, stable_id

DEFAULT_SEEDS = Path(__file__).resolve().parents[2] / "data" / "seed_contexts.jsonl"
SUPPORTED = ".txt (blank-line separated passages), .jsonl, .csv, .parquet, or a saved dataset directory"
# Formats that look like data but that nothing here reads: refused, not read as blank-line text.
UNSUPPORTED = {".xlsx", ".xls", ".ods", ".arrow", ".feather", ".avro", ".orc", ".pdf", ".docx", ".zip", ".gz"}


class SeedError(ValueError):
    """Seed input that cannot be used; the message says how to fix it."""


def _unreadable(path: Path, err: OSError) -> SeedError:
    if isinstance(err, PermissionError):
        return SeedError(
            f"Cannot read {path}: permission denied. Make it readable (chmod u+r) or pass a readable copy."
        )
    return SeedError(f"Cannot read {path}: {err.strerror or err}. Check the path and pass a readable file.")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SeedError(
            f"{path} is not UTF-8 text (byte {err.start} is invalid). Re-save it as UTF-8."
        ) from None
    except OSError as err:
        raise _unreadable(path, err) from None


def _csv_records(path: Path) -> list[dict[str, Any]]:
    """One record per CSV row, keyed by the header row (tab-separated for .tsv)."""
    text = io.StringIO(_read_text(path), newline="")  # quoted cells may hold line breaks
    reader = csv.DictReader(text, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    records = []
    try:
        for row in reader:
            if None in row:
                raise SeedError(
                    f"{path}, line {reader.line_num}: more cells than the header row has columns. "
                    "Quote cells that contain the separator."
                )
            if any((value or "").strip() for value in row.values()):
                records.append({**row, "_line": reader.line_num})
    except csv.Error as err:
        raise SeedError(f"{path}, line {reader.line_num}: not valid CSV ({err}).") from None
    return records


def _parquet_records(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except OSError as err:
        raise _unreadable(path, err) from None
    except pa.ArrowException as err:
        raise SeedError(f"{path} is not a readable Parquet file ({err}).") from None


def _jsonl_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise SeedError(
                f"{path}, line {number}: not valid JSON ({err.msg}). Each line must be one JSON "
                'object, e.g. {"context": "..."}.'
            ) from None
        if not isinstance(record, dict):
            raise SeedError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}.")
        records.append({**record, "_line": number})
    return records


def _text_records(path: Path, column: str) -> list[dict[str, Any]]:
    blocks = [b.strip() for b in _read_text(path).split("\n\n")]
    return [{column: b} for b in blocks if b]


def _hub_error(source: str, err: Exception) -> SeedError:
    """What went wrong loading `source` from the Hub, and what to do about it."""
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub import constants

    if isinstance(err, DatasetNotFoundError):
        return SeedError(
            f"Seeds {source!r}: no such dataset on the Hugging Face Hub, or it is private or gated "
            f"({err}). Check the dataset id (owner/name), or set HF_TOKEN to a token that can read it."
        )
    if isinstance(err, ConnectionError) and constants.HF_HUB_OFFLINE:
        return SeedError(
            f"Seeds {source!r} are not in the local Hugging Face cache, and HF_HUB_OFFLINE is set. "
            "Unset HF_HUB_OFFLINE to download them, or pass a local .jsonl/.txt file or saved dataset "
            "directory instead."
        )
    if isinstance(err, ConnectionError):  # what `datasets` raises when the Hub cannot be reached
        return SeedError(
            f"Cannot reach the Hugging Face Hub ({constants.ENDPOINT}) to load seeds {source!r}, and no "
            "copy is cached. Check your network connection (or HF_ENDPOINT and proxy settings), or "
            "pass a local .jsonl/.txt file or saved dataset directory instead."
        )
    return SeedError(
        f"Cannot load seeds {source!r}: it is not a local file or directory, and loading it as a Hub "
        f"dataset failed ({type(err).__name__}: {err}). Check the path, or the dataset id and HF_TOKEN."
    )


def _saved_dataset(directory: Path) -> Any:
    """A directory written by `save_to_disk`, or a dataset directory this tool wrote (its
    `dataset/` inside); anything else is refused with what to pass instead."""
    import datasets

    for candidate in (directory, directory / "dataset"):
        if any((candidate / name).is_file() for name in ("state.json", "dataset_dict.json")):
            try:
                return datasets.load_from_disk(str(candidate))
            except PermissionError as err:
                raise _unreadable(Path(err.filename or candidate), err) from None
    raise SeedError(
        f"{directory} is a directory but not a saved dataset (no state.json or dataset_dict.json). "
        f"Pass one of: {SUPPORTED}."
    )


def _cached(source: str) -> bool:
    """Whether an earlier load left a copy of Hub dataset `source` that `datasets` may load
    without the Hub: its files in the Hub cache, or its prepared copy in the datasets cache."""
    import datasets
    from huggingface_hub import constants

    files = Path(constants.HF_HUB_CACHE) / f"datasets--{source.replace('/', '--')}"
    prepared = Path(datasets.config.HF_DATASETS_CACHE) / source.replace("/", "___")
    return files.is_dir() or prepared.is_dir()


def _dataset_records(source: str) -> list[dict[str, Any]]:
    import datasets

    if Path(source).is_dir():
        data = _saved_dataset(Path(source))
    else:
        if not hub_reachable() and not _cached(source):  # the same error, without ~25 s of retries
            raise _hub_error(source, ConnectionError(f"{source}: the Hub cannot be reached"))
        # huggingface_hub logs each retry of a failed request twice (its handler and the root's);
        # the error below says what failed and what to do instead.
        hub_logger = logging.getLogger("huggingface_hub")
        level = hub_logger.level
        hub_logger.setLevel(logging.ERROR)
        try:
            data = datasets.load_dataset(source)
        except Exception as err:  # offline, private, misspelled: each gets its own fix
            raise _hub_error(source, err) from None
        finally:
            hub_logger.setLevel(level)
    if isinstance(data, datasets.DatasetDict):
        data = data["train"] if "train" in data else next(iter(data.values()))
    return list(data)


def read_records(source: str | Path, text_column: str = "context") -> list[dict[str, Any]]:
    """Records from `source`; a plain text file gives one `{text_column: block}` per block."""
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            return _jsonl_records(path)
        if suffix in (".csv", ".tsv"):
            return _csv_records(path)
        if suffix == ".parquet":
            return _parquet_records(path)
        if suffix in UNSUPPORTED:
            raise SeedError(f"{path}: {suffix} files cannot be read as seeds. Pass one of: {SUPPORTED}.")
        return _text_records(path, text_column)
    looks_like_path = path.suffix or str(source).startswith((".", "/", "~")) or str(source).count("/") != 1
    if not path.exists() and looks_like_path:
        raise SeedError(f"Seed file {str(source)!r} does not exist. Pass an existing file with --seeds.")
    return _dataset_records(str(source))


def load_seeds(source: str | Path | None = None, column: str = "context") -> list[Row]:
    """Seed rows `{"seed_id", "context"}` from `source` (default: the passages shipped in data/)."""
    source = source or DEFAULT_SEEDS
    return text_rows(read_records(source), source, column, "context", flag="--seed-column")


def load_texts(
    source: str | Path | None = None,
    column: str = "instruction",
    name: str | None = None,
    texts: list[str] | None = None,
) -> list[Row]:
    """Rows `{"id", "seed_id", <name>: text, ...}` (`name` defaults to `column`), from `texts`
    given directly or from the `column` of `source` (a .txt, .jsonl, dataset directory or Hub id);
    the records' other columns come along, so templates can use them. `id` and `seed_id` are the
    record's `id`, or a hash of its text, so they are stable across runs."""
    if source and texts:
        raise SeedError("Pass either a file or dataset of rows or the texts themselves, not both.")
    if texts is not None:
        records = [{column: text} for text in texts]
    elif source:
        records = read_records(source, text_column=column)
    else:
        raise SeedError("No input rows: pass a file or dataset of rows, or the texts themselves.")
    rows = text_rows(records, source or "the given texts", column, name or column, "--column", keep=True)
    return [{"id": row["seed_id"], **row} for row in rows]


def text_rows(
    records: list[dict[str, Any]], source: Any, column: str, name: str, flag: str, keep: bool = False
) -> list[Row]:
    """`{"seed_id", <name>: text}` for each record's non-empty `column`, exact repeats skipped;
    with `keep`, the record's other columns too."""
    if not records:
        raise SeedError(
            f"{source} holds no seeds. Add passages (one JSON object per line, or blank-line-separated text)."
        )
    seeds, seen = [], set()
    for index, record in enumerate(records):
        where = f"line {record['_line']}" if "_line" in record else f"record {index}"
        if column not in record:
            columns = sorted(k for k in record if k != "_line")
            raise SeedError(
                f"{source}, {where}: no {column!r} column (found {columns}). "
                f"Pass {flag} with the column that holds the seed text."
            )
        text = record[column]
        if not isinstance(text, str) or not text.strip():
            raise SeedError(
                f"{source}, {where}: the {column!r} value is empty. Remove the line or fill it in."
            )
        text = text.strip()
        if text in seen:
            continue
        seen.add(text)
        seed_id = str(record.get("id") or record.get("seed_id") or stable_id(text))
        others = {k: v for k, v in record.items() if k not in (column, "_line")} if keep else {}
        seeds.append({**others, "seed_id": seed_id, name: text})
    return seeds
