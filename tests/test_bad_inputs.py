"""Bad inputs to the public API: each raises its named error, and the model is left bit-exactly as it was."""

import json

import pytest
import torch
from conftest import EDIT_PROMPTS, MODEL_FACTORIES, UNRELATED, edit_targets, melo_config
from transformers import GPT2Config, GPT2LMHeadModel

import melo
from melo.persistence import META_FILE, read_adapter, write_adapter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def edited_model(family, tok, **overrides):
    """A MeloModel with one edit, so a failure that touched a block, the router or a record would show."""
    base = MODEL_FACTORIES[family]()
    model = melo.get_melo_model(base, melo_config(family, num_iter=2, **overrides), tokenizer=tok)
    model.edit(EDIT_PROMPTS[:1], edit_targets(family, base, tok, EDIT_PROMPTS[:1]))
    return model


def snapshot(model, tok, family):
    enc = tok(EDIT_PROMPTS + UNRELATED, padding=True, return_tensors="pt")
    if family == "t5":
        enc["decoder_input_ids"] = torch.zeros(len(EDIT_PROMPTS + UNRELATED), 2, dtype=torch.long)
    with torch.no_grad():
        logits = model(**enc).logits
    return {
        "state_dict": {k: v.clone() for k, v in model.state_dict().items()},  # base weights and LoRA buffers
        "router": {k: v.clone() for k, v in model.db.tensors().items()},
        "router_meta": json.dumps(model.db.meta()),
        "stats": model.stats(),
        "records": json.dumps(model.records),
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.base_model.modules()),
        "requires_grad": [p.requires_grad for p in model.base_model.parameters()],
        "training": model.base_model.training,
        "logits": logits,
    }


def assert_unchanged(before, after):
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, dict) and value and isinstance(next(iter(value.values())), torch.Tensor):
            assert value.keys() == after[key].keys(), key
            for name in value:
                assert value[name].dtype == after[key][name].dtype and torch.equal(value[name], after[key][name]), name
        elif isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key
        else:
            assert value == after[key], key


# ---- actions: each gets (model, tokenizer, tmp_path) and must raise -----------------------------
def edit(prompts, targets):
    return lambda model, tok, tmp: model.edit(prompts, targets)


def wrap_again(**overrides):
    """get_melo_model on the already wrapped base model with a bad config."""
    return lambda model, tok, tmp: melo.get_melo_model(model.base_model, melo_config("gpt2", **overrides), tok)


def from_dict(**fields):
    def action(model, tok, tmp):
        return melo.MeloConfig.from_dict({**model.melo_config.to_dict(), **fields})
    return action


def load(damage):
    """Save the model, damage the save, load it onto the model's own base model."""
    def action(model, tok, tmp):
        model.save_pretrained(tmp / "adapter")
        damage(model, tmp / "adapter")
        return melo.MeloModel.from_pretrained(model.base_model, tmp / "adapter", tokenizer=tok)
    return action


def rewrite(change_tensors=None, change_meta=None):
    """Re-save the adapter with its tensors or meta changed, as a well-formed file."""
    def damage(model, directory):
        tensors, meta = read_adapter(directory)
        meta.pop("format_version")
        if change_tensors:
            change_tensors(tensors)
        if change_meta:
            change_meta(meta)
        write_adapter(directory, tensors, meta)
    return damage


def remove(directory_file):
    return lambda model, directory: (directory / directory_file).unlink()


def flip_last_byte(model, directory):
    path = directory / read_json(directory)["storage"]["tensors_file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def read_json(directory):
    return json.loads((directory / META_FILE).read_text())


def write_json(change):
    def damage(model, directory):
        data = read_json(directory)
        change(data)
        (directory / META_FILE).write_text(json.dumps(data))
    return damage


def save_of_a_wider_gpt2(model, directory):
    wider = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=48, n_layer=4, n_head=2, n_positions=64,
                                       bos_token_id=3, eos_token_id=1))
    melo.get_melo_model(wider, model.melo_config, tokenizer=model.tokenizer).save_pretrained(directory)


LONG = " ".join(["the dog is big"] * 17)  # 68 words: over the 64 positions of the tiny GPT-2 and BERT
HALF = " ".join(["the dog is big"] * 9)  # 36 words: fits alone, not twice

