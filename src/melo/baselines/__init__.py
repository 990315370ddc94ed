"""Baselines driven by the same harness as MELO: GRACE, sequential LoRA and sequential fine-tuning.

Every editor has MeloModel's surface: ``edit(prompts, targets) -> EditResult``, ``stats()``,
``tokenizer``, ``melo_config`` (the settings the comparison shares), model-like ``__call__`` and
``generate``, ``parameters()``, ``disabled()``, ``save_pretrained(dir)`` and the classmethod
``from_pretrained(base_model, dir, tokenizer=None)``. Edit batches are checked and turned into
training inputs exactly as MeloModel does it (``melo.text.check_edit_batch`` / ``edit_batch``), so
every method sees the same token sequences and the same errors.

    editor = make_baseline("grace", base_model, melo_config, tokenizer, eps_init=1.0)
    editor = make_baseline("lora", base_model, melo_config, tokenizer, expected_blocks=100)
    editor = make_baseline("ft", base_model, melo_config, tokenizer)
    editor = load_baseline(fresh_base_model, "adapter/", tokenizer)   # any of the three
"""

from __future__ import annotations

import inspect
import os
from contextlib import contextmanager
from typing import Any, Sequence

import torch
from torch import nn

from ..config import MeloConfig
from ..errors import MeloCapacityError, MeloConfigError, MeloEditError, MeloLoadError
from ..model import dummy_inputs
from ..persistence import FORMAT_VERSION, read_adapter, write_adapter
from ..text import check_edit_batch, edit_batch, pad_with_eos, tokenize


class BaselineEditor(nn.Module):
    """What the three baselines share: the wrapped model, batch checks, records, save/load framing."""

    method = "?"

    def __init__(self, base_model: nn.Module, config: MeloConfig, tokenizer: Any = None):
        super().__init__()
        self.base_model = base_model
        self.melo_config = config
        self.tokenizer = pad_with_eos(tokenizer)
        self.records: list[dict[str, Any]] = []
        self.n_batches = 0

    def _check_batch(self, prompts: Sequence[str], targets: Sequence[Any]) -> None:
        if self.tokenizer is None:
            raise MeloEditError(f"this {type(self).__name__} has no tokenizer: pass tokenizer= to make_baseline")
        check_edit_batch(self.task, prompts, targets, getattr(self.base_model.config, "num_labels", None))
        cap = self.melo_config.max_blocks
        if cap is not None and self.n_batches >= cap:
            raise MeloCapacityError(f"max_blocks={cap} reached: cannot add edit batch {self.n_batches}")

    def _training_batch(self, prompts: Sequence[str], targets: Sequence[Any]) -> tuple[dict[str, torch.Tensor], list[tuple]]:
        batch, labels = edit_batch(self.task, self.tokenizer, prompts, targets, self.melo_config.target_prefix)
        return {k: v.to(self.device) for k, v in batch.items()}, labels

    def _tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in tokenize(self.tokenizer, texts).items()}

    def _dummy_inputs(self) -> dict[str, torch.Tensor]:
        return dummy_inputs(self.base_model, self.task)

    @property
    def task(self) -> str:
        return self.melo_config.task

    @property
    def device(self) -> torch.device:
        return next(self.base_model.parameters()).device

    @property
    def config(self):
        return self.base_model.config

    @property
    def n_blocks(self) -> int:
        """Edit batches so far; ``melo_config.max_blocks`` caps them as it caps MELO's blocks."""
        return self.n_batches

    def forward(self, *args: Any, **kwargs: Any):
        return self.base_model(*args, **kwargs)

    @torch.no_grad()
    def generate(self, *args: Any, **kwargs: Any):
        return self.base_model.generate(*args, **kwargs)

    @contextmanager
    def disabled(self):
        yield self

    def _record(self, prompts: Sequence[str], targets: Sequence[Any]) -> int:
        batch = self.n_batches
        self.records.extend({"prompt": p, "target": t, "block": batch} for p, t in zip(prompts, targets))
        self.n_batches += 1
        return batch

    def stats(self) -> dict[str, int]:
        return {"edits": len(self.records), "batches": self.n_batches}

    # ---- persistence framing ----------------------------------------------------------------
    def _meta(self, **extra: Any) -> dict[str, Any]:
        return {"method": self.method, "config": self.melo_config.to_dict(), "edits": self.records,
                "batches": self.n_batches, **extra}

    @classmethod
    def _read(cls, directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        where = os.fspath(directory)
        try:
            tensors, meta = read_adapter(directory)
        except FileNotFoundError as err:
            raise MeloLoadError(f"no {cls.method} adapter in {where!r}: {err}") from err
        if meta.get("format_version") != FORMAT_VERSION:
            raise MeloLoadError(f"adapter {where!r} has format version {meta.get('format_version')!r}; "
                                f"this melo reads version {FORMAT_VERSION}")
        method = meta.get("method", "melo")
        if method != cls.method:
            raise MeloLoadError(f"adapter {where!r} was saved by method {method!r}, not {cls.method!r}")
        return tensors, meta

    def _restore_records(self, meta: dict[str, Any]) -> None:
        self.records = meta["edits"]
        self.n_batches = int(meta["batches"])

    def _write(self, directory: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        write_adapter(directory, tensors, meta)


BASELINES = ("grace", "lora", "ft")


def _classes() -> dict[str, type]:
    from .finetune import FinetuneEditor, LoraEditor
    from .grace import GraceEditor

    return {"grace": GraceEditor, "lora": LoraEditor, "ft": FinetuneEditor}


def make_baseline(method: str, model: nn.Module, melo_config: MeloConfig, tokenizer: Any = None,
                  **options: Any) -> BaselineEditor:
    """A baseline editor on ``model`` sharing ``melo_config``'s task, targets and edit schedule.

    Options: grace: ``layer`` (default: the first target module), ``eps_init``, ``lr``, ``n_iter``,
    ``replacement`` ("last" | "all"), ``val_init`` ("cold" | "warm"); lora: ``r`` or
    ``expected_blocks`` (r = block_rank x expected_blocks), ``lora_alpha``; ft: none.
    """
    classes = _classes()
    if method not in classes:
        raise MeloConfigError(f"unknown baseline method {method!r}; known: {list(BASELINES)}")
    cls = classes[method]
    known = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "base_model", "config", "tokenizer")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise MeloConfigError(f"unknown option(s) {unknown} for baseline {method!r}; known: {known}")
    return cls(model, melo_config, tokenizer=tokenizer, **options)


def load_baseline(base_model: nn.Module, directory: str | os.PathLike, tokenizer: Any = None) -> BaselineEditor:
    """Load whichever baseline saved ``directory`` onto ``base_model``."""
    try:
        _, meta = read_adapter(directory)
    except FileNotFoundError as err:
        raise MeloLoadError(f"no adapter in {os.fspath(directory)!r}: {err}") from err
    method = meta.get("method", "melo")
    classes = _classes()
    if method not in classes:
        raise MeloLoadError(f"adapter {os.fspath(directory)!r} was saved by {method!r}, not a baseline {list(BASELINES)}")
    return classes[method].from_pretrained(base_model, directory, tokenizer=tokenizer)


def __getattr__(name: str):
    if name in ("GraceEditor", "LoraEditor", "FinetuneEditor"):
        return {c.__name__: c for c in _classes().values()}[name]
    raise AttributeError(name)


__all__ = ["BASELINES", "BaselineEditor", "FinetuneEditor", "GraceEditor", "LoraEditor", "load_baseline",
           "make_baseline"]
