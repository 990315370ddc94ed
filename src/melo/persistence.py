"""Crash-safe saves of an adapter: tensors in safetensors, everything else in one JSON file.

Layout of a directory (format version 2)::

    melo_adapter.json                         the commit point: meta + name and sha256 of the tensors file
    melo_adapter-<sha256[:16]>.safetensors    tensors, named by their content

A save writes the tensors file under its content name, then replaces ``melo_adapter.json`` with one
``os.replace`` (each file and the directory fsynced first). A crash at any moment leaves the old JSON
naming the old tensors file, or the new JSON naming the new one. Files no longer named are deleted
after the commit. Savers to one directory hold an exclusive ``flock`` for the whole save. Loading
reads JSON and safetensors only (never pickle) and checks the tensors against the stored sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .errors import MeloLoadError

FORMAT_VERSION = 2
META_FILE = "melo_adapter.json"
LOCK_FILE = ".melo_adapter.lock"
TENSORS_PREFIX = "melo_adapter-"
TENSORS_SUFFIX = ".safetensors"
LEGACY_TENSORS_FILE = "melo_adapter.safetensors"  # format version 1; removed by the next save
TEMP_PREFIX = ".melo_adapter-"
TEMP_SUFFIX = ".tmp"
STORAGE_KEY = "storage"
RESERVED_KEYS = ("format_version", STORAGE_KEY)
_TENSORS_NAME = re.compile(r"melo_adapter-([0-9a-f]{16})\.safetensors")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_READ_ATTEMPTS = 10  # a concurrent save may delete the tensors file between our two reads


def tensors_file_name(sha256: str) -> str:
    return f"{TENSORS_PREFIX}{sha256[:16]}{TENSORS_SUFFIX}"


def cache_dir(*parts: str, root: str | os.PathLike | None = None) -> Path:
    """``<root or $MELO_CACHE or ~/.cache/melo>/<parts...>``, created: the one place melo's caches live."""
    base = Path(root or os.environ.get("MELO_CACHE") or Path.home() / ".cache" / "melo").expanduser()
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- writing ------------------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder``, then ``folder`` itself (a finished build, before its rename)."""
    for path in sorted(folder.rglob("*"), reverse=True):  # deepest first: a folder after what it holds
        if path.is_dir():
            fsync_dir(path)
        elif path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(folder)


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file next to ``path``, fsync it, rename it onto ``path``, fsync the directory."""
    tmp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def save_lock(directory: Path) -> Iterator[None]:
    """Exclusive lock of ``directory`` for one save; the lock file is removed before it is released."""
    import fcntl  # POSIX only: imported here, so `import melo` works where it is missing

    lock_path = directory / LOCK_FILE
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                current = os.stat(lock_path)
                same = (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # the previous holder removed this lock file: lock the one there now
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def _is_stale(name: str, committed: str) -> bool:
    if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
        return True
    return name != committed and (name == LEGACY_TENSORS_FILE or _TENSORS_NAME.fullmatch(name) is not None)


def write_adapter(directory: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save ``tensors`` and the JSON-serialisable ``meta`` to ``directory``, replacing any save there."""
    reserved = [key for key in RESERVED_KEYS if key in meta]
    if reserved:
        raise ValueError(f"meta keys {reserved} are reserved for the file format")
    path = Path(directory)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    if created:
        fsync_dir(path.parent)
    data = save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    digest = hashlib.sha256(data).hexdigest()
    name = tensors_file_name(digest)
    storage = {"tensors_file": name, "sha256": digest, "bytes": len(data)}
    text = json.dumps({"format_version": FORMAT_VERSION, STORAGE_KEY: storage, **meta}, indent=1)
    with save_lock(path):
        write_durably(path / name, data)
        write_durably(path / META_FILE, text.encode("utf-8"))  # the commit point
        for entry in os.listdir(path):
            if _is_stale(entry, name):
                (path / entry).unlink(missing_ok=True)


# ---- reading ------------------------------------------------------------------------------------
def _read_bytes(file: Path, directory: Path) -> bytes:
    try:
        return file.read_bytes()
    except FileNotFoundError as err:
        raise MeloLoadError(f"no adapter in {os.fspath(directory)!r}: {file.name} is missing") from err
    except OSError as err:
        raise MeloLoadError(f"cannot read {os.fspath(file)!r}: {err}") from err


def _parse_meta(raw: bytes, file: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta, storage) of the JSON file's bytes, after checking the format fields."""
    where = os.fspath(file)
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MeloLoadError(f"{where!r} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise MeloLoadError(f"{where!r} holds a JSON {type(meta).__name__}, not an object")
    if "format_version" not in meta:
        raise MeloLoadError(f"{where!r} has no format_version: not a melo adapter")
    version = meta["format_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise MeloLoadError(f"{where!r} has format_version {version!r}, not an integer")
    if version != FORMAT_VERSION:
        raise MeloLoadError(f"{where!r} has format version {version}; this melo reads version {FORMAT_VERSION}")
    storage = meta.pop(STORAGE_KEY, None)
    if not isinstance(storage, dict):
        raise MeloLoadError(f"{where!r}: field {STORAGE_KEY!r} is {storage!r}, not an object")
    name, digest, size = storage.get("tensors_file"), storage.get("sha256"), storage.get("bytes")
    match = _TENSORS_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise MeloLoadError(f"{where!r}: tensors_file {name!r} is not a name melo writes")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest) or not digest.startswith(match.group(1)):
        raise MeloLoadError(f"{where!r}: sha256 {digest!r} is not the 64-digit hex digest of {name!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise MeloLoadError(f"{where!r}: bytes {size!r} is not a file size")
    return meta, storage


def _check_required(meta: dict[str, Any], required: Mapping[str, type | tuple[type, ...]], file: Path) -> None:
    for key, kind in required.items():
        if key not in meta:
            raise MeloLoadError(f"{os.fspath(file)!r}: field {key!r} is missing")
        if (isinstance(meta[key], bool) and kind is not bool) or not isinstance(meta[key], kind):
            raise MeloLoadError(f"{os.fspath(file)!r}: field {key!r} is a {type(meta[key]).__name__}, "
                                f"expected {getattr(kind, '__name__', kind)}")


def read_adapter(
    directory: str | os.PathLike, *, required: Mapping[str, type | tuple[type, ...]] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of the last complete save in ``directory``; ``meta`` keeps ``format_version``.

    ``required`` maps meta fields to the type each must have. Every failure is a MeloLoadError
    naming the file and the problem.
    """
    path = Path(directory)
    if not path.is_dir():
        problem = "it is not a directory" if path.exists() else "the directory does not exist"
        raise MeloLoadError(f"no adapter in {os.fspath(path)!r}: {problem}")
    meta_file = path / META_FILE
    raw = _read_bytes(meta_file, path)
    for attempt in range(_READ_ATTEMPTS):
        meta, storage = _parse_meta(raw, meta_file)
        tensors_file = path / storage["tensors_file"]
        try:
            data = tensors_file.read_bytes()
            break
        except FileNotFoundError as err:
            newer = _read_bytes(meta_file, path)
            if newer == raw or attempt == _READ_ATTEMPTS - 1:
                raise MeloLoadError(f"{os.fspath(tensors_file)!r}, named by {META_FILE}, is missing") from err
            raw = newer  # a save committed meanwhile: read the new one
        except OSError as err:
            raise MeloLoadError(f"cannot read {os.fspath(tensors_file)!r}: {err}") from err
    where = os.fspath(tensors_file)
    if len(data) != storage["bytes"]:
        raise MeloLoadError(f"{where!r} is truncated or overwritten: {len(data)} bytes, {storage['bytes']} saved")
    digest = hashlib.sha256(data).hexdigest()
    if digest != storage["sha256"]:
        raise MeloLoadError(f"{where!r} fails its checksum (sha256 {digest}, saved {storage['sha256']}): "
                            "the file is corrupt or was changed after saving")
    try:
        tensors = load_safetensors(data)
    except SafetensorError as err:
        raise MeloLoadError(f"{where!r} is not a valid safetensors file: {err}") from err
    _check_required(meta, required or {}, meta_file)
    return tensors, meta
