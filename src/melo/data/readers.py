"""Generic readers: text files, JSON / JSON lines / CSV records, and field checks that name file, line and field."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import MeloDataError
from .locate import require_file


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MeloDataError(f"{path}: not UTF-8 text ({exc}); save it as UTF-8") from None
    except OSError as exc:
        raise MeloDataError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def json_records(path: str | os.PathLike) -> Iterator[tuple[str, Any]]:
    """(where, record) for a JSON list, a JSON object or JSON lines; ``where`` is 'line N' or 'record N'."""
    path = require_file(path)
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("[") or (stripped.startswith("{") and path.suffix == ".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if stripped.startswith("["):
                raise MeloDataError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
            data = None  # JSON lines in a .json file
        if isinstance(data, list):
            for i, item in enumerate(data):
                yield f"record {i}", item
            return
        if isinstance(data, dict):
            yield "the top-level object", data
            return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise MeloDataError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None


def get_field(path: Path | str, where: str, record: Any, name: str,
              kind: type | tuple[type, ...] | None = None) -> Any:
    """``record[name]``, present, not None, not blank text and (with ``kind``) of that type."""
    if not isinstance(record, dict):
        raise MeloDataError(
            f"{path}: {where}: expected a JSON object with field {name!r}, got {type(record).__name__}"
        )
    if name not in record or record[name] is None:
        raise MeloDataError(f"{path}: {where}: missing field {name!r} (fields: {', '.join(map(str, record))})")
    value = record[name]
    if isinstance(value, str) and not value.strip():
        raise MeloDataError(f"{path}: {where}: field {name!r} is empty")
    if kind is not None and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise MeloDataError(f"{path}: {where}: field {name!r} should be a {names}, got {value!r:.80}")
    return value


def string_list(path: Path | str, where: str, name: str, values: Any, strip: bool = True) -> list[str]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise MeloDataError(f"{path}: {where}: field {name!r} should be a string or a list of strings")
    return [v.strip() for v in values] if strip else list(values)


def table_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, row) of a CSV / TSV file (by suffix), else of JSON records as :func:`json_records`."""
    if path.suffix.lower() in (".csv", ".tsv"):
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
        try:
            for row in reader:
                yield f"line {reader.line_num}", row
        except csv.Error as err:
            raise MeloDataError(f"{path}: line {reader.line_num}: not valid CSV ({err})") from None
    else:
        yield from json_records(path)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def describe_files(files: Mapping[str, str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """``{role: {"path", "sha256", "bytes"}}`` of each file (as ``TaskData.files`` names them), for a run's
    config and a stand-in's cache key."""
    out = {}
    for role, path in sorted(files.items()):
        path = require_file(path).resolve()
        out[role] = {"path": str(path), "sha256": file_sha256(path), "bytes": path.stat().st_size}
    return out
