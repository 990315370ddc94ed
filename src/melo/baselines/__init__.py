"""Baselines driven by the same harness as MELO: GRACE, sequential LoRA and sequential fine-tuning.

Every editor has MeloModel's surface: ``edit(prompts, targets) -> EditResult``, ``stats()``,
``tokenizer``, ``melo_config`` (the settings the comparison shares), model-like ``__call__`` and
``generate``, ``parameters()``, ``disabled()``, ``save_pretrained(dir)`` and the classmethod
``from_pretrained(base_model, dir, tokenizer)``. Edit batches are checked and turned into
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
from typing import Any

from torch import nn

from ..config import MeloConfig
from ..errors import MeloConfigError, MeloLoadError
from ..persistence import read_adapter
from .base import BaselineEditor
from .finetune import FinetuneEditor, LoraEditor
from .grace import GraceEditor

BASELINES = ("grace", "lora", "ft")
CLASSES: dict[str, type[BaselineEditor]] = {"grace": GraceEditor, "lora": LoraEditor, "ft": FinetuneEditor}


def make_baseline(method: str, model: nn.Module, melo_config: MeloConfig, tokenizer: Any = None,
                  **options: Any) -> BaselineEditor:
    """A baseline editor on ``model`` sharing ``melo_config``'s task, targets and edit schedule.

    Options: grace: ``layer`` (default: the first target module), ``eps_init``, ``lr``, ``n_iter``,
    ``replacement`` ("last" | "all"), ``val_init`` ("cold" | "warm"); lora: ``r`` or
    ``expected_blocks`` (r = block_rank x expected_blocks), ``lora_alpha``; ft: none.
    """
    if method not in CLASSES:
        raise MeloConfigError(f"unknown baseline method {method!r}; known: {list(BASELINES)}")
    cls = CLASSES[method]
    known = [p for p in inspect.signature(cls.__init__).parameters
             if p not in ("self", "base_model", "config", "tokenizer")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise MeloConfigError(f"unknown option(s) {unknown} for baseline {method!r}; known: {known}")
    return cls(model, melo_config, tokenizer=tokenizer, **options)


def load_baseline(base_model: nn.Module, directory: str | os.PathLike, tokenizer: Any = None) -> BaselineEditor:
    """Load whichever baseline saved ``directory`` onto ``base_model``."""
    _, meta = read_adapter(directory)
    method = meta.get("method", "melo")
    if method not in CLASSES:
        raise MeloLoadError(f"adapter {os.fspath(directory)!r} was saved by {method!r}, "
                            f"not a baseline {list(BASELINES)}")
    return CLASSES[method].from_pretrained(base_model, directory, tokenizer=tokenizer)


__all__ = ["BASELINES", "BaselineEditor", "FinetuneEditor", "GraceEditor", "LoraEditor", "load_baseline",
           "make_baseline"]
