"""End-to-end behaviour on tiny BERT, T5, GPT-2 and Llama models."""

import pytest
import torch
from conftest import EDIT_PROMPTS, MODEL_FACTORIES, UNRELATED, edit_targets, melo_config

import melo

FAMILIES = ["bert", "t5", "gpt2", "llama"]
GENERATIVE = ["t5", "gpt2", "llama"]


def tokenize(tok, texts, family):
    side = "left" if family in ("gpt2", "llama") else "right"
    return tok(list(texts), padding=True, padding_side=side, return_tensors="pt")


def logits(model, enc, family):
    if family == "t5":
        dec = torch.zeros(enc["input_ids"].shape[0], 3, dtype=torch.long)
        return model(**enc, decoder_input_ids=dec).logits
    return model(**enc).logits


@pytest.fixture(scope="module")
def edited(word_tokenizer):
    """One edited MeloModel per family, shared by the read-only tests of this module."""
    out = {}
    for family in FAMILIES:
        base = MODEL_FACTORIES[family]()
        targets = edit_targets(family, base, word_tokenizer)
        model = melo.get_melo_model(base, melo_config(family), tokenizer=word_tokenizer)
        result = model.edit(EDIT_PROMPTS, targets)
        out[family] = (model, targets, result)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_edited_prompts_produce_targets(edited, word_tokenizer, family):
    model, targets, result = edited[family]
    assert result.block == 0 and result.n_edits == 2
    assert result.final_loss < result.losses[0]
    enc = tokenize(word_tokenizer, EDIT_PROMPTS, family)
    assert model.route(enc["input_ids"], enc["attention_mask"]).tolist() == [0, 0]
    if family == "bert":
        assert model(**enc).logits.argmax(-1).tolist() == targets
        return
    new = model.generate(**enc, max_new_tokens=2, do_sample=False)
    if family != "t5":
        new = new[:, enc["input_ids"].shape[1] :]
    expected = [word_tokenizer.convert_tokens_to_ids([t, "[EOS]"]) for t in targets]
    got = [row[row != 0][:2].tolist() for row in new]
    assert got == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_unrouted_prompts_are_bit_exact(edited, word_tokenizer, family):
    model, _, _ = edited[family]
    enc = tokenize(word_tokenizer, UNRELATED, family)
    assert model.route(enc["input_ids"], enc["attention_mask"]).tolist() == [-1] * len(UNRELATED)
    fresh = MODEL_FACTORIES[family]()
    with torch.no_grad():
        assert torch.equal(logits(model, enc, family), logits(fresh, enc, family))
        with model.disabled():
            edited_enc = tokenize(word_tokenizer, EDIT_PROMPTS, family)
            assert torch.equal(logits(model, edited_enc, family), logits(fresh, edited_enc, family))


@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_batch_equals_rows_alone(edited, word_tokenizer, family):
    model, _, _ = edited[family]
    texts = [UNRELATED[0], EDIT_PROMPTS[0], UNRELATED[1], EDIT_PROMPTS[1]]
    enc = word_tokenizer(texts, padding=True, padding_side="right", return_tensors="pt")
    fresh = MODEL_FACTORIES[family]()
    with torch.no_grad():
        batch = logits(model, enc, family)
        base_batch = logits(fresh, enc, family)
        for i, text in enumerate(texts):
            n = int(enc["attention_mask"][i].sum())
            alone = logits(model, word_tokenizer([text], return_tensors="pt"), family)[0]
            row = batch[i] if family in ("bert", "t5") else batch[i, :n]
            torch.testing.assert_close(row, alone, rtol=1e-4, atol=1e-5)
            if text in UNRELATED:
                assert torch.equal(batch[i], base_batch[i])
            else:
                assert not torch.allclose(batch[i], base_batch[i])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_generation_keeps_prompt_routing_with_kv_cache(edited, word_tokenizer, family):
    """Each decoding step uses the block chosen on the prompt, with and without the KV cache."""
    model, _, _ = edited[family]
    texts = [EDIT_PROMPTS[0], UNRELATED[0], EDIT_PROMPTS[1]]
    enc = tokenize(word_tokenizer, texts, family)
    blocks = model.route(enc["input_ids"], enc["attention_mask"])
    cached = model.generate(**enc, max_new_tokens=4, do_sample=False, use_cache=True)
    uncached = model.generate(**enc, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    done = torch.zeros(len(texts), 1, dtype=torch.bool)
    with torch.no_grad():
        for _ in range(4):  # greedy decoding without cache, routing fixed to the prompt's blocks
            pos = (mask.cumsum(-1) - 1).clamp_min(0)
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, melo_blocks=blocks)
            nxt = torch.where(done, 0, out.logits[:, -1].argmax(-1, keepdim=True))
            done |= nxt == 1
            ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
    assert torch.equal(cached, ids)


def test_seq2seq_routes_on_encoder_input_with_beams(edited, word_tokenizer):
    model, targets, _ = edited["t5"]
    enc = tokenize(word_tokenizer, [EDIT_PROMPTS[0], UNRELATED[0]], "t5")
    beams = model.generate(**enc, max_new_tokens=2, num_beams=3, do_sample=False)
    assert beams[0, 1].item() == word_tokenizer.convert_tokens_to_ids(targets[0])
    fresh = MODEL_FACTORIES["t5"]()
    base = fresh.generate(**enc, max_new_tokens=2, num_beams=3, do_sample=False)
    assert torch.equal(beams[1], base[1])


