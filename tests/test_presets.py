"""melo.presets is the one place for MeloConfig settings: stand-ins, demo and benchmark presets read it."""

from melo import MeloConfig
from melo.bench.presets import BENCH_PRESETS
from melo.demo import model as demo_model
from melo.presets import PRESETS
from melo.standins import STANDINS


def test_every_settings_dict_is_a_preset():
    for name, preset in BENCH_PRESETS.items():
        assert preset.melo() == PRESETS[name], name
    for name, module in STANDINS.items():
        assert module.MELO_SETTINGS is PRESETS[name], name
    assert demo_model.melo_config(seed=3).to_dict() == MeloConfig(**{**PRESETS["world-qa"], "seed": 3}).to_dict()
    assert PRESETS["world-qa"] == {**PRESETS["minilm-qa"], "init_radius": 0.2}
    assert PRESETS["smollm2-facts"] == {**PRESETS["smollm2-zsre"], "init_radius": 0.6, "stop_loss": 0.15}
    for name, settings in PRESETS.items():
        MeloConfig(**settings)  # every preset is a valid config
