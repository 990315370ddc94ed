"""minilm-lm stand-in: causal BERT decoder, tokenizer template, training, generate, cache, MELO layers (tiny model)."""

import pytest
import torch
from transformers import BertConfig, BertTokenizer, PreTrainedTokenizerFast

import melo
from melo.data import Record, TaskData
from melo.standins import lm

WORDS = """the a of is was in and to he she his her born died lived wrote played an american english
british actor singer writer politician football player city london paris york new john mary smith
this wikipedia passage about . , ( ) - 1 2 3 4 5 6 7 8 9 0 ##s ##ed ##ing""".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PASSAGES = [
    "this is a wikipedia passage about john smith. john smith was an american actor. he was born in new york.",
    "this is a wikipedia passage about mary smith. mary smith was a british writer. she lived in london.",
]
WEB = ["the city of paris is a city.", "he played football in london.", "she wrote a passage about the actor.",
       "john was a singer."]
TINY = dict(seed=0, max_length=48, frozen_layers=4, epochs=1, lr=1e-3, batch_size=2, weight_decay=0.0, warmup=0.1,
            webtext_train=2, webtext_extra=1, trr_size=3, eval_size=2)


def bert_tokenizer():
    return BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)})


def tiny_config() -> BertConfig:
    return BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=32, num_hidden_layers=6,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)


@pytest.fixture
def tok():
    return lm.build_tokenizer(bert_tokenizer())


def test_tokenizer_is_causal_lm_style(tok, tmp_path):
    ids = tok("john smith was born.")["input_ids"]
    assert ids[0] == tok.bos_token_id == tok.convert_tokens_to_ids("[CLS]") and tok.sep_token_id not in ids
    assert tok.eos_token == "[SEP]" and tok.pad_token == "[PAD]"
    tok.save_pretrained(tmp_path)
    again = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert again("john smith was born.")["input_ids"] == ids and again.eos_token_id == tok.eos_token_id


def test_model_is_causal_tied_and_generates(tok):
    model = lm.build_model(tok, config=tiny_config())
    assert model.config.is_decoder
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    ids = tok(["john smith was born in new york"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        full = model(input_ids=ids).logits
        prefix = model(input_ids=ids[:, :4]).logits
    torch.testing.assert_close(full[:, :4], prefix, rtol=1e-4, atol=1e-5)  # no look-ahead
    enc = tok(["john smith was", "she"], padding=True, padding_side="left", return_tensors="pt")
    out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=4,
                         do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] <= enc["input_ids"].shape[1] + 4
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id


@pytest.mark.slow
def test_training_and_perplexity(tok):
    model = lm.build_model(tok, config=tiny_config())
    records = [Record("this is a wikipedia passage about john smith.", "john smith was an american actor.")]
    before = lm.perplexity(lm.target_nll(model, tok, [r.prompt for r in records], [r.target for r in records]))
    stats = lm.train(model, tok, PASSAGES * 4 + WEB, {**TINY, "epochs": 3, "lr": 3e-3}, progress=False)
    assert stats["tokens_per_epoch"] > 0 and len(stats["epoch_losses"]) == 3
    after = lm.perplexity(lm.target_nll(model, tok, [r.prompt for r in records], [r.target for r in records]))
    assert after["mean_ppl"] < before["mean_ppl"]
    assert not model.training and all(p.requires_grad for p in model.parameters())


def _task():
    header = "this is a wikipedia passage about {}."
    accurate = [Record(header.format("john smith") + " ", "john smith was an american actor.", fact="john smith"),
                Record(header.format("mary smith") + " mary smith was a british writer.", "she lived in london.",
                       fact="mary smith")]
    originals = [Record(header.format("john smith") + " john smith was an american actor.", "he was born in paris.",
                        fact="john smith"),
                 Record(header.format("mary smith") + " ", "mary smith was a british writer.", fact="mary smith")]
    edits = [Record(r.prompt, "he was born in new york.", fact=r.fact) for r in originals]
    upstream = [Record("", t) for t in WEB]
    return TaskData("hallucination", "hallucination", edits, upstream, accurate, None, originals)


def test_training_texts_follow_grace():
    texts = lm.training_texts(_task(), TINY)
    assert sorted(texts["passages"]) == sorted([
        "this is a wikipedia passage about john smith. john smith was an american actor. he was born in paris.",
        "this is a wikipedia passage about mary smith. mary smith was a british writer. she lived in london.",
    ])
    assert texts["webtext"] == WEB[:2] + WEB[3:]  # 2 inside the TRR set (as GRACE), 1 after it


@pytest.mark.slow
def test_cache_round_trip(tmp_path, monkeypatch, tok):
    monkeypatch.setenv("MELO_CACHE", str(tmp_path))
    monkeypatch.setattr(lm, "SETTINGS", TINY)
    monkeypatch.setattr(lm, "load_data", lambda data_dir: _task())
    monkeypatch.setattr(lm, "build_tokenizer", lambda: tok)
    build = lm.build_model
    monkeypatch.setattr(lm, "build_model", lambda t: build(t, config=tiny_config()))
    model, tok1 = lm.load_or_train(progress=False)
    info = lm.cached_info()
    assert info["version"] == lm.VERSION and info["settings"] == TINY and info["n_passages"] == 2
    assert {"edits", "accurate", "webtext_trained", "webtext_heldout"} <= set(info["perplexity"])

    monkeypatch.setattr(lm, "train", lambda *a, **k: pytest.fail("retrained although cached"))
    again, tok2 = lm.load_or_train(progress=False)
    ids = tok2(["john smith was born"], return_tensors="pt")["input_ids"]
    assert ids[0, 0] == tok2.bos_token_id and tok2.eos_token == "[SEP]"
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits)
    assert again.get_output_embeddings().weight is again.get_input_embeddings().weight
    assert again.generation_config.eos_token_id == tok2.eos_token_id


@pytest.mark.slow
def test_melo_settings_fit_the_architecture(tok):
    model = lm.build_model(tok, config=tiny_config())
    config = melo.MeloConfig(**{**lm.MELO_SETTINGS, "num_iter": 2})
    edited = melo.get_melo_model(model, config, tokenizer=tok)
    result = edited.edit(["john smith was born in"], ["new york"])
    assert result.n_edits == 1 and edited.stats()["blocks"] == 1
    enc = tok(["john smith was born in"], return_tensors="pt")
    out = edited.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=3,
                          do_sample=False)
    assert out.shape[1] <= enc["input_ids"].shape[1] + 3
