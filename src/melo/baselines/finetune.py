"""Sequential fine-tuning baselines, no routing: a standard peft LoRA ("lora") and the target
modules' own weights ("ft"). Each edit batch is trained exactly like a MELO block: a fresh Adam at
``edit_lr``, ``num_iter`` steps, StepLR(``lr_step``, ``lr_gamma``), base model in eval mode, on the
model's own loss over MeloModel's training batch. Nothing else is frozen or restored between
batches: what later batches do to earlier edits is what these rows of the table measure.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from typing import Any, Sequence

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..config import MeloConfig
from ..editor import EditResult, frozen, train_steps
from ..errors import MeloConfigError, MeloLoadError
from ..nethook import resolve_targets
from .base import BaselineEditor


def _peft() -> Any:
    """The peft package (an extra: the LoRA baseline is its only user)."""
    try:
        import peft
        import peft.utils
    except ImportError as err:
        raise ImportError("the LoRA baseline needs peft: pip install 'melo[baselines]'") from err
    return peft


class _SequentialEditor(BaselineEditor):
    """Trains ``_trainable()`` on every batch with MELO's schedule; restores them if the edit fails."""

    def _trainable(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def edit(self, prompts: Sequence[str], targets: Sequence[Any], progress: bool = False) -> EditResult:
        """Train on one batch of edits. On any failure the model is left as it was."""
        self._check_batch(prompts, targets)
        start = time.perf_counter()
        cfg = self.melo_config
        batch, _ = self._training_batch(prompts, targets)
        params = self._trainable()
        snapshot = [p.detach().clone() for p in params]
        try:
            with frozen(self, params):
                losses, _ = train_steps(params, lambda: self.base_model(**batch).loss, cfg.num_iter, cfg.edit_lr,
                                        cfg.lr_step, cfg.lr_gamma, desc=f"{self.method} batch {self.n_batches}",
                                        progress=progress, what=f"{self.method} edit loss",
                                        stop_loss=cfg.stop_loss, beta1=cfg.adam_beta1)
        except BaseException:
            with torch.no_grad():
                for p, saved in zip(params, snapshot):
                    p.copy_(saved)
            raise
        finally:
            for p in params:
                p.grad = None
        block = self._record(prompts, targets)
        return EditResult(block, len(prompts), time.perf_counter() - start, losses, 0, 0, 0, [])


class LoraEditor(_SequentialEditor):
    """One standard peft LoRA of rank ``r`` on MELO's target modules, fine-tuned batch after batch.

    ``r`` defaults to ``block_rank x expected_blocks`` (MELO's capacity after that many batches);
    ``lora_alpha`` defaults to ``melo_config.scale x r``, so the LoRA scale ``alpha / r`` equals
    the scale of one MELO block and both learn at the same step size.
    """

    method = "lora"

    def __init__(self, base_model: nn.Module, config: MeloConfig, tokenizer: Any = None, r: int | None = None,
                 expected_blocks: int | None = None, lora_alpha: float | None = None):
        peft = _peft()
        super().__init__(base_model, config, tokenizer)
        targets = resolve_targets(base_model, config.target_modules)
        if r is None:
            if expected_blocks is None:
                raise MeloConfigError("lora needs r= (its total rank) or expected_blocks= "
                                      f"(r = block_rank {config.block_rank} x expected_blocks)")
            if int(expected_blocks) < 1:
                raise MeloConfigError(f"lora expected_blocks must be at least 1, got {expected_blocks!r}")
            r = config.block_rank * int(expected_blocks)
        if int(r) < 1:
            raise MeloConfigError(f"lora r must be at least 1, got {r!r}")
        r = int(r)
        alpha = float(lora_alpha) if lora_alpha is not None else config.scale * r
        conv = {name: isinstance(m, Conv1D) for name, m in targets.items()}
        if len(set(conv.values())) > 1:
            raise MeloConfigError(
                f"lora targets mix Conv1D and nn.Linear ({sorted(n for n, c in conv.items() if c)[0]!r} is a Conv1D): "
                "one peft LoRA has one fan_in_fan_out setting")
        self.options = {"r": r, "lora_alpha": alpha}
        lora = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, bias="none",
                          fan_in_fan_out=all(conv.values()))
        self.peft_model = peft.get_peft_model(base_model, lora)
        generator = torch.Generator().manual_seed(config.block_seed(0))
        with torch.no_grad():  # peft's own init draws from the global RNG: redo A reproducibly
            for name, p in self.peft_model.named_parameters():
                if ".lora_A." in name:
                    bound = 1 / math.sqrt(p.shape[1])  # kaiming_uniform_(a=sqrt(5)), as peft and MELO
                    p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=generator).to(p))

    def _trainable(self) -> list[nn.Parameter]:
        return [p for name, p in self.peft_model.named_parameters() if ".lora_" in name]

    @contextmanager
    def disabled(self):
        """Run the base model as it was before any edit."""
        with self.peft_model.disable_adapter():
            yield self

    def unload(self) -> nn.Module:
        """Remove the LoRA layers and return the untouched base model."""
        return self.peft_model.unload()

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "rank": self.options["r"],
                "extra_parameters": sum(p.numel() for p in self._trainable())}

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """peft's adapter files (adapter_model.safetensors, adapter_config.json) and melo's JSON."""
        self.peft_model.save_pretrained(os.fspath(directory))
        self._write(directory, {}, self._meta(options=self.options))

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], directory: str | os.PathLike) -> None:
        peft = _peft()
        where = os.fspath(directory)
        try:
            weights = peft.utils.load_peft_weights(where, device=str(self.device))
        except (FileNotFoundError, ValueError) as err:
            raise MeloLoadError(f"no peft adapter weights in {where!r}: {err}") from err
        try:
            result = peft.utils.set_peft_model_state_dict(self.peft_model, weights)
        except RuntimeError as err:
            raise MeloLoadError(f"LoRA weights in {where!r} do not fit this model: {err}") from err
        missing = [k for k in result.missing_keys if ".lora_" in k]
        if result.unexpected_keys or missing:
            raise MeloLoadError(f"LoRA weights in {where!r} do not match this model's target modules: "
                                f"unexpected {list(result.unexpected_keys)[:3]}, missing {missing[:3]}")
        self._restore_records(meta)


