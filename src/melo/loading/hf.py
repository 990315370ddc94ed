"""transformers helpers of the loaders: the auto class of a task, the task of a config, progress bars."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

_AUTO_CLASSES = MappingProxyType({
    "causal_lm": "AutoModelForCausalLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "classification": "AutoModelForSequenceClassification",
})


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def auto_class(task: str) -> Any:
    import transformers

    return getattr(transformers, _AUTO_CLASSES[task])


def infer_task(config: Any) -> str:
    """seq2seq for encoder-decoders, classification for sequence-classification architectures, else causal_lm."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    classifiers = set(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values())
    if any(arch in classifiers for arch in getattr(config, "architectures", None) or ()):
        return "classification"
    return "causal_lm"


@contextlib.contextmanager
def transformers_bars(progress: bool) -> Iterator[None]:
    """transformers' own progress bars on or off for the duration, then as they were."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    if progress:
        logging.enable_progress_bar()
    else:
        logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()
        else:
            logging.disable_progress_bar()
