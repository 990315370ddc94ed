"""save_pretrained / from_pretrained: bit-exact round trips, crash-safe files, validated loads."""

import hashlib
import json
import os
import pickle

import pytest
import torch
from conftest import EDIT_PROMPTS, MODEL_FACTORIES, UNRELATED, edit_targets, families, melo_config
from transformers import GPT2Config, GPT2LMHeadModel

import melo
from melo.persistence import FORMAT_VERSION, LOCK_FILE, META_FILE, read_adapter, write_adapter


def saved_files(directory):
    """The files a complete save leaves: the JSON and the tensors file it names."""
    name = json.loads((directory / META_FILE).read_text())["storage"]["tensors_file"]
    return sorted([META_FILE, name])


def outputs(model, tok, family):
    enc = tok(EDIT_PROMPTS + UNRELATED, padding=True, return_tensors="pt")
    if family == "t5":
        enc["decoder_input_ids"] = torch.zeros(len(EDIT_PROMPTS + UNRELATED), 2, dtype=torch.long)
    with torch.no_grad():
        return model(**enc).logits, model.route(enc["input_ids"], enc["attention_mask"])


@pytest.mark.parametrize("family", families("bert", "t5", "gpt2", "llama", quick=("gpt2", "llama")))
def test_round_trip_is_bit_exact_and_editing_continues(tmp_path, word_tokenizer, family):
    config = melo_config(family, num_iter=5)
    base = MODEL_FACTORIES[family]()
    targets = edit_targets(family, base, word_tokenizer)
    model = melo.get_melo_model(base, config, tokenizer=word_tokenizer)
    model.edit(EDIT_PROMPTS[:1], targets[:1])
    model.edit(EDIT_PROMPTS[1:], targets[1:])
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == saved_files(tmp_path)

    loaded = melo.MeloModel.from_pretrained(MODEL_FACTORIES[family](), tmp_path, tokenizer=word_tokenizer)
    before, after = outputs(model, word_tokenizer, family), outputs(loaded, word_tokenizer, family)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert before[1].tolist() == [0, 1, -1, -1, -1, -1]
    assert loaded.stats() == model.stats() and loaded.records == model.records
    assert loaded.melo_config == model.melo_config

    more = ["what color is the sky"]
    more_targets = edit_targets(family, MODEL_FACTORIES[family](), word_tokenizer, more)
    for m in (model, loaded):
        assert m.edit(more, more_targets).block == 2
    assert torch.equal(outputs(model, word_tokenizer, family)[0], outputs(loaded, word_tokenizer, family)[0])


def test_saving_again_replaces_files_atomically(tmp_path, word_tokenizer):
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=2), tokenizer=word_tokenizer)
    model.save_pretrained(tmp_path)
    empty = melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path, tokenizer=word_tokenizer)
    assert empty.stats()["edits"] == 0
    model.edit(EDIT_PROMPTS, ["rome", "tolstoy"])
    first = saved_files(tmp_path)
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == saved_files(tmp_path) != first
    loaded = melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path, tokenizer=word_tokenizer)
    assert loaded.stats()["edits"] == 2


def test_loading_onto_another_shape_names_the_module(tmp_path, word_tokenizer):
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=2), tokenizer=word_tokenizer)
    model.edit(EDIT_PROMPTS[:1], ["rome"])
    model.save_pretrained(tmp_path)
    wider = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=48, n_layer=4, n_head=2, n_positions=64,
                                       bos_token_id=3, eos_token_id=1))
    with pytest.raises(melo.MeloLoadError, match="transformer.h.2.mlp.c_fc"):
        melo.MeloModel.from_pretrained(wider, tmp_path, tokenizer=word_tokenizer)
    with pytest.raises(melo.MeloLoadError, match="transformer.h.2.mlp.c_fc"):
        melo.MeloModel.from_pretrained(MODEL_FACTORIES["llama"](), tmp_path, tokenizer=word_tokenizer)
    with pytest.raises(melo.MeloLoadError, match="no adapter in .*missing.*does not exist"):
        melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path / "missing", tokenizer=word_tokenizer)


