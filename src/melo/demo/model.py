"""The demo model: MiniLM's encoder + a small decoder trained to answer every question of the world.

Same architecture and training code as the ``minilm-qa`` stand-in (``melo.standins.qa``), trained
once (a few minutes on 2 cores) on every question and paraphrase of ``world.json`` and cached in
``$MELO_CACHE/demo/world-qa``. MELO settings: ``PRESETS["world-qa"]`` (``melo.presets``); the sweep
behind its radius is in ``docs/demo.md``.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from ..config import MeloConfig
from ..persistence import cache_dir
from ..presets import PRESETS
from ..standins import cache, qa
from .world import World

NAME = "world-qa"
VERSION = 1  # bump to retrain cached models
SETTINGS: dict[str, Any] = {**qa.SETTINGS, "n_train": None, "epochs": 12, "max_new_tokens": 12}


def melo_config(**overrides: Any) -> MeloConfig:
    return MeloConfig(**{**PRESETS[NAME], **overrides})


def cache_path() -> Path:
    return cache_dir("demo", NAME)


def _world_digest(world: World) -> str:
    questions, answers = world.training_pairs()
    return hashlib.sha256("\n".join(q + "\t" + a for q, a in zip(questions, answers)).encode()).hexdigest()[:16]


def _settings(world: World) -> dict[str, Any]:
    return {**SETTINGS, "world": _world_digest(world)}


def is_cached(world: World, directory: Path | None = None) -> bool:
    """Whether a finished save for this world and these settings is in the cache (no model load)."""
    return cache.finished_save(directory or cache_path(), VERSION, _settings(world)) is not None


def train_and_save(world: World, directory: Path, progress: bool = True) -> dict[str, Any]:
    """Train the demo model on every question of ``world``, measure it, save it in ``directory``; returns its info."""
    settings = _settings(world)
    start = time.perf_counter()
    tokenizer = qa.build_tokenizer()
    model = qa.build_model(None, settings["decoder_layers"], settings["init_layers"], tokenizer,
                           int(settings["seed"]), settings["max_position_embeddings"])
    questions, answers = world.training_pairs()
    stats = qa.train(model, tokenizer, questions, answers, settings, progress, label=NAME)
    predictions = qa.generate(model, tokenizer, questions, max_new_tokens=int(settings["max_new_tokens"]))
    measured = qa.scores(predictions, [[a] for a in answers], tokenizer)
    info = {"name": NAME, "version": VERSION, "settings": settings, "n_train": len(questions),
            **{f"train_{k}": round(v, 4) for k, v in measured.items()},
            "seconds": round(time.perf_counter() - start, 1), **stats}
    cache.save_cached(directory, model, tokenizer, info)
    return info


def load_or_train(world: World, progress: bool = True, directory: Path | None = None) -> tuple[Any, Any, dict]:
    """(model, tokenizer, info): the cached demo model, trained first if the cache lacks it."""
    directory = directory or cache_path()
    return cache.load_or_train(directory, VERSION, _settings(world), qa.load_saved,
                               lambda d: train_and_save(world, d, progress))
