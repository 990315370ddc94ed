"""The demo model: MiniLM's encoder + a small decoder trained to answer every question of the world.

Same architecture and training code as the ``minilm-qa`` stand-in (``melo.bench.standins.qa``):
frozen all-MiniLM-L6-v2 encoder, 2-layer BERT decoder with cross-attention seeded from MiniLM's
layers 4-5, trained on cached encoder states. Trained once (a few minutes on 2 cores) on every
question and paraphrase of ``world.json`` and cached in ``$MELO_CACHE/demo/world-qa``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from ..bench.cache import cache_dir, cached_info, load_cached, save_cached
from ..bench.standins import qa
from ..config import MeloConfig
from .world import World

NAME = "world-qa"
VERSION = 1  # bump to retrain cached models
SETTINGS: dict[str, Any] = {**qa.SETTINGS, "n_train": None, "epochs": 12, "max_new_tokens": 12}

# Router and targets as for minilm-qa (its docstring has the zsRE sweeps); the radius is the demo's.
# Sweep on this world (80 edit questions; 160 paraphrases; 486 questions of untouched facts, 285 of
# them about an entity some edit changes), fraction of paraphrases inside their edit's ball and of
# controls outside every ball, by key distance alone:
#   [CLS] of layer 5, r 0.20: paraphrases 0.74, other entities out 1.00, same entity out 0.70
#   [CLS] of layer 5, r 0.25: 0.88 / 1.00 / 0.47;  r 0.30: 0.91 / 1.00 / 0.35
#   mean of layer 5,  r 0.45: 0.70 / 1.00 / 0.83;  r 0.50: 0.80 / 1.00 / 0.79
#   mean of layer 4,  r 0.35: 0.70 / 0.97 / 0.82;  [CLS]+mean concatenated: no better
# MiniLM's states put "Who founded X?" about as near "Where is X based?" as its paraphrase "Who is
# the founder of X?": no radius separates them. End to end (melo run, 80 edits): r 0.20 gives
# generality 0.56, locality 1.00 on other entities and 0.72 on other questions about edited
# entities; r 0.25: 0.66 / 1.00 / 0.52; mean r 0.45: 0.46 / 1.00 / 0.85. Cross-attention targets or
# 50 steps changed nothing: routing, not the block, limits generality here.
MELO_SETTINGS: dict[str, Any] = {**qa.MELO_SETTINGS, "init_radius": 0.2}


def melo_config(**overrides: Any) -> MeloConfig:
    return MeloConfig(**{**MELO_SETTINGS, **overrides})


def cache_path() -> Path:
    return cache_dir("demo", NAME)


def _world_digest(world: World) -> str:
    questions, answers = world.training_pairs()
    return hashlib.sha256("\n".join(q + "\t" + a for q, a in zip(questions, answers)).encode()).hexdigest()[:16]


def _settings(world: World) -> dict[str, Any]:
    return {**SETTINGS, "world": _world_digest(world)}


def is_cached(world: World, directory: Path | None = None) -> bool:
    """Whether a finished save for this world and these settings is in the cache (no model load)."""
    info = cached_info(directory or cache_path())
    return bool(info) and info.get("version") == VERSION and info.get("settings") == json.loads(json.dumps(_settings(world)))


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
    stats = qa.train(model, tokenizer, questions, answers, settings, progress, label=NAME)
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
