"""Baselines (GRACE, sequential LoRA, sequential FT) on tiny GPT-2, T5 and BERT models."""

import os
import warnings

import pytest
import torch
from conftest import EDIT_PROMPTS, MODEL_FACTORIES, UNRELATED, adapter_files, edit_targets, families, melo_config

import melo
from melo.baselines import load_baseline, make_baseline
from melo.baselines.codebook import SPLIT_EPS, Codebook
from melo.baselines.finetune import FinetuneEditor, LoraEditor
from melo.baselines.grace import GraceEditor

FAMILIES = families("gpt2", "t5", "bert")
METHODS = ["grace", "lora", "ft"]
# GRACE in these tests: 40 steps (melo_config's num_iter) instead of GRACE's 100. On the tiny random
# T5 one vector at the default layer (the first MELO target, encoder block 2's `wi`, a ReLU
# pre-activation) does not move the decoder far enough in 40 or even 100 steps; replacing every prompt
# token of the whole feed-forward sublayer of that block (its output is the residual stream) does.
GRACE_T5 = {"layer": "encoder.block.2.layer.1", "replacement": "all"}
GRACE_STEPS = 40

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated transformers API


def options(method, family, **extra):
    if method == "grace":
        extra.setdefault("n_iter", GRACE_STEPS)
        if family == "t5":
            extra = {**GRACE_T5, **extra}
    if method == "lora":
        extra.setdefault("expected_blocks", 2)
    return extra


def tokenize(tok, texts, family):
    return tok(list(texts), padding=True, padding_side="left" if family == "gpt2" else "right", return_tensors="pt")


def logits(model, enc, family):
    with torch.no_grad():
        if family == "t5":
            dec = torch.zeros(enc["input_ids"].shape[0], 3, dtype=torch.long)
            return model(**enc, decoder_input_ids=dec).logits
        return model(**enc).logits