# ---- read_adapter / write_adapter on their own ----------------------------------------------------
TENSORS = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2, 3])}
META = {"config": {"x": 1}, "edits": [{"prompt": "p", "target": "t"}]}


def tensors_path(directory):
    return directory / json.loads((directory / META_FILE).read_text())["storage"]["tensors_file"]


def test_write_read_round_trip_and_no_leftovers(tmp_path):
    write_adapter(tmp_path, TENSORS, META)
    tensors, meta = read_adapter(tmp_path)
    assert tensors.keys() == TENSORS.keys() and all(torch.equal(tensors[k], TENSORS[k]) for k in TENSORS)
    assert meta == {"format_version": FORMAT_VERSION, **META}
    storage = json.loads((tmp_path / META_FILE).read_text())["storage"]
    data = tensors_path(tmp_path).read_bytes()
    assert storage["sha256"] == hashlib.sha256(data).hexdigest() and storage["bytes"] == len(data)
    assert tensors_path(tmp_path).name == f"melo_adapter-{storage['sha256'][:16]}.safetensors"
    assert sorted(os.listdir(tmp_path)) == saved_files(tmp_path)  # no temp files, no lock file


def test_a_new_save_removes_the_old_tensors_and_stale_temp_files(tmp_path):
    write_adapter(tmp_path, TENSORS, META)
    old = tensors_path(tmp_path)
    (tmp_path / ".melo_adapter-0123456789abcdef.tmp").write_bytes(b"left by a killed save")
    (tmp_path / LOCK_FILE).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("the user's own file")
    write_adapter(tmp_path, {"a": torch.zeros(1)}, {"other": True})
    assert not old.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(saved_files(tmp_path) + ["notes.txt"])
    tensors, meta = read_adapter(tmp_path)
    assert meta["other"] is True and torch.equal(tensors["a"], torch.zeros(1))


def test_saving_fsyncs_files_and_directory(tmp_path, monkeypatch):
    real_fsync, synced = os.fsync, []

    def counting_fsync(fd):
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    write_adapter(tmp_path / "new", TENSORS, META)
    # tensors file, its directory entry, the JSON, its directory entry (+ the parent of the new directory)
    assert synced.count(False) == 2 and synced.count(True) >= 2


def test_reserved_meta_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        write_adapter(tmp_path, TENSORS, {"storage": 1})


def test_loading_never_unpickles(tmp_path, word_tokenizer, monkeypatch):
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=2), tokenizer=word_tokenizer)
    model.edit(EDIT_PROMPTS[:1], ["rome"])
    model.save_pretrained(tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("loading used pickle")

    for owner, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(owner, name, forbidden)
    loaded = melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path, tokenizer=word_tokenizer)
    assert loaded.stats() == model.stats()


def damage_json(text):
    return lambda d: (d / META_FILE).write_text(text)


def edit_json(change):
    def damage(directory):
        data = json.loads((directory / META_FILE).read_text())
        change(data)
        (directory / META_FILE).write_text(json.dumps(data))
    return damage


def flip_byte(index):
    """Flip one bit of the tensors file's byte ``index`` (negative: from the end, in the data)."""
    def damage(directory):
        path = tensors_path(directory)
        data = bytearray(path.read_bytes())
        data[index] ^= 0x01
        path.write_bytes(bytes(data))
    return damage


def rewrite_tensors(data):
    """Replace the tensors file by ``data`` and record its true checksum, so only parsing can fail."""
    def damage(directory):
        path = tensors_path(directory)
        path.write_bytes(data)
        edit_json(lambda m: m["storage"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)))(directory)
        new_name = f"melo_adapter-{hashlib.sha256(data).hexdigest()[:16]}.safetensors"
        path.rename(directory / new_name)
        edit_json(lambda m: m["storage"].update(tensors_file=new_name))(directory)
    return damage


def set_storage(**fields):
    return edit_json(lambda m: m["storage"].update(fields))