class FinetuneEditor(_SequentialEditor):
    """Fine-tunes the weight matrices of MELO's target modules in place (the paper's FT row).

    The original weights are kept (from the first edit on) so that ``disabled()`` can run the base
    model as it was; ``from_pretrained`` loads the edited weights into the model it is given.
    """

    method = "ft"

    def __init__(self, base_model: nn.Module, config: MeloConfig, tokenizer: Any = None):
        super().__init__(base_model, config, tokenizer)
        self.target_names = list(resolve_targets(base_model, config.target_modules))
        self._original: dict[str, torch.Tensor] = {}

    def _weights(self) -> dict[str, nn.Parameter]:
        modules = dict(self.base_model.named_modules())
        return {name: modules[name].weight for name in self.target_names}

    def _trainable(self) -> list[nn.Parameter]:
        self._keep_original()
        return list(self._weights().values())

    def _keep_original(self) -> None:
        if not self._original:
            self._original = {n: w.detach().clone() for n, w in self._weights().items()}

    @contextmanager
    def disabled(self):
        """Run the base model as it was before any edit (the original weights swapped in)."""
        if not self._original:
            yield self
            return
        weights = self._weights()
        edited = {n: w.detach().clone() for n, w in weights.items()}
        with torch.no_grad():
            for n, w in weights.items():
                w.copy_(self._original[n])
        try:
            yield self
        finally:
            with torch.no_grad():
                for n, w in weights.items():
                    w.copy_(edited[n])

    def stats(self) -> dict[str, int]:
        return {**super().stats(), "extra_parameters": 0,
                "trained_parameters": sum(w.numel() for w in self._weights().values())}

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        weights = self._weights()
        tensors = {f"ft.{n}.weight": w for n, w in weights.items()}
        shapes = {n: list(w.shape) for n, w in weights.items()}
        self._write(directory, tensors, self._meta(model={"model_class": type(self.base_model).__name__,
                                                          "weights": shapes}))

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], directory: str | os.PathLike) -> None:
        """The edited weights go into the model this editor was built on (the originals are kept for disabled())."""
        weights = self._weights()
        for n, w in weights.items():
            saved = tensors.get(f"ft.{n}.weight")
            if saved is None or saved.shape != w.shape:
                raise MeloLoadError(f"target module {n!r} weight is {list(w.shape)} here, "
                                    f"{None if saved is None else list(saved.shape)} in the save")
        self._keep_original()
        with torch.no_grad():
            for n, w in weights.items():
                w.copy_(tensors[f"ft.{n}.weight"])
        self._restore_records(meta)
