"""Generic readers: text files, JSON / JSON lines / CSV records, and field checks that name file, line and field."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..errors import MeloDataError
from .locate import require_file

T = TypeVar("T")


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MeloDataError(f"{path}: not UTF-8 text ({exc}); save it as UTF-8") from None
    except OSError as exc:
        raise MeloDataError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def json_records(path: str | os.PathLike, skipped: list[dict[str, str]] | None = None) -> Iterator[tuple[str, Any]]:
    """(where, record) for a JSON list, a JSON object or JSON lines; ``where`` is 'line N' or 'record N'.
    A JSON line that does not parse is an error, or with ``skipped`` listed there (see :func:`parse_records`)."""
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
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if skipped is None:
                raise MeloDataError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
            skipped.append({"record": f"line {number}", "reason": f"invalid JSON ({exc.msg})"})
            continue
        yield f"line {number}", record


def parse_records(path: Path | str, records: Iterable[tuple[str, Any]], parse: Callable[[str, Any], T],
                  skipped: list[dict[str, str]] | None = None, limit: int | None = None) -> list[T]:
    """``parse(where, record)`` of each record, up to ``limit`` results. A record ``parse`` refuses (a
    MeloDataError) stops the load; with ``skipped`` (``--skip-invalid``) it is left out and listed there
    as ``{"record": where, "reason": ...}``, and the load goes on."""
    out: list[T] = []
    if limit is not None and limit <= 0:
        return out
    for where, record in records:  # read no further than the limit: a bad record after it is no error
        try:
            out.append(parse(where, record))
        except MeloDataError as err:
            if skipped is None:
                raise
            reason = str(err)
            prefix = f"{path}: {where}: "
            skipped.append({"record": where, "reason": reason[len(prefix):] if reason.startswith(prefix) else reason})
            continue
        if limit is not None and len(out) >= limit:
            break
    return out


def describe_skipped(path: Path | str, skipped: list[dict[str, str]], shown: int = 20) -> str:
    """Terminal lines for the records ``--skip-invalid`` left out of ``path``: the count, then each."""
    lines = [f"--skip-invalid: {len(skipped)} invalid record{'s' if len(skipped) != 1 else ''} of {path} skipped"]
    lines += [f"  {s['record']}: {s['reason']}" for s in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"  ... and {len(skipped) - shown} more (all listed in the run's files)")
    return "\n".join(lines)


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


def table_rows(path: Path, skipped: list[dict[str, str]] | None = None) -> Iterator[tuple[str, Any]]:
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
        yield from json_records(path, skipped)


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
