"""minilm-qa stand-in: architecture, decoder training, cache round trip, MELO layer names (tiny model)."""

import pytest
import torch
from conftest import make_word_tokenizer
from transformers import BertConfig, EncoderDecoderModel

import melo
from melo.data import Record
from melo.standins import STANDINS, qa
from melo.standins.cache import INFO_FILE

PAIRS = [("who wrote hamlet", "shakespeare"), ("what is the capital of france", "paris"),
         ("what color is the sky", "blue")]
TINY = dict(qa.SETTINGS, n_train=3, epochs=2, batch_size=2, lr=1e-2, max_new_tokens=4)


def tiny_encoder() -> BertConfig:
    return BertConfig(vocab_size=len(make_word_tokenizer()), hidden_size=32, num_hidden_layers=6,
                      num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64, pad_token_id=0)


def tiny_model(tok=None, build=qa.build_model):
    return build(tiny_encoder(), decoder_layers=2, init_layers=[4, 5], tokenizer=tok or tiny_tokenizer())


def tiny_tokenizer():
    return qa.build_tokenizer(make_word_tokenizer())  # no [CLS]/[SEP]: keeps [BOS]/[EOS]


def test_architecture():
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    assert isinstance(model, EncoderDecoderModel) and model.get_encoder() is model.encoder
    dec = model.decoder
    assert dec.config.is_decoder and dec.config.add_cross_attention and dec.config.num_hidden_layers == 2
    assert dec.cls.predictions.decoder.weight is dec.bert.embeddings.word_embeddings.weight  # tied head
    assert torch.equal(dec.bert.embeddings.word_embeddings.weight, model.encoder.embeddings.word_embeddings.weight)
    assert torch.equal(dec.bert.encoder.layer[1].output.dense.weight,
                       model.encoder.encoder.layer[5].output.dense.weight)  # decoder layers start from MiniLM's 4, 5
    assert model.config.decoder_start_token_id == tok.bos_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert STANDINS["minilm-qa"] is qa


@pytest.mark.slow
def test_training_moves_only_the_decoder():
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = qa.train(model, tok, [q for q, _ in PAIRS], [a for _, a in PAIRS], TINY, progress=False)
    assert len(stats["epoch_losses"]) == 2 and all(torch.isfinite(torch.tensor(stats["epoch_losses"])))
    after = dict(model.named_parameters())
    for name in ("encoder.encoder.layer.5.output.dense.weight", "decoder.bert.embeddings.word_embeddings.weight"):
        assert torch.equal(after[name], before[name]), name
    assert not torch.equal(after["decoder.bert.encoder.layer.1.crossattention.self.query.weight"],
                           before["decoder.bert.encoder.layer.1.crossattention.self.query.weight"])
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    answers = qa.generate(model, tok, [q for q, _ in PAIRS], max_new_tokens=4)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


@pytest.mark.slow
def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("MELO_CACHE", str(tmp_path))
    (tmp_path / "data" / "nq").mkdir(parents=True)  # the NQ file keys the cache folder
    (tmp_path / "data" / "nq" / "NQ-open.dev.jsonl").write_text('{"question": "q", "answer": ["a"]}\n')
    monkeypatch.setenv("MELO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(qa, "SETTINGS", TINY)
    records = [Record(q, a, answers=[a]) for q, a in PAIRS]
    monkeypatch.setattr(qa, "load_training_data", lambda data_dir=None, n_train=None: records)
    build_tok = qa.build_tokenizer
    monkeypatch.setattr(qa, "build_tokenizer", lambda source=None: build_tok(source or make_word_tokenizer()))
    monkeypatch.setattr(qa, "build_model", lambda *a, **k: tiny_model(k.get("tokenizer") or a[3]))
    model, tok = qa.load_or_train(progress=False)
    info = qa.cached_info()
    assert info["version"] == qa.VERSION and info["settings"] == TINY and info["n_train"] == 3
    assert 0 <= info["train_f1"] <= 1 and len(info["epoch_losses"]) == 2
    assert (qa.cache_path() / INFO_FILE).is_file() and qa.cache_path().parent == tmp_path / "standins" / qa.NAME
    assert info["data"]["files"]["upstream"]["path"].endswith("NQ-open.dev.jsonl")
    assert tok.eos_token == "[EOS]" and model.generation_config.eos_token_id == tok.eos_token_id

    monkeypatch.setattr(qa, "train", lambda *a, **k: pytest.fail("retrained although cached"))
    again, tok2 = qa.load_or_train(progress=False)
    enc = dict(tok([q for q, _ in PAIRS], padding=True, return_tensors="pt"))
    labels = torch.tensor([[5, 6, tok.eos_token_id]] * 3)
    with torch.no_grad():
        torch.testing.assert_close(again(**enc, labels=labels).logits, model(**enc, labels=labels).logits)
    assert tok2(PAIRS[0][0])["input_ids"] == tok(PAIRS[0][0])["input_ids"]

    monkeypatch.setattr(qa, "VERSION", qa.VERSION + 1)  # a new version retrains
    with pytest.raises(pytest.fail.Exception, match="retrained"):
        qa.load_or_train(progress=False)


@pytest.mark.slow
def test_melo_settings_fit_the_architecture():
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    assert set(qa.MELO_SETTINGS) >= {"task", "router_layer", "target_modules", "key_pooling", "normalize_keys",
                                     "init_radius", "block_rank", "edit_lr", "num_iter", "lr_step", "lr_gamma"}
    config = melo.MeloConfig(**{**qa.MELO_SETTINGS, "num_iter": 3})
    edited = melo.get_melo_model(model, config, tokenizer=tok)
    prompts = [q for q, _ in PAIRS[:2]]
    enc = dict(tok(prompts, padding=True, return_tensors="pt"))
    with edited.disabled():
        before = edited.generate(**enc, max_new_tokens=3)
    result = edited.edit(prompts, ["paris", "blue"])
    assert result.n_edits == 2 and edited.stats()["blocks"] == 1 and len(result.losses) == 3
    assert edited.encode_keys(prompts).shape == (2, 32)
    assert edited.route(enc["input_ids"], enc["attention_mask"]).tolist() == [0, 0]
    assert edited.generate(**enc, max_new_tokens=3).shape[0] == 2
    with edited.disabled():
        assert torch.equal(edited.generate(**enc, max_new_tokens=3), before)