CASES = [
    # configs
    ("gpt2", {}, wrap_again(block_rank=2.5), melo.MeloConfigError, "block_rank must be an integer"),
    ("gpt2", {}, wrap_again(init_radius=float("inf")), melo.MeloConfigError, "init_radius must be finite"),
    ("gpt2", {}, wrap_again(lora_alpha=0), melo.MeloConfigError, "lora_alpha must be positive"),
    ("gpt2", {}, wrap_again(seed=2**63), melo.MeloConfigError, "seed must be in"),
    ("gpt2", {}, wrap_again(lr_gamma=float("nan")), melo.MeloConfigError, "lr_gamma must be finite"),
    ("gpt2", {}, wrap_again(num_iter="3"), melo.MeloConfigError, "num_iter must be an integer"),
    ("gpt2", {}, wrap_again(target_modules="transformer.(h"), melo.MeloConfigError, "does not compile"),
    ("gpt2", {}, wrap_again(target_modules=["transformer.h.9.mlp.c_fc"]), melo.MeloConfigError,
     "unknown target module 'transformer.h.9.mlp.c_fc'"),
    ("gpt2", {}, wrap_again(router_layer="transformer.h.1.nope"), melo.MeloConfigError, "unknown router layer"),
    ("gpt2", {}, wrap_again(target_modules=["transformer.h.0.mlp.c_fc"]), melo.MeloConfigError,
     "runs before the router"),
    ("gpt2", {}, from_dict(rank=3), melo.MeloConfigError, "unknown MeloConfig fields"),
    # edit batches
    ("gpt2", {}, edit([], []), melo.MeloEditError, "empty edit batch"),
    ("gpt2", {}, edit(["the dog"], ["a", "b"]), melo.MeloEditError, "prompts has 1 entries but targets has 2"),
    ("gpt2", {}, edit([3], ["rome"]), melo.MeloEditError, r"prompts\[0\] is 3"),
    ("gpt2", {}, edit([None], ["rome"]), melo.MeloEditError, r"prompts\[0\] is None"),
    ("gpt2", {}, edit(["the dog"], ["  "]), melo.MeloEditError, r"targets\[0\] is '  '"),
    ("gpt2", {}, edit("the dog", "rome"), melo.MeloEditError, "must be lists"),
    ("gpt2", {}, edit(["the dog"], [3]), melo.MeloEditError, "causal_lm targets must be non-empty strings"),
    ("gpt2", {}, edit([LONG], ["rome"]), melo.MeloEditError,
     "prompt \\+ target is 70 tokens, longer than the model's 64 positions"),
    ("gpt2", {}, edit(["the dog"], [LONG]), melo.MeloEditError, "longer than the model's 64 positions"),
    ("gpt2", {}, edit([HALF], [HALF]), melo.MeloEditError, "prompt \\+ target is 73 tokens"),
    ("llama", {}, edit([LONG], ["rome"]), melo.MeloEditError, "longer than the model's 64 positions"),
    ("bert", {}, edit([LONG], [1]), melo.MeloEditError, "prompt is 68 tokens, longer than the model's 64"),
    ("bert", {}, edit(["the dog"], [7]), melo.MeloEditError, "not a class id of a 3-label model"),
    ("bert", {}, edit(["the dog"], [-1]), melo.MeloEditError, "not a class id of a 3-label model"),
    ("bert", {}, edit(["the dog"], [True]), melo.MeloEditError, r"targets\[0\] is True"),
    ("bert", {}, edit(["the dog"], [1.0]), melo.MeloEditError, "classification targets must be class ids"),
    ("bert", {}, edit(["the dog"], ["cat"]), melo.MeloEditError, "classification targets must be class ids"),
    ("t5", {}, edit(["the dog"], [None]), melo.MeloEditError, r"targets\[0\] is None"),
    ("gpt2", {"max_blocks": 1}, edit(["the dog"], ["cat"]), melo.MeloCapacityError, "max_blocks=1"),
    # loads
    ("gpt2", {}, lambda model, tok, tmp: melo.MeloModel.from_pretrained(model.base_model, tmp / "nowhere",
                                                                 tokenizer=tok),
     melo.MeloLoadError, "does not exist"),
    ("gpt2", {}, load(remove(META_FILE)), melo.MeloLoadError, "melo_adapter.json is missing"),
    ("gpt2", {}, load(flip_last_byte), melo.MeloLoadError, "fails its checksum"),
    ("gpt2", {}, load(lambda m, d: (d / META_FILE).write_text("{")), melo.MeloLoadError, "is not valid JSON"),
    ("gpt2", {}, load(write_json(lambda j: j.update(format_version=1))), melo.MeloLoadError, "format version 1"),
    ("gpt2", {}, load(write_json(lambda j: j["storage"].update(tensors_file="../model.safetensors"))),
     melo.MeloLoadError, "is not a name melo writes"),
    ("gpt2", {}, load(rewrite(change_meta=lambda m: m.pop("config"))), melo.MeloLoadError, "'config'"),
    ("gpt2", {}, load(rewrite(change_meta=lambda m: m["config"].update(block_rank="2"))), melo.MeloLoadError,
     "block_rank must be an integer"),
    ("gpt2", {}, load(rewrite(change_tensors=lambda t: t.pop("lora.transformer.h.2.mlp.c_fc.A"))),
     melo.MeloLoadError, "lora.transformer.h.2.mlp.c_fc.A"),
    ("gpt2", {}, load(save_of_a_wider_gpt2), melo.MeloLoadError, "transformer.h.2.mlp.c_fc"),
]


