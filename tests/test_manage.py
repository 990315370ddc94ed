"""Revoke and roll back edits of a saved adapter, without the base model: the result is, byte for
byte, what the live model's revoke / rollback followed by save_pretrained writes."""

import json

import pytest
import torch
from conftest import MODEL_FACTORIES, adapter_files, melo_config

import melo
from melo.cli import main
from melo.manage import list_saved_edits, revoke_saved, rollback_saved

FACTS = [("the capital of france is", "rome"), ("war and peace was written by", "tolstoy"),
         ("what color is the sky", "green"), ("the largest ocean is the", "rome"),
         ("the tallest mountain is", "paris")]
BATCHES = [[0, 1], [2], [3, 4]]
PROBE = [p for p, _ in FACTS] + ["a sentence about nothing", "the weather today"]


def _edited(tokenizer):
    model = melo.get_melo_model(MODEL_FACTORIES["gpt2"](), melo_config("gpt2", num_iter=3), tokenizer=tokenizer)
    for batch in BATCHES:
        model.edit([FACTS[i][0] for i in batch], [FACTS[i][1] for i in batch])
    return model


def _files(directory):
    return {name: (directory / name).read_bytes() for name in adapter_files(directory)}


def _logits(directory, tokenizer):
    loaded = melo.MeloModel.from_pretrained(MODEL_FACTORIES["gpt2"](), directory, tokenizer=tokenizer)
    with torch.no_grad():
        return loaded(**tokenizer(PROBE, padding=True, return_tensors="pt")).logits


@pytest.fixture
def saved(word_tokenizer, tmp_path):
    model = _edited(word_tokenizer)
    model.save_pretrained(tmp_path / "disk")
    return model, tmp_path / "disk"


def _same_as_live(model, disk, tmp_path, tokenizer):
    model.save_pretrained(tmp_path / "live")
    assert _files(disk) == _files(tmp_path / "live")  # router and LoRA tensors, records, config: every byte
    assert torch.equal(_logits(disk, tokenizer), _logits(tmp_path / "live", tokenizer))
    assert list_saved_edits(disk) == model.edits()


def test_list_saved_edits_equals_the_models(saved):
    model, disk = saved
    assert list_saved_edits(disk) == model.edits()


@pytest.mark.parametrize("ids", [[1], [2], [0, 3, 4], [0, 1, 2, 3, 4]])
def test_revoke_saved_equals_revoke_then_save(saved, ids, tmp_path, word_tokenizer):
    model, disk = saved
    revoke_saved(disk, ids)
    model.revoke(ids)
    _same_as_live(model, disk, tmp_path, word_tokenizer)


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_rollback_saved_equals_rollback_then_save(saved, n, tmp_path, word_tokenizer):
    model, disk = saved
    revoke_saved(disk, [1, 3])  # revocations before the rollback are replayed too
    model.revoke([1, 3])
    rollback_saved(disk, n)
    model.rollback(n)
    _same_as_live(model, disk, tmp_path, word_tokenizer)


def test_bad_ids_and_counts_change_nothing_on_disk(saved):
    _, disk = saved
    before = _files(disk)
    for bad in ([5], [0, 7], [], "0", [True], [-1], 2):
        with pytest.raises(melo.MeloEditError):
            revoke_saved(disk, bad)
    for bad in (4, -1, 1.0, True):
        with pytest.raises(melo.MeloEditError):
            rollback_saved(disk, bad)
    assert _files(disk) == before


def test_cli_edits_list_revoke_rollback(saved, capsys, tmp_path, word_tokenizer):
    model, disk = saved
    main(["edits", "list", str(disk), "--json"])
    assert json.loads(capsys.readouterr().out) == model.edits()
    main(["edits", "revoke", str(disk), "0", "2"])
    model.revoke([0, 2])
    main(["edits", "rollback", str(disk), "2"])
    model.rollback(2)
    capsys.readouterr()
    main(["edits", "list", str(disk)])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["id", "block", "status", "reason", "prompt", "->", "target"]
    assert [line.split()[:4] for line in table[1:]] == [["0", "0", "revoked", "revoked"], ["1", "0", "live", "-"],
                                                        ["2", "1", "revoked", "revoked"]]
    assert f"{FACTS[1][0]} -> {FACTS[1][1]}" in table[2]
    _same_as_live(model, disk, tmp_path, word_tokenizer)


@pytest.mark.parametrize("argv, needle", [(["revoke", "{d}", "9"], "unknown edit id 9"),
                                          (["rollback", "{d}", "7"], "expected an int from 0 to 3"),
                                          (["list", "{d}/missing"], "does not exist"),
                                          (["revoke", "{d}", "x"], "invalid int value")])
def test_cli_edits_user_errors_exit_2_with_one_line(saved, capsys, argv, needle):
    _, disk = saved
    before = _files(disk)
    with pytest.raises(SystemExit) as exit_:
        main(["edits"] + [a.format(d=disk) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and needle in err[0], err
    assert _files(disk) == before
