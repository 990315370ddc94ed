"""minilm-scotus stand-in: build, frozen-prefix training, cache round trip, MELO layer names (tiny model)."""

import pytest
import torch
from conftest import make_word_tokenizer
from transformers import BertConfig

import melo
from melo.data import Record, TaskData
from melo.standins import scotus, training
from melo.standins.cache import INFO_FILE

TEXTS = [
    "the capital of france is paris", "the dog is big", "who wrote hamlet", "the sky is blue",
    "the cat is small", "where is the river", "the king of england", "who painted the painting",
    "the sun is hot", "the moon is white",
]
LABELS = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
TINY = dict(epochs=1, lr=1e-3, batch_size=4, frozen_layers=4, max_length=32, seed=0, warmup=0.1, weight_decay=0.0)


def tiny_config() -> BertConfig:
    return BertConfig(
        vocab_size=len(make_word_tokenizer()), hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
    )


def tiny_model():
    return scotus.build_model(5, config=tiny_config())


def test_frozen_prefix_forward_equals_full_forward():
    model, tok = tiny_model().eval(), make_word_tokenizer()
    enc = dict(tok(TEXTS[:4], padding=True, return_tensors="pt"))
    with torch.no_grad():
        full = model(**enc).logits
        feed = {"hidden": training.frozen_prefix_states(model.bert, 4, enc)}
        with training.top_layers_only(model.bert, 4, feed):
            top = model(**enc).logits
    assert len(model.bert.encoder.layer) == 6  # restored
    torch.testing.assert_close(top, full, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_training_moves_only_the_top_layers():
    model, tok = tiny_model(), make_word_tokenizer()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = scotus.train(model, tok, TEXTS, LABELS, {**TINY, "epochs": 2}, progress=False)
    assert len(stats["epoch_losses"]) == 2 and all(torch.isfinite(torch.tensor(stats["epoch_losses"])))
    after = dict(model.named_parameters())
    assert torch.equal(after["bert.embeddings.word_embeddings.weight"],
                       before["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(after["bert.encoder.layer.3.output.dense.weight"],
                       before["bert.encoder.layer.3.output.dense.weight"])
    assert not torch.equal(after["bert.encoder.layer.5.output.dense.weight"],
                           before["bert.encoder.layer.5.output.dense.weight"])
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    preds = scotus.predict(model, tok, TEXTS, max_length=32)
    assert len(preds) == len(TEXTS) and all(0 <= p < 5 for p in preds)


@pytest.mark.slow
def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("MELO_CACHE", str(tmp_path))
    monkeypatch.setattr(scotus, "SETTINGS", TINY)
    task = TaskData("scotus", "classification", [Record(t, y) for t, y in zip(TEXTS[5:], [1, 2, 3, 4, 0])],
                    [Record(t, y) for t, y in zip(TEXTS, LABELS)], label_names=list("abcde"))
    monkeypatch.setattr(scotus, "load_data", lambda data_dir: task)  # no files: keyed by settings alone
    monkeypatch.setattr(scotus, "build_tokenizer", make_word_tokenizer)
    build = scotus.build_model
    monkeypatch.setattr(scotus, "build_model", lambda n: build(n, config=tiny_config()))
    model, tok = scotus.load_or_train(progress=False)
    info = scotus.cached_info()
    assert info["version"] == scotus.VERSION and info["settings"] == TINY and info["n_upstream"] == len(TEXTS)
    assert 0 <= info["upstream_accuracy"] <= 1 and info["edit_errors"] == round((1 - info["edit_accuracy"]) * 5)
    assert (scotus.cache_path() / INFO_FILE).is_file()
    assert scotus.cache_path().parent == tmp_path / "standins" / scotus.NAME

    monkeypatch.setattr(scotus, "train", lambda *a, **k: pytest.fail("retrained although cached"))
    again, tok2 = scotus.load_or_train(progress=False)
    enc = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    with torch.no_grad():
        torch.testing.assert_close(again(**enc).logits, model(**enc).logits)
    assert tok2(TEXTS[0])["input_ids"] == tok(TEXTS[0])["input_ids"]

    monkeypatch.setattr(scotus, "VERSION", scotus.VERSION + 1)  # a new version retrains
    with pytest.raises(pytest.fail.Exception, match="retrained"):
        scotus.load_or_train(progress=False)


@pytest.mark.slow
def test_melo_settings_fit_the_architecture():
    model, tok = tiny_model().eval(), make_word_tokenizer()
    config = melo.MeloConfig(**{**scotus.MELO_SETTINGS, "num_iter": 2})
    edited = melo.get_melo_model(model, config, tokenizer=tok)
    assert set(scotus.MELO_SETTINGS) >= {"task", "router_layer", "target_modules", "key_pooling", "normalize_keys",
                                         "init_radius", "block_rank", "edit_lr", "num_iter", "lr_step", "lr_gamma"}
    result = edited.edit(TEXTS[:2], [1, 2])
    assert result.n_edits == 2 and edited.stats()["blocks"] == 1
    assert edited.encode_keys(TEXTS[:2]).shape == (2, 32)
