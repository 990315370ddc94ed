"""MeloConfig is checked when it is built: each bad field is a MeloConfigError naming the field."""

import math

import pytest

import melo
from melo.presets import PRESETS
from melo.standins import lm, qa, scotus

VALID = {"task": "causal_lm", "target_modules": ["transformer.h.2.mlp.c_fc"],
         "router_layer": "transformer.h.1.mlp.c_fc"}


BAD_FIELDS = [
    ("task", "regression", "task 'regression'"),
    ("task", ["causal_lm"], r"task \['causal_lm'\]"),
    ("router_layer", "", "router_layer ''"),
    ("router_layer", 3, "router_layer 3"),
    ("target_modules", [], "target_modules is empty"),
    ("target_modules", "", "target_modules is an empty string"),
    ("target_modules", "transformer.h.(2", r"target_modules regex 'transformer.h.\(2' does not compile"),
    ("target_modules", ["a", ""], r"target_modules\[1\] is ''"),
    ("target_modules", ["a", 3], r"target_modules\[1\] is 3"),
    ("target_modules", 7, "target_modules 7 is neither"),
    ("block_rank", 2.5, "block_rank must be an integer, got 2.5"),
    ("block_rank", "2", "block_rank must be an integer, got '2'"),
    ("block_rank", True, "block_rank must be an integer, got True"),
    ("block_rank", 0, "block_rank must be at least 1, got 0"),
    ("num_iter", "3", "num_iter must be an integer, got '3'"),
    ("num_iter", 0, "num_iter must be at least 1"),
    ("lr_step", 1.0, "lr_step must be an integer"),
    ("lr_step", -1, "lr_step must be at least 1"),
    ("init_radius", math.inf, "init_radius must be finite, got inf"),
    ("init_radius", math.nan, "init_radius must be finite, got nan"),
    ("init_radius", 0.0, "init_radius must be positive, got 0.0"),
    ("init_radius", "0.5", "init_radius must be a number, got '0.5'"),
    ("edit_lr", -1e-3, "edit_lr must be positive"),
    ("edit_lr", math.inf, "edit_lr must be finite"),
    ("edit_lr", None, "edit_lr must be a number, got None"),
    ("lora_alpha", 0, "lora_alpha must be positive, got 0.0"),
    ("lora_alpha", math.nan, "lora_alpha must be finite"),
    ("lora_alpha", True, "lora_alpha must be a number, got True"),
    ("lr_gamma", 0.0, r"lr_gamma must be in \(0, 1\], got 0.0"),
    ("lr_gamma", 1.5, r"lr_gamma must be in \(0, 1\], got 1.5"),
    ("lr_gamma", math.nan, "lr_gamma must be finite, got nan"),
    ("adam_beta1", 1.0, r"adam_beta1 must be in \[0, 1\), got 1.0"),
    ("adam_beta1", -0.1, r"adam_beta1 must be in \[0, 1\)"),
    ("adam_beta1", "0.5", "adam_beta1"),
    ("seed", -1, r"seed must be in \[0, 4294967296\), got -1"),
    ("seed", 2**32, r"seed must be in \[0, 4294967296\)"),
    ("seed", 2**63, r"seed must be in \[0, 4294967296\)"),
    ("seed", 1.0, "seed must be an integer"),
    ("max_blocks", 0, "max_blocks must be at least 1, got 0"),
    ("max_blocks", 2.0, "max_blocks must be an integer"),
    ("max_blocks", "10", "max_blocks must be an integer"),
    ("key_pooling", "max", "key_pooling 'max'"),
    ("key_pooling", None, "key_pooling None"),
    ("conflict_rule", "shrink", "conflict_rule 'shrink'"),
    ("conflict_rule", None, "conflict_rule None"),
    ("normalize_keys", 1, "normalize_keys must be True or False, got 1"),
    ("normalize_keys", "yes", "normalize_keys must be True or False"),
    ("target_prefix", None, "target_prefix must be a string, got None"),
    ("extra", [1], "extra must be a dict, got list"),
    ("extra", {"f": object()}, "extra is not JSON-serialisable"),
    ("extra", {"x": math.nan}, "extra is not JSON-serialisable"),
    ("extra", {1: "a"}, "extra changes in a JSON round trip"),
    ("extra", {"t": (1, 2)}, "extra changes in a JSON round trip"),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS])
def test_bad_field_is_named(field, value, message):
    with pytest.raises(melo.MeloConfigError, match=message):
        melo.MeloConfig(**{**VALID, field: value})
    with pytest.raises(melo.MeloConfigError, match=message):
        melo.MeloConfig.from_dict({**VALID, field: value})


@pytest.mark.parametrize("data, message", [
    (["task", "causal_lm"], "read from a dict, got list"),
    (None, "read from a dict, got NoneType"),
    ({**VALID, "rank": 3}, r"unknown MeloConfig fields \['rank'\]"),
])
def test_from_dict_rejects_non_dicts_and_unknown_fields(data, message):
    with pytest.raises(melo.MeloConfigError, match=message):
        melo.MeloConfig.from_dict(data)


def test_valid_values_are_kept_and_normalised():
    config = melo.MeloConfig(**{**VALID, "target_modules": ("a", "b")}, init_radius=75, lora_alpha=8,
                             seed=2**32 - 1, max_blocks=3, extra={"note": [1, 2.5, None]})
    assert config.init_radius == 75.0 and isinstance(config.init_radius, float)
    assert isinstance(config.lora_alpha, float) and config.scale == 4.0
    assert config.target_modules == ["a", "b"] and config.max_blocks == 3 and config.seed == 2**32 - 1
    assert melo.MeloConfig.from_dict(config.to_dict()) == config
    assert melo.MeloConfig(**{**VALID, "target_modules": r"transformer\.h\.[23]\.mlp\.c_fc"}).target_modules


def test_every_shipped_setting_still_builds():
    for name, settings in PRESETS.items():
        assert melo.preset_config(name).to_dict() == melo.MeloConfig(**settings).to_dict()
    for module in (lm, qa, scotus):
        melo.MeloConfig(**module.MELO_SETTINGS)