def generated(model, tok, family, texts, n=2, **kw):
    enc = tokenize(tok, texts, family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = model.generate(**enc, max_new_tokens=n, do_sample=False, **kw)
    if family == "gpt2":
        ids = ids[:, enc["input_ids"].shape[1]:]
    else:
        ids = ids[:, 1:]  # decoder start token
    return [tok.convert_ids_to_tokens(row) for row in ids.tolist()]


@pytest.fixture(scope="module")
def edited(word_tokenizer):
    """(method, family) -> (editor, targets, result) after one two-edit batch, built on first use."""
    cache = {}

    def get(method, family):
        if (method, family) not in cache:
            base = MODEL_FACTORIES[family]()
            targets = edit_targets(family, base, word_tokenizer)
            editor = make_baseline(method, base, melo_config(family), word_tokenizer, **options(method, family))
            cache[method, family] = (editor, targets, editor.edit(EDIT_PROMPTS, targets))
        return cache[method, family]

    return get


# ---- every baseline learns a two-edit batch ------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_baseline_learns_a_two_edit_batch(edited, word_tokenizer, method, family):
    editor, targets, result = edited(method, family)
    assert result.block == 0 and result.n_edits == 2
    assert result.final_loss < result.losses[0]
    assert editor.stats()["edits"] == 2
    if family == "bert":
        assert logits(editor, tokenize(word_tokenizer, EDIT_PROMPTS, family), family).argmax(-1).tolist() == targets
        return
    out = generated(editor, word_tokenizer, family, EDIT_PROMPTS)
    assert [row[0] for row in out] == targets
    if method != "grace":  # GRACE changes the prompt's tokens only; the fine-tuned weights also learn EOS
        assert [row[1] for row in out] == ["[EOS]", "[EOS]"]


def test_lora_and_ft_train_what_they_claim(edited):
    lora, _, _ = edited("lora", "gpt2")
    assert isinstance(lora, LoraEditor)
    # rank 2 x 2 expected blocks, on two Conv1D 32 -> 128 targets
    assert lora.stats()["extra_parameters"] == 2 * 4 * (32 + 128)
    assert lora.options["lora_alpha"] == melo_config("gpt2").scale * 4
    ft, _, _ = edited("ft", "gpt2")
    assert isinstance(ft, FinetuneEditor)
    assert ft.stats()["extra_parameters"] == 0 and ft.stats()["trained_parameters"] == 2 * 32 * 128


# ---- GRACE: locality, batching, generation -------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_grace_rows_outside_every_radius_are_bit_exact(edited, word_tokenizer, family):
    editor, _, _ = edited("grace", family)
    enc = tokenize(word_tokenizer, UNRELATED, family)
    assert editor.route(enc["input_ids"], enc["attention_mask"]).tolist() == [-1] * len(UNRELATED)
    fresh = MODEL_FACTORIES[family]()
    assert torch.equal(logits(editor, enc, family), logits(fresh, enc, family))
    edits = tokenize(word_tokenizer, EDIT_PROMPTS, family)
    assert editor.route(edits["input_ids"], edits["attention_mask"]).tolist() == [0, 1]
    with editor.disabled():
        assert torch.equal(logits(editor, edits, family), logits(fresh, edits, family))
    stats = editor.stats()
    assert (stats["clusters"], stats["conflicts"], stats["forgotten_edits"]) == (2, 0, 0)
    book = editor.codebook
    assert stats["extra_parameters"] == 2 * (book.key_dim + book.value_dim)


@pytest.mark.parametrize("family", FAMILIES)
def test_grace_mixed_batch_rows_equal_rows_alone(edited, word_tokenizer, family):
    editor, _, _ = edited("grace", family)
    texts = [UNRELATED[0], EDIT_PROMPTS[0], UNRELATED[1], EDIT_PROMPTS[1]]
    enc = word_tokenizer(texts, padding=True, padding_side="right", return_tensors="pt")
    batch, base_batch = logits(editor, enc, family), logits(MODEL_FACTORIES[family](), enc, family)
    for i, text in enumerate(texts):
        n = int(enc["attention_mask"][i].sum())
        alone = logits(editor, word_tokenizer([text], return_tensors="pt"), family)[0]
        row = batch[i] if family in ("bert", "t5") else batch[i, :n]
        torch.testing.assert_close(row, alone, rtol=1e-4, atol=1e-5)
        if text in UNRELATED:
            assert torch.equal(batch[i], base_batch[i])
        else:
            assert not torch.allclose(batch[i], base_batch[i])


def test_grace_generation_holds_the_prompt_entry(edited, word_tokenizer):
    editor, targets, _ = edited("grace", "gpt2")
    texts = [EDIT_PROMPTS[0], UNRELATED[0], EDIT_PROMPTS[1]]
    cached = generated(editor, word_tokenizer, "gpt2", texts, n=4, use_cache=True)
    assert cached == generated(editor, word_tokenizer, "gpt2", texts, n=4, use_cache=False)
    assert cached[1] == generated(MODEL_FACTORIES["gpt2"](), word_tokenizer, "gpt2", texts, n=4)[1]
    assert [cached[0][0], cached[2][0]] == targets
    beams = generated(editor, word_tokenizer, "gpt2", texts, n=1, num_beams=2)
    assert [beams[0][0], beams[2][0]] == targets


def test_grace_teacher_forced_scoring_keys_on_the_prompt(edited, word_tokenizer):
    """evaluate.target_tokens passes melo_key_mask (prompt tokens) to editors that have route()."""
    from melo.evaluation.predict import target_tokens

    editor, targets, _ = edited("grace", "gpt2")
    _, argmax, gold = target_tokens(editor, word_tokenizer, EDIT_PROMPTS, targets, "causal_lm")
    assert [a[0] for a in argmax] == [g[0] for g in gold]
    # a row without prompt tokens (the hallucination TRR texts have an empty prompt) has no key
    enc = word_tokenizer(EDIT_PROMPTS, padding=True, return_tensors="pt")
    no_prompt = torch.zeros_like(enc["attention_mask"])
    with torch.no_grad():
        base = MODEL_FACTORIES["gpt2"]()(**enc).logits
        assert not torch.equal(editor(**enc).logits, base)
        assert torch.equal(editor(**enc, melo_key_mask=no_prompt).logits, base)


# ---- GRACE: the codebook rules ----------------------------------------------------------------
def point(*xs):
    return torch.tensor([list(xs)], dtype=torch.float32)


def test_codebook_adds_on_empty_and_beyond_radius_plus_eps_init():
    book, report = Codebook(2, 3, eps_init=1.0).updated(point(0.0, 0.0), [(7,)])
    assert (book.n, report.added, report.assigned) == (1, 1, [0]) and book.radii.tolist() == [1.0]
    near, report = book.updated(point(1.9, 0.0), [(8,)])  # 1.9 <= radius 1 + eps_init 1: not an add
    assert report.added == 0
    far, report = book.updated(point(2.1, 0.0), [(8,)])  # beyond radius + eps_init, even another label
    assert (far.n, report.added, report.conflicts, report.assigned) == (2, 1, 0, [1])
    assert far.radii.tolist() == [1.0, 1.0] and far.labels == [(7,), (8,)]
    assert book.n == 1  # updated() leaves the original as it was


def test_codebook_expands_the_nearest_radius_on_the_same_label():
    book, _ = Codebook(2, 3, eps_init=1.0).updated(point(0.0, 0.0), [(7,)])
    grown, report = book.updated(point(1.5, 0.0), [(7,)])
    assert (grown.n, report.expanded, report.assigned) == (1, 1, [0])
    assert grown.radii.tolist() == [1.5] and torch.equal(grown.keys, book.keys)  # the key does not move
    inside, report = grown.updated(point(0.0, 0.5), [(7,)])
    assert report.expanded == 1 and inside.radii.tolist() == [1.5]  # already covered: radius unchanged
    assert grown.lookup(torch.cat([point(1.5, 0.0), point(1.6, 0.0)])).tolist() == [0, -1]


def test_codebook_splits_on_a_conflict():
    book, _ = Codebook(2, 3, eps_init=1.0).updated(point(0.0, 0.0), [(7,)])
    split, report = book.updated(point(1.2, 0.0), [(8,)])
    assert (split.n, report.conflicts, split.n_conflicts, report.assigned) == (2, 1, 1, [1])
    assert split.radii.tolist() == pytest.approx([0.6 - SPLIT_EPS, 0.6], rel=1e-6)
    queries = torch.cat([point(0.5, 0.0), point(0.7, 0.0), point(1.2, 0.0), point(2.0, 0.0)])
    assert split.lookup(queries).tolist() == [0, 1, 1, -1]
    # the same prompt re-edited with another label: distance 0, the newest entry wins the tie
    again, report = split.updated(point(1.2, 0.0), [(9,)])
    assert report.conflicts == 1 and again.lookup(point(1.2, 0.0)).tolist() == [2]


def test_codebook_split_sets_radii_as_grace_does():
    """A split sets the old radius to d/2 - 1e-5 even when an earlier split had made it smaller."""
    book, _ = Codebook(1, 2, eps_init=1.0).updated(torch.tensor([[0.0], [0.2]]), [(1,), (2,)])
    assert book.radii.tolist() == pytest.approx([0.1 - SPLIT_EPS, 0.1], rel=1e-6)
    book, report = book.updated(torch.tensor([[1.0]]), [(3,)])  # nearest: the key at 0.2, d = 0.8
    assert report.conflicts == 1
    assert book.radii.tolist() == pytest.approx([0.1 - SPLIT_EPS, 0.4 - SPLIT_EPS, 0.4], rel=1e-6)
    assert book.lookup(torch.tensor([[0.0], [0.2], [0.5], [1.0]])).tolist() == [0, 1, 1, 2]


def test_codebook_lookup_checks_only_the_nearest_key():
    book, _ = Codebook(1, 2, eps_init=1.0).updated(torch.tensor([[0.0], [3.0]]), [(1,), (1,)])
    book.radii[0] = 5.0  # a wide ball around 0 ...
    book.radii[1] = 0.1  # ... but 2.5 is nearer the key at 3, whose ball is small: GRACE defers to nothing
    assert book.lookup(torch.tensor([[2.5], [1.0], [3.05]])).tolist() == [-1, 0, 1]


def test_codebook_applies_a_batch_in_order():
    keys = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.8], [5.0, 5.0]])
    book, report = Codebook(2, 3, eps_init=1.0).updated(keys, [(1,), (1,), (2,), (1,)])
    assert report.assigned == [0, 0, 1, 2]
    assert (report.added, report.expanded, report.conflicts) == (2, 1, 1)
    assert book.radii.tolist() == pytest.approx([0.4 - SPLIT_EPS, 0.4, 1.0], rel=1e-6)