DAMAGES = {
    "json missing": (lambda d: (d / META_FILE).unlink(), "melo_adapter.json is missing"),
    "json unreadable": (lambda d: ((d / META_FILE).unlink(), (d / META_FILE).mkdir()),
                        "cannot read .*melo_adapter.json"),
    "json invalid": (damage_json("{not json"), "melo_adapter.json' is not valid JSON"),
    "json not utf-8": (lambda d: (d / META_FILE).write_bytes(b"\xff\xfe{}"), "melo_adapter.json' is not valid JSON"),
    "json empty": (damage_json(""), "melo_adapter.json' is not valid JSON"),
    "json a list": (damage_json("[1, 2]"), "melo_adapter.json' holds a JSON list, not an object"),
    "no version": (edit_json(lambda m: m.pop("format_version")), "melo_adapter.json' has no format_version"),
    "string version": (edit_json(lambda m: m.update(format_version="2")), "format_version '2', not an integer"),
    "old version": (edit_json(lambda m: m.update(format_version=1)), "format version 1; this melo reads version 2"),
    "no storage": (edit_json(lambda m: m.pop("storage")), "melo_adapter.json': field 'storage' is None"),
    "path in tensors_file": (set_storage(tensors_file="../x.safetensors"), "tensors_file '../x.safetensors' is not"),
    "bad sha256": (set_storage(sha256="abc"), "sha256 'abc' is not the 64-digit"),
    "bad size": (set_storage(bytes="12"), "bytes '12' is not a file size"),
    "tensors missing": (lambda d: tensors_path(d).unlink(), r"melo_adapter-[0-9a-f]{16}\.safetensors', named by"),
    "tensors truncated": (lambda d: tensors_path(d).write_bytes(tensors_path(d).read_bytes()[:-7]),
                          r"\.safetensors' is truncated or overwritten: \d+ bytes"),
    "data byte flipped": (flip_byte(-1), r"\.safetensors' fails its checksum"),
    "header byte flipped": (flip_byte(20), r"\.safetensors' fails its checksum"),
    "not safetensors": (rewrite_tensors(b"\x05\x00\x00\x00\x00\x00\x00\x00hello"),
                        r"\.safetensors' is not a valid safetensors file"),
    "header too long": (rewrite_tensors(b"\xff" * 8 + b"{}"), r"\.safetensors' is not a valid safetensors file"),
    "bad header json": (rewrite_tensors(b"\x04\x00\x00\x00\x00\x00\x00\x00{{{{"),
                        r"\.safetensors' is not a valid safetensors file"),
}


@pytest.mark.parametrize("case", DAMAGES)
def test_each_damaged_save_is_a_load_error_naming_the_file(tmp_path, case):
    write_adapter(tmp_path, TENSORS, META)
    damage, message = DAMAGES[case]
    damage(tmp_path)
    with pytest.raises(melo.MeloLoadError, match=message):
        read_adapter(tmp_path)


def test_required_fields_are_type_checked(tmp_path):
    write_adapter(tmp_path, TENSORS, META)
    assert read_adapter(tmp_path, required={"config": dict, "edits": list})[1]["config"] == {"x": 1}
    with pytest.raises(melo.MeloLoadError, match="melo_adapter.json': field 'router' is missing"):
        read_adapter(tmp_path, required={"router": dict})
    with pytest.raises(melo.MeloLoadError, match="field 'edits' is a list, expected dict"):
        read_adapter(tmp_path, required={"edits": dict})


def test_missing_and_non_directories(tmp_path):
    with pytest.raises(melo.MeloLoadError, match="does not exist"):
        read_adapter(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(melo.MeloLoadError, match="is not a directory"):
        read_adapter(tmp_path / "file")
    with pytest.raises(melo.MeloLoadError, match="melo_adapter.json is missing"):
        read_adapter(tmp_path)


def test_flipped_data_byte_in_a_model_save_fails_from_pretrained(tmp_path, word_tokenizer):
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=2), tokenizer=word_tokenizer)
    model.edit(EDIT_PROMPTS[:1], ["rome"])
    model.save_pretrained(tmp_path)
    flip_byte(-1)(tmp_path)
    with pytest.raises(melo.MeloLoadError, match=r"melo_adapter-[0-9a-f]{16}\.safetensors' fails its checksum"):
        melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), tmp_path, tokenizer=word_tokenizer)
