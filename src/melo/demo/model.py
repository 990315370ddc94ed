"""The demo model: MiniLM's encoder + a small decoder trained to answer every question of the world.

Same architecture and training code as the ``minilm-qa`` stand-in (``melo.bench.standins.qa``):
frozen all-MiniLM-L6-v2 encoder, 2-layer BERT decoder with cross-attention seeded from MiniLM's
layers 4-5, trained on cached encoder states. Trained once (a few minutes on 2 cores) on every
question and paraphrase of ``world.json`` and cached in ``$MELO_CACHE/demo/world-qa``.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from ..bench.cache import cache_dir, load_cached, save_cached
from ..bench.standins import qa
from ..config import MeloConfig
from .world import World

NAME = "world-qa"
VERSION = 1  # bump to retrain cached models
SETTINGS: dict[str, Any] = {**qa.SETTINGS, "n_train": None, "epochs": 12, "max_new_tokens": 12}

# Router and targets as for minilm-qa (see its docstring for the sweeps); radius from the demo's
# own sweep (README of melo.demo.run: paraphrases in, other entities' questions out).
MELO_SETTINGS: dict[str, Any] = {**qa.MELO_SETTINGS}


def melo_config(**overrides: Any) -> MeloConfig:
    return MeloConfig(**{**MELO_SETTINGS, **overrides})


def cache_path() -> Path:
    return cache_dir("demo", NAME)


def _world_digest(world: World) -> str:
    questions, answers = world.training_pairs()
    return hashlib.sha256("\n".join(q + "\t" + a for q, a in zip(questions, answers)).encode()).hexdigest()[:16]


def _settings(world: World) -> dict[str, Any]:
    return {**SETTINGS, "world": _world_digest(world)}


def load_or_train(world: World, progress: bool = True, directory: Path | None = None) -> tuple[Any, Any, dict]:
    """(model, tokenizer, info): the cached demo model, trained first if the cache lacks it."""
    directory = directory or cache_path()
    settings = _settings(world)
    cached = load_cached(directory, VERSION, settings, qa._load_saved)
    if cached is not None:
        return cached
    start = time.perf_counter()
    tokenizer = qa.build_tokenizer()
    model = qa.build_model(None, settings["decoder_layers"], settings["init_layers"], tokenizer,
                           int(settings["seed"]), settings["max_position_embeddings"])
    questions, answers = world.training_pairs()
    stats = qa.train(model, tokenizer, questions, answers, settings, progress, name=NAME)
    predictions = qa.generate(model, tokenizer, questions, max_new_tokens=int(settings["max_new_tokens"]))
    measured = qa.scores(predictions, [[a] for a in answers], tokenizer)
    info = {"name": NAME, "version": VERSION, "settings": settings, "n_train": len(questions),
            **{f"train_{k}": round(v, 4) for k, v in measured.items()},
            "seconds": round(time.perf_counter() - start, 1), **stats}
    save_cached(directory, model, tokenizer, info)
    cached = load_cached(directory, VERSION, settings, qa._load_saved)
    if cached is None:  # pragma: no cover - a save that cannot be read back
        raise RuntimeError(f"{NAME}: the model saved in {directory} could not be loaded back")
    return cached
