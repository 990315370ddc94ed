"""melo: lifelong model editing with MELO's neuron-indexed dynamic LoRA."""

from .auto import auto_config
from .config import MeloConfig
from .database import VectorDatabase
from .editor import EditResult
from .errors import (
    MeloCapacityError,
    MeloConfigError,
    MeloDataError,
    MeloEditError,
    MeloError,
    MeloLoadError,
    MeloRoutingError,
)
from .model import MeloModel, get_melo_model
from .presets import PRESETS, preset_config

__version__ = "0.1.0"

__all__ = [
    "auto_config",
    "EditResult",
    "MeloCapacityError",
    "MeloConfig",
    "MeloConfigError",
    "MeloDataError",
    "MeloEditError",
    "MeloError",
    "MeloLoadError",
    "MeloModel",
    "MeloRoutingError",
    "VectorDatabase",
    "get_melo_model",
    "PRESETS",
    "preset_config",
]
