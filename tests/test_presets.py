"""melo.presets is the one table of MeloConfig settings: stand-ins, demo and benchmark presets read it."""

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
    for name, settings in PRESETS.items():
        MeloConfig(**settings)  # every preset is a valid config