@pytest.mark.slow
def test_second_batch_adds_a_block_and_keeps_the_first(word_tokenizer):
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2"), tokenizer=word_tokenizer)
    model.edit([EDIT_PROMPTS[0]], ["rome"])
    first = model.lora["transformer__h__2__mlp__c_fc"].A[:1].clone()
    model.edit(["what color is the sky"], ["green"])
    assert model.n_blocks == 2
    assert torch.equal(model.lora["transformer__h__2__mlp__c_fc"].A[:1], first)
    enc = tokenize(word_tokenizer, [EDIT_PROMPTS[0], "what color is the sky"], "gpt2")
    assert model.route(enc["input_ids"], enc["attention_mask"]).tolist() == [0, 1]
    out = model.generate(**enc, max_new_tokens=1, do_sample=False)[:, -1]
    assert out.tolist() == word_tokenizer.convert_tokens_to_ids(["rome", "green"])
    stats = model.stats()
    assert stats["edits"] == 2 and stats["blocks"] == 2 and stats["clusters"] == 2
    assert stats["extra_parameters"] == 2 * 2 * 2 * (32 + 128)


def test_only_the_new_block_is_optimised(word_tokenizer, monkeypatch):
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=2), tokenizer=word_tokenizer)
    model.edit([EDIT_PROMPTS[0]], ["rome"])
    seen = []
    real_adam = torch.optim.Adam

    def spy(params, **kw):
        params = list(params)
        seen.append(sum(p.numel() for p in params))
        return real_adam(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", spy)
    base_grad = [p.requires_grad for p in model.base_model.parameters()]
    model.edit(["what color is the sky"], ["green"])
    assert seen == [2 * 2 * (32 + 128)]  # one block of rank 2 in two 32->128 modules
    assert [p.requires_grad for p in model.base_model.parameters()] == base_grad


def test_tokenizer_without_pad_token_is_not_modified(word_tokenizer):
    import copy

    tok = copy.deepcopy(word_tokenizer)
    tok.pad_token = None
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=2), tokenizer=tok)
    model.edit(EDIT_PROMPTS, ["rome", "tolstoy"])
    assert tok.pad_token is None and model.tokenizer.pad_token == "[EOS]"


def test_seq2seq_edit_runs_a_frozen_encoder_once(word_tokenizer):
    decoder_targets = [t for t in melo_config("t5").target_modules if t.startswith("decoder.")]
    model = melo.get_melo_model(MODEL_FACTORIES["t5"](), melo_config("t5", target_modules=decoder_targets),
                                tokenizer=word_tokenizer)
    calls = []
    model.base_model.get_encoder().register_forward_hook(lambda m, a, o: calls.append(1))
    model.edit(EDIT_PROMPTS, ["rome", "tolstoy"])
    assert len(calls) == 1  # the keys pass stops at the router; training runs the encoder once
    enc = word_tokenizer(EDIT_PROMPTS, padding=True, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=2)
    assert out[:, 1].tolist() == word_tokenizer.convert_tokens_to_ids(["rome", "tolstoy"])


def _edit_with(family, tokenizer, monkeypatch, switch, value):
    """One fresh 6-step edit with MeloModel.<switch> = value: (model, losses, LoRA state)."""
    monkeypatch.setattr(melo.MeloModel, switch, value)
    base = MODEL_FACTORIES[family]()
    model = melo.get_melo_model(base, melo_config(family, num_iter=6), tokenizer=tokenizer)
    result = model.edit(EDIT_PROMPTS, edit_targets(family, base, tokenizer))
    return model, result.losses, {k: v.clone() for k, v in model.lora.state_dict().items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_replay_gives_the_same_edit(family, word_tokenizer, monkeypatch):
    """Recording the layers before the first target once changes nothing but the time."""
    on, off = (_edit_with(family, word_tokenizer, monkeypatch, "replay_prefix", v) for v in (True, False))
    assert len(on[0]._frozen_prefix) == (0 if family == "t5" else 2) and off[0]._frozen_prefix == []
    assert on[1] == off[1]
    assert all(torch.equal(on[2][k], off[2][k]) for k in on[2])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_head_on_targets_gives_the_model_loss(family, word_tokenizer, monkeypatch):
    """Logits at target positions only: the same loss as the model's own, the same edit."""
    on, off = (_edit_with(family, word_tokenizer, monkeypatch, "head_on_targets", v) for v in (True, False))
    torch.testing.assert_close(torch.tensor(on[1]), torch.tensor(off[1]), rtol=1e-5, atol=1e-6)
    for k in on[2]:
        torch.testing.assert_close(on[2][k], off[2][k], rtol=1e-4, atol=1e-6)



def test_keep_best_restores_the_parameters_of_the_lowest_loss():
    from melo.editor import KeepBest

    p = torch.nn.Parameter(torch.zeros(3))
    best = KeepBest([p])
    for value, loss in [(1.0, 5.0), (2.0, 0.5), (3.0, 2.0)]:
        with torch.no_grad():
            p.fill_(value)
        best.offer(loss)
    assert best.restore() == 0.5 and p.tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_edit_commits_the_block_at_its_lowest_training_loss(word_tokenizer, family):
    """The committed block is the best one seen (after the last step included), and the edited
    model scores the edit at exactly that loss."""
    from melo.evaluation.predict import target_tokens

    config = melo_config(family, edit_lr=0.1, lr_step=1000, num_iter=30)
    model = melo.get_melo_model(MODEL_FACTORIES[family](), config, tokenizer=word_tokenizer)
    result = model.edit(EDIT_PROMPTS, ["rome", "tolstoy"])
    assert result.final_loss <= min(result.losses)
    nll, _, gold = target_tokens(model, word_tokenizer, EDIT_PROMPTS, ["rome", "tolstoy"], config.task)
    assert sum(nll) / sum(len(g) for g in gold) == pytest.approx(result.final_loss, rel=1e-4, abs=1e-6)
