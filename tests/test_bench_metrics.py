"""Benchmark metrics on hand-computed cases."""

import math

import pytest
import torch

from melo.evaluation.metrics import accuracy, exact_match, grace_token_f1, mean, normalize_answer, perplexity, token_f1


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("The  Cat's, hat!", "cats hat"),
        ("An apple a day", "apple day"),
        ("  Paris\n", "paris"),
        ("theory of the atom", "theory of atom"),  # 'the' inside a word stays
        ("", ""),
    ],
)
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_token_f1_hand_computed():
    # pred {cat, sat}, gold {cat, sat, down}: P = 1, R = 2/3, F1 = 0.8
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # common tokens count with multiplicity: x x y vs x y y share 2 of 3 each
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("Paris", "London") == 0.0
    assert token_f1("December 1972", ["14 December 1972 UTC", "December 1972"]) == 1.0  # best answer
    assert token_f1("14 December", ["14 December 1972 UTC"]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert token_f1("The", "a") == 1.0  # both normalise to nothing
    assert token_f1("", "Paris") == 0.0
    with pytest.raises(ValueError, match="no reference answers"):
        token_f1("x", [])


def test_exact_match():
    assert exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert exact_match("Eiffel", "eiffel tower") == 0.0
    assert exact_match("1998", ["2006", "1998"]) == 1.0


def test_accuracy():
    assert accuracy([1, 2, 3], [1, 0, 3]) == pytest.approx(2 / 3)
    assert accuracy(torch.tensor([0, 1]), torch.tensor([0, 1])) == 1.0
    assert accuracy((x for x in "ab"), ["a", "c"]) == 0.5
    assert math.isnan(accuracy([], []))
    with pytest.raises(ValueError, match="2 predictions but 1 labels"):
        accuracy([1, 2], [1])


def test_perplexity():
    assert perplexity(3 * math.log(4), 3) == pytest.approx(4.0)
    assert perplexity(0.0, 5) == 1.0
    assert perplexity(torch.tensor(2.0).item(), 2) == pytest.approx(math.e)
    assert math.isnan(perplexity(1.0, 0))
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError, match="must not be negative"):
        perplexity(1.0, -1)


def test_mean():
    assert math.isnan(mean([]))
    assert mean([1, 2]) == 1.5
    assert mean(x / 2 for x in range(3)) == 0.5
    assert mean(torch.tensor([1.0, 3.0])) == 2.0
    assert math.isnan(mean([1.0, float("nan")]))


def test_grace_token_f1():
    # distinct shared ids {5, 1}: P = 2/4 (the repeated 6 counts in the length), R = 2/3
    assert grace_token_f1([5, 6, 6, 1], [5, 7, 1]) == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert grace_token_f1([0, 5, 1], [5, 1, -100, -100], pad_id=0) == 1.0  # padding and ignored labels removed
    assert grace_token_f1([5, 5, 1], [5, 1]) == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert grace_token_f1([9, 1], [5, 1]) == 0.5
    assert grace_token_f1([9], [5, 1]) == 0.0
    assert grace_token_f1([0], [5], pad_id=0) == 0.0  # a lone pad is kept, as GRACE does, and matches nothing
    assert grace_token_f1(torch.tensor([5, 1]), torch.tensor([5, 1])) == 1.0
