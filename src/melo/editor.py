"""What every editor shares (MeloModel and the baselines): the edit result, the frozen-base training
loop, batch checks, the model-like inference surface, and the framing of saved adapters."""

from __future__ import annotations

import dataclasses
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .chat import Prompt, render, render_one
from .config import MeloConfig
from .errors import MeloCapacityError, MeloConfigError, MeloEditError, MeloLoadError
from .nethook import execution_device, infer_task
from .persistence import FORMAT_VERSION, read_adapter, write_adapter
from .text import (
    check_edit_batch,
    check_lengths,
    edit_batch,
    edit_problems,
    length_problems,
    max_positions,
    pad_with_eos,
    tokenize,
)


@dataclass
class EditResult:
    block: int
    n_edits: int
    seconds: float
    losses: list[float]  # training loss before each step
    added: int
    expanded: int
    conflicts: int
    forgotten: list[dict[str, Any]] = field(default_factory=list)
    kept_loss: float | None = None  # loss of the block as committed (the best seen, after the last step included)

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.kept_loss is None else self.kept_loss


class KeepBest:
    """Keeps the parameters at the lowest training loss seen: Adam at a fixed step size can climb
    back out of a minimum it has reached (one zsRE edit: loss 0.009 at step 10, 1.16 at step 30)."""

    def __init__(self, params: Sequence[torch.Tensor]):
        self.params, self.loss, self.saved = list(params), math.inf, None

    def offer(self, loss: float) -> None:
        """Call with the loss of the parameters as they are now."""
        if loss < self.loss:
            self.loss, self.saved = loss, [p.detach().clone() for p in self.params]

    def restore(self) -> float:
        if self.saved is not None:
            with torch.no_grad():
                for p, value in zip(self.params, self.saved):
                    p.copy_(value)
        return self.loss