@pytest.mark.slow
def test_grace_editor_expands_and_splits(word_tokenizer):
    """Same target for a paraphrase: the entry is reused; a new target for the same prompt: a split
    at distance 0, whose new entry wins; the old entry's radius drops below 0, so both earlier
    edits are reported forgotten (GRACE's rule, not a melo choice)."""
    editor = GraceEditor(MODEL_FACTORIES["gpt2"](), melo_config("gpt2"), word_tokenizer, eps_init=20.0,
                         n_iter=GRACE_STEPS)
    editor.edit([EDIT_PROMPTS[0]], ["rome"])
    result = editor.edit(["the capital city of france is"], ["rome"])
    assert (result.added, result.expanded, result.conflicts) == (0, 1, 0)
    assert editor.stats()["clusters"] == 1
    result = editor.edit([EDIT_PROMPTS[0]], ["paris"])
    assert (result.added, result.expanded, result.conflicts) == (0, 0, 1)
    stats = editor.stats()
    assert (stats["edits"], stats["clusters"], stats["conflicts"], stats["forgotten_edits"]) == (3, 2, 1, 2)
    assert [(f["edit"], f["reason"], f["target"]) for f in result.forgotten] == [
        (0, "other_label", "rome"), (1, "outside", "rome")]
    enc = tokenize(word_tokenizer, [EDIT_PROMPTS[0]], "gpt2")
    assert editor.route(enc["input_ids"], enc["attention_mask"]).tolist() == [1]
    assert generated(editor, word_tokenizer, "gpt2", [EDIT_PROMPTS[0]], n=1) == [["paris"]]