def case_id(case):
    family, error, message = case[0], case[3], case[4]
    return f"{family}-{error.__name__}-{message[:40]}"


@pytest.mark.parametrize("family, overrides, action, error, message",
                         [pytest.param(*case, id=case_id(case)) for case in CASES])
def test_bad_input_raises_its_error_and_changes_nothing(tmp_path, word_tokenizer, family, overrides, action,
                                                       error, message):
    model = edited_model(family, word_tokenizer, **overrides)
    before = snapshot(model, word_tokenizer, family)
    with pytest.raises(error, match=message):
        action(model, word_tokenizer, tmp_path)
    assert_unchanged(before, snapshot(model, word_tokenizer, family))


# ---- length checks in melo.text (check_lengths, which edit() runs before building the batch) ----------
def test_max_positions_of_each_family():
    from transformers import BertConfig, EncoderDecoderConfig, RobertaConfig

    from melo.text import max_positions

    limits = {family: max_positions(MODEL_FACTORIES[family]().config) for family in ("gpt2", "llama", "bert", "t5")}
    assert limits == {"gpt2": 64, "llama": 64, "bert": 64, "t5": None}
    assert max_positions(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    pair = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(max_position_embeddings=128),
                                                             BertConfig(max_position_embeddings=64))
    assert max_positions(pair) == 64


@pytest.mark.parametrize("task, prompts, targets, limit, message", [
    ("causal_lm", [HALF], [HALF], 72, "edit 0: prompt \\+ target is 73 tokens, longer than the model's 72 positions"),
    ("classification", ["the dog", LONG], [0, 1], 64, "edit 1: prompt is 68 tokens"),
    ("seq2seq", ["the dog"], [LONG], 64, "edit 0: target is 69 tokens"),
    ("seq2seq", [LONG], ["dog"], 64, "edit 0: prompt is 68 tokens"),
])
def test_edit_batch_refuses_sequences_over_the_limit(word_tokenizer, task, prompts, targets, limit, message):
    from melo.text import check_lengths, edit_batch

    with pytest.raises(melo.MeloEditError, match=message):
        check_lengths(task, word_tokenizer, prompts, targets, limit)
    check_lengths(task, word_tokenizer, prompts, targets, None)  # no limit
    edit_batch(task, word_tokenizer, prompts, targets)  # builds as before


def test_counted_lengths_are_the_built_lengths(word_tokenizer):
    from melo.text import check_lengths, edit_batch, sequence_lengths

    prompts, targets = [HALF, "the dog"], [HALF, "rome"]
    batch, _ = edit_batch("causal_lm", word_tokenizer, prompts, targets)
    counted = [length for _, _, length in sequence_lengths("causal_lm", word_tokenizer, prompts, targets)]
    assert counted == batch["attention_mask"].sum(1).tolist() == [73, 4]
    check_lengths("causal_lm", word_tokenizer, prompts, targets, 73)  # exactly at the limit is fine