@contextmanager
def frozen(module: nn.Module, trainable: Iterable[nn.Parameter] = ()):
    """Inside: every parameter of ``module`` frozen but ``trainable``, eval mode; both restored after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    was_training = module.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for p in trainable:
            p.requires_grad_(True)
        module.eval()
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


def train_steps(params: list[nn.Parameter], step_loss: Callable[[], torch.Tensor], num_iter: int, lr: float,
                lr_step: int | None = None, lr_gamma: float = 1.0, keep_best: bool = False,
                after_first: Callable[[], None] | None = None, desc: str = "", progress: bool = False,
                what: str = "edit loss", lr_name: str = "edit_lr",
                stop_loss: float | None = None, beta1: float = 0.9) -> tuple[list[float], float | None]:
    """Adam on ``params`` for ``num_iter`` steps (StepLR when ``lr_step``), or until the loss is
    below ``stop_loss``: the losses before each step and, with ``keep_best``, the loss of the best
    parameters seen, which are restored."""
    optimizer = torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999))
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_step, gamma=lr_gamma) if lr_step else None
    best = KeepBest(params) if keep_best else None
    losses: list[float] = []
    stopped = False
    with torch.enable_grad():
        for step in tqdm(range(num_iter), desc=desc, disable=not progress, leave=False):
            optimizer.zero_grad(set_to_none=True)
            loss = step_loss()
            if step == 0 and after_first is not None:
                after_first()
            losses.append(loss.item())
            if best is not None:
                best.offer(losses[-1])
            if stop_loss is not None and losses[-1] < stop_loss:
                stopped = True
                break
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
    if best is not None and not stopped:  # stopped: the parameters are the ones just measured, not stepped since
        with torch.no_grad():
            best.offer(step_loss().item())
    if not all(math.isfinite(x) for x in losses):
        raise MeloEditError(f"{what} diverged ({losses[-1]}); lower {lr_name} ({lr})")
    return losses, (best.restore() if best is not None else None)


class Editor(nn.Module):
    """Base of every editor: wraps ``base_model``; ``edit(prompts, targets) -> EditResult``,
    model-like ``__call__`` / ``generate``, ``disabled()``, ``stats()``, ``save_pretrained``."""

    method = "?"
    required_meta: dict[str, type] = {"config": dict, "edits": list}  # fields a save of this editor must have

    def __init__(self, base_model: nn.Module, config: MeloConfig, tokenizer: Any = None):
        super().__init__()
        if tokenizer is None:
            raise MeloConfigError(f"{type(self).__name__} needs the model's tokenizer (tokenizer=...): edits, keys "
                                  "and generate_text tokenize with it")
        self.base_model = base_model
        if config.task is None:  # resolved once, so saves and every reader see the task
            config = dataclasses.replace(config, task=infer_task(base_model))
        self.melo_config = config
        self.tokenizer = pad_with_eos(tokenizer)
        self.records: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        """Attributes this editor lacks come from the base model (``generation_config``, ``can_generate``,
        ``main_input_name``...), so pipelines and generation utilities take it as they take the model."""
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules (base_model among them)
        except AttributeError:
            base = self.__dict__.get("_modules", {}).get("base_model") if name != "base_model" else None
            if base is None:  # during __init__, or base_model itself: no recursion
                raise
            return getattr(base, name)

    @property
    def task(self) -> str:
        return self.melo_config.task

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embeddings' execution device (melo.nethook.execution_device)."""
        return execution_device(self.base_model)

    @property
    def config(self):
        return self.base_model.config

    @property
    def n_blocks(self) -> int:
        raise NotImplementedError

    # ---- inputs -----------------------------------------------------------------------------
    def _check_batch(self, prompts: Sequence[str], targets: Sequence[Any]) -> None:
        check_edit_batch(self.task, prompts, targets, getattr(self.base_model.config, "num_labels", None))
        texts, _, prefixes = self._rendered(prompts)
        check_lengths(self.task, self.tokenizer, texts, targets, max_positions(self.base_model.config), prefixes)
        cap = self.melo_config.max_blocks
        if cap is not None and self.n_blocks >= cap:
            raise MeloCapacityError(f"max_blocks={cap} reached: cannot add block {self.n_blocks}")

    def invalid_edits(self, prompts: Sequence[Prompt], targets: Sequence[Any]) -> list[tuple[int, str]]:
        """(index, reason) of every edit of a batch that ``edit`` would refuse, all of them in index order
        (``edit`` stops at the first); a batch that is not two lists of one length raises MeloEditError."""
        if self.tokenizer is None:
            raise MeloEditError(f"this {type(self).__name__} has no tokenizer: pass tokenizer= when creating it")
        problems = edit_problems(self.task, prompts, targets, getattr(self.base_model.config, "num_labels", None))
        bad = {i for i, _ in problems}
        texts, prefixes, kept = [], [], []
        for i, prompt in enumerate(prompts):
            if i in bad:
                continue
            try:
                text, span = render_one(self.tokenizer, prompt, f"prompts[{i}]")
            except MeloEditError as err:
                problems.append((i, str(err)))
                continue
            texts.append(text)
            prefixes.append(self._target_prefix(span))
            kept.append(i)
        problems += length_problems(self.task, self.tokenizer, texts, [targets[i] for i in kept],
                                    max_positions(self.base_model.config), prefixes, kept)
        return sorted(problems, key=lambda item: item[0])

    def _rendered(self, prompts: Sequence[Prompt]) -> tuple[list[str], list[tuple[int, int] | None], list[str]]:
        """Text of each prompt (chat prompts through the chat template), the span its key is pooled
        over (None: all of it), and what goes between it and its target."""
        texts, spans = render(self.tokenizer, prompts)
        return texts, spans, [self._target_prefix(span) for span in spans]

    def _target_prefix(self, span: tuple[int, int] | None) -> str:
        return self.melo_config.target_prefix if span is None else ""  # a chat target follows the assistant marker

    def _training_batch(self, prompts: Sequence[Prompt], targets: Sequence[Any]) -> tuple[dict[str, torch.Tensor],
                                                                                           list[tuple]]:
        """Model inputs with labels for the edit loss, and the exact labels routers compare."""
        texts, _, prefixes = self._rendered(prompts)
        batch, labels = edit_batch(self.task, self.tokenizer, texts, targets, prefixes)
        return {k: v.to(self.device) for k, v in batch.items()}, labels

    def _tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in tokenize(self.tokenizer, texts).items()}

    # ---- inference (baselines without routing run the base model) ----------------------------
    def forward(self, *args: Any, **kwargs: Any):
        return self.base_model(*args, **kwargs)

    @torch.no_grad()
    def generate(self, *args: Any, **kwargs: Any):
        return self.base_model.generate(*args, **kwargs)

    @contextmanager
    def disabled(self):
        yield self

    def disable_adapter(self):
        """``disabled()`` under PEFT's name: ``with model.disable_adapter(): ...`` runs the base model."""
        return self.disabled()

    def _forgotten_rows(self, forgotten: dict[int, str], records: list[dict[str, Any]] | None = None
                        ) -> list[dict[str, Any]]:
        records = self.records if records is None else records
        return [{"edit": i, "reason": r, **records[i]} for i, r in forgotten.items()]

    # ---- persistence framing ----------------------------------------------------------------
    def _meta(self, **extra: Any) -> dict[str, Any]:
        return {"method": self.method, "config": self.melo_config.to_dict(), "edits": self.records, **extra}

    def _write(self, directory: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        write_adapter(directory, tensors, meta)

    def unload(self) -> nn.Module:
        """Take this editor off the base model and return the base model."""
        return self.base_model

    @classmethod
    def from_pretrained(cls, base_model: nn.Module, directory: str | os.PathLike, tokenizer: Any = None) -> "Editor":
        """Load the adapter saved in ``directory`` onto ``base_model``.

        Args:
            base_model: a fresh copy of the model the adapter was made on.
            directory: a folder written by ``save_pretrained``.
            tokenizer: the model's tokenizer.

        Returns:
            The editor, as it was saved. On any failure (a MeloLoadError naming the folder and the
            problem) nothing stays hooked on ``base_model``.
        """
        if tokenizer is None:
            raise MeloConfigError(f"{cls.__name__}.from_pretrained needs the model's tokenizer (tokenizer=...)")
        tensors, meta = cls._read(directory)
        where = os.fspath(directory)
        config = cls._saved_config(meta, where)
        try:
            editor = cls(base_model, config, tokenizer=tokenizer, **cls._saved_options(meta))
        except MeloConfigError as err:
            raise MeloLoadError(f"adapter {where!r} does not fit this model: {err}") from err
        try:
            editor._restore(tensors, meta, directory)
        except BaseException as err:
            editor.unload()
            if isinstance(err, MeloLoadError):
                raise MeloLoadError(f"adapter {where!r}: {err}") from err
            raise
        return editor

    @classmethod
    def _saved_config(cls, meta: dict[str, Any], where: str) -> MeloConfig:
        try:
            return MeloConfig.from_dict(meta["config"])
        except MeloConfigError as err:
            raise MeloLoadError(f"adapter {where!r} has a malformed config: {err}") from err

    @classmethod
    def _saved_options(cls, meta: dict[str, Any]) -> dict[str, Any]:
        """Constructor options the save recorded (the baselines' ``options``)."""
        return {}

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], directory: str | os.PathLike) -> None:
        """Put the saved state into this freshly built editor; MeloLoadError if it does not fit."""
        raise NotImplementedError

    @classmethod
    def _read(cls, directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        where = os.fspath(directory)
        tensors, meta = read_adapter(directory, required=cls.required_meta)
        if meta.get("format_version") != FORMAT_VERSION:
            raise MeloLoadError(f"adapter {where!r} has format version {meta.get('format_version')!r}; "
                                f"this melo reads version {FORMAT_VERSION}")
        method = meta.get("method", "melo")
        if method != cls.method:
            hint = "; load it with melo.baselines.load_baseline" if cls.method == "melo" else ""
            raise MeloLoadError(f"adapter {where!r} was saved by method {method!r}, not {cls.method!r}{hint}")
        return tensors, meta
