"""Benchmark metrics: QA token F1 and exact match, accuracy, perplexity, a NaN-safe mean.

QA scores follow the SQuAD evaluation: answers are normalised (lower case, no punctuation, no
articles ``a``/``an``/``the``, single spaces) and split on whitespace; F1 counts common tokens
with multiplicity; with several acceptable answers the best score counts.

GRACE's ``F1`` (``grace/metrics.py``), which the MELO/GRACE papers report for zsRE, differs:
it compares the *token ids* that the model generates (padding removed, end-of-sequence kept)
with the label ids of one answer, counts distinct shared ids (``numpy.intersect1d``, so a
repeated token counts once), does not normalise text, and scores a generation that shares
no id (or crashes) 0. Its precision and recall are ``shared / len(prediction ids)`` and
``shared / len(label ids)``. :func:`grace_token_f1` reproduces it on id lists for a faithful
comparison; :func:`token_f1` is the tokenizer-independent score. Both give 1.0 to an exact answer.

GRACE's perplexity ``PPL`` is ``exp`` of the mean token NLL of one example (one batch), then
averaged over examples (``nanmean``); use ``mean([perplexity(nll_i, n_i) ...])`` to reproduce it
and ``perplexity(sum_nll, sum_tokens)`` for the corpus-level figure.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "normalize_answer",
    "token_f1",
    "exact_match",
    "accuracy",
    "perplexity",
    "mean",
    "grace_token_f1",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answers(answers: str | Sequence[str]) -> list[str]:
    if isinstance(answers, str):
        return [answers]
    answers = list(answers)
    if not answers:
        raise ValueError("no reference answers given")
    return answers


def _f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: str | Sequence[str]) -> float:
    """SQuAD token F1 of ``prediction`` against the best of ``answers`` (0.0 .. 1.0).

    An answer that normalises to nothing (e.g. ``"the"``) matches only an empty prediction.
    """
    return max(_f1(prediction, answer) for answer in _answers(answers))


def exact_match(prediction: str, answers: str | Sequence[str]) -> float:
    """1.0 when ``prediction`` equals one of ``answers`` after normalisation, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(answer) for answer in _answers(answers)))


def _values(seq: Any) -> list:
    return list(seq.tolist()) if hasattr(seq, "tolist") else list(seq)


def accuracy(predictions: Iterable[Any], labels: Iterable[Any]) -> float:
    """Fraction of ``predictions`` equal to ``labels`` (lists, tuples or tensors); NaN when empty."""
    preds, gold = _values(predictions), _values(labels)
    if len(preds) != len(gold):
        raise ValueError(f"{len(preds)} predictions but {len(gold)} labels")
    if not preds:
        return float("nan")
    return sum(p == g for p, g in zip(preds, gold)) / len(preds)


def perplexity(total_nll: float, n_tokens: int) -> float:
    """``exp(total_nll / n_tokens)`` (natural-log NLL summed over ``n_tokens`` scored tokens).

    NaN for zero tokens, ``inf`` when it overflows a float.
    """
    if n_tokens < 0:
        raise ValueError(f"n_tokens must not be negative, got {n_tokens}")
    if n_tokens == 0:
        return float("nan")
    try:
        return math.exp(float(total_nll) / n_tokens)
    except OverflowError:
        return float("inf")


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; NaN for no values (a NaN among the values makes the mean NaN)."""
    values = [float(v) for v in _values(values)]
    return sum(values) / len(values) if values else float("nan")


def grace_token_f1(
    predicted_ids: Sequence[int], label_ids: Sequence[int], pad_id: int | None = None, ignore_index: int = -100
) -> float:
    """GRACE's QA F1 on token ids (see the module docstring): distinct shared ids.

    ``predicted_ids`` is one generated sequence (``pad_id`` removed when it has more than one
    id, as GRACE does), ``label_ids`` the tokenised answer with its end-of-sequence id
    (``ignore_index`` entries removed).
    """
    pred = [int(i) for i in _values(predicted_ids)]
    if len(pred) > 1 and pad_id is not None:
        pred = [i for i in pred if i != pad_id]
    gold = [int(i) for i in _values(label_ids) if int(i) != ignore_index]
    if not pred or not gold:
        return 0.0
    shared = len(set(pred) & set(gold))
    if shared == 0:
        return 0.0
    precision, recall = shared / len(pred), shared / len(gold)
    return 2 * precision * recall / (precision + recall)