def test_grace_replace_all_and_warm_init(word_tokenizer):
    editor = make_baseline("grace", MODEL_FACTORIES["bert"](), melo_config("bert"), word_tokenizer,
                           replacement="all", val_init="warm", n_iter=GRACE_STEPS)
    targets = edit_targets("bert", MODEL_FACTORIES["bert"](), word_tokenizer)
    editor.edit(EDIT_PROMPTS, targets)
    assert logits(editor, tokenize(word_tokenizer, EDIT_PROMPTS, "bert"), "bert").argmax(-1).tolist() == targets
    enc = tokenize(word_tokenizer, UNRELATED, "bert")
    assert torch.equal(logits(editor, enc, "bert"), logits(MODEL_FACTORIES["bert"](), enc, "bert"))


# ---- persistence ------------------------------------------------------------------------------
def probe(editor, tok, family):
    enc = tok(EDIT_PROMPTS + UNRELATED, padding=True, return_tensors="pt")
    return logits(editor, enc, family)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_round_trip_is_bit_exact_and_editing_continues(tmp_path, word_tokenizer, method, family):
    config = melo_config(family, num_iter=4)
    opts = options(method, family, **({"n_iter": 4} if method == "grace" else {}))
    base = MODEL_FACTORIES[family]()
    targets = edit_targets(family, base, word_tokenizer)
    editor = make_baseline(method, base, config, word_tokenizer, **opts)
    editor.edit(EDIT_PROMPTS[:1], targets[:1])
    editor.edit(EDIT_PROMPTS[1:], targets[1:])
    editor.save_pretrained(tmp_path)
    assert set(adapter_files(tmp_path)) <= set(os.listdir(tmp_path))

    loaded = load_baseline(MODEL_FACTORIES[family](), tmp_path, tokenizer=word_tokenizer)
    assert type(loaded) is type(editor)
    assert torch.equal(probe(editor, word_tokenizer, family), probe(loaded, word_tokenizer, family))
    assert loaded.stats() == editor.stats() and loaded.records == editor.records
    assert loaded.melo_config == editor.melo_config
    if method == "grace":
        enc = word_tokenizer(EDIT_PROMPTS + UNRELATED, padding=True, return_tensors="pt")
        routes = [m.route(enc["input_ids"], enc["attention_mask"]).tolist() for m in (editor, loaded)]
        assert routes[0] == routes[1] == [0, 1, -1, -1, -1, -1]
    with loaded.disabled():
        fresh = probe(MODEL_FACTORIES[family](), word_tokenizer, family)
        assert torch.equal(probe(loaded, word_tokenizer, family), fresh)

    more = ["what color is the sky"]
    more_targets = edit_targets(family, MODEL_FACTORIES[family](), word_tokenizer, more)
    for m in (editor, loaded):
        assert m.edit(more, more_targets).block == 2
    assert torch.equal(probe(editor, word_tokenizer, family), probe(loaded, word_tokenizer, family))
    assert loaded.stats() == editor.stats()


# ---- errors and failed edits -------------------------------------------------------------------
def test_make_baseline_errors_name_the_problem(word_tokenizer):
    config = melo_config("gpt2")
    with pytest.raises(melo.MeloConfigError, match="'rome'"):
        make_baseline("rome", MODEL_FACTORIES["gpt2"](), config, word_tokenizer)
    with pytest.raises(melo.MeloConfigError, match="radius"):
        make_baseline("grace", MODEL_FACTORIES["gpt2"](), config, word_tokenizer, radius=1.0)
    with pytest.raises(melo.MeloConfigError, match="expected_blocks"):
        make_baseline("lora", MODEL_FACTORIES["gpt2"](), config, word_tokenizer)
    with pytest.raises(melo.MeloConfigError, match="transformer.h.9"):
        make_baseline("grace", MODEL_FACTORIES["gpt2"](), config, word_tokenizer, layer="transformer.h.9")
    with pytest.raises(melo.MeloConfigError, match="encoder"):
        make_baseline("grace", MODEL_FACTORIES["t5"](), melo_config("t5"), word_tokenizer,
                      layer="decoder.block.2.layer.2.DenseReluDense.wo")
    editor = make_baseline("ft", MODEL_FACTORIES["gpt2"](), config, word_tokenizer)
    with pytest.raises(melo.MeloEditError, match="empty"):
        editor.edit([], [])


def test_loading_checks_method_and_shapes(tmp_path, word_tokenizer):
    editor = make_baseline("grace", MODEL_FACTORIES["gpt2"](), melo_config("gpt2"), word_tokenizer, n_iter=2)
    editor.edit(EDIT_PROMPTS[:1], ["rome"])
    editor.save_pretrained(tmp_path)
    with pytest.raises(melo.MeloLoadError, match="'grace', not 'ft'"):
        FinetuneEditor.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path, tokenizer=word_tokenizer)
    with pytest.raises(melo.MeloLoadError, match="transformer.h.2.mlp.c_fc"):
        GraceEditor.from_pretrained(MODEL_FACTORIES["llama"](), tmp_path, tokenizer=word_tokenizer)
    with pytest.raises(melo.MeloLoadError, match="no adapter"):
        load_baseline(MODEL_FACTORIES["gpt2"](), tmp_path / "missing", tokenizer=word_tokenizer)


@pytest.mark.parametrize("method", METHODS)
def test_a_diverging_edit_leaves_the_editor_as_it_was(word_tokenizer, method):
    config = melo_config("gpt2", num_iter=3, edit_lr=1e30)  # MeloConfig refuses inf
    opts = options(method, "gpt2", **({"n_iter": 3, "lr": float("inf")} if method == "grace" else {}))
    editor = make_baseline(method, MODEL_FACTORIES["gpt2"](), config, word_tokenizer, **opts)
    before = probe(editor, word_tokenizer, "gpt2")
    with pytest.raises(melo.MeloEditError, match="diverged"):
        editor.edit(EDIT_PROMPTS, ["rome", "tolstoy"])
    assert torch.equal(probe(editor, word_tokenizer, "gpt2"), before)
    assert editor.stats()["edits"] == 0 and editor.records == []
    if method == "grace":
        assert editor.codebook.n == 0
