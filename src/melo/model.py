"""MeloModel: a transformers model with a router and dynamic LoRA, edited one batch at a time."""

from __future__ import annotations

import math
import os
import re
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.utils import ModelOutput

from .config import MeloConfig
from .errors import MeloCapacityError, MeloConfigError, MeloEditError, MeloLoadError
from .layer import SUPPORTED, DynamicLoraLayer, RoutingState, module_features
from .prefix import frozen_prefix, head_at, next_token_targets, replay_outputs
from .persistence import FORMAT_VERSION, read_adapter, write_adapter
from .router import VectorDatabase, pool_hidden
from .text import check_edit_batch, edit_batch, pad_with_eos, tokenize


class _StopForward(Exception):
    """Raised by the router hook to end a keys-only pass once the keys are taken."""


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


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, ModelOutput):
        output = output.to_tuple()
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def dummy_inputs(model: nn.Module, task: str) -> dict[str, torch.Tensor]:
    """A one-row input of four tokens (and a decoder start for seq2seq) to probe a model's layers."""
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.full((1, 4), min(5, vocab - 1), dtype=torch.long, device=device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if task == "seq2seq":
        start = getattr(model.config, "decoder_start_token_id", None) or 0
        inputs["decoder_input_ids"] = torch.full((1, 1), start, dtype=torch.long, device=device)
    return inputs


def resolve_targets(model: nn.Module, target_modules: list[str] | str) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    if isinstance(target_modules, str):
        pattern = re.compile(target_modules)
        found = {n: m for n, m in modules.items() if n and pattern.fullmatch(n)}
        if not found:
            raise MeloConfigError(f"target_modules regex {target_modules!r} matches no module of the model")
    else:
        unknown = [n for n in target_modules if n not in modules]
        if unknown:
            raise MeloConfigError(f"unknown target module {unknown[0]!r} (not in model.named_modules())")
        found = {n: modules[n] for n in target_modules}
    for name, module in found.items():
        if not isinstance(module, SUPPORTED):
            module_features(module, name)  # raises with the type in the message
    return found


@torch.no_grad()
def run_prompt(base_model: nn.Module, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               stop: type[BaseException]) -> None:
    """Run the part of the model that reads the prompt (the encoder of a seq2seq model), with the
    positions generate() gives left-padded rows, until a hook raises ``stop`` (or the end)."""
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    run = base_model
    if task == "seq2seq":
        run = base_model.get_encoder()
    elif task == "causal_lm":
        inputs["use_cache"] = False
        if bool((attention_mask[:, 0] == 0).any()):
            inputs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    try:
        run(**inputs)
    except stop:
        pass


class MeloModel(nn.Module):
    """A base model whose target modules carry MELO's dynamic LoRA, gated by a vector database."""

    replay_prefix = True  # edits record the layers before the first target once (melo.prefix)
    head_on_targets = True  # causal-LM edits compute logits at target positions only (melo.prefix)

    def __init__(self, base_model: nn.Module, config: MeloConfig, tokenizer: Any = None):
        super().__init__()
        self.base_model = base_model
        self.melo_config = config
        self.tokenizer = pad_with_eos(tokenizer)
        self.routing = RoutingState()
        targets = resolve_targets(base_model, config.target_modules)
        modules = dict(base_model.named_modules())
        if config.router_layer not in modules:
            raise MeloConfigError(f"unknown router layer {config.router_layer!r} (not in model.named_modules())")
        self._router_module = modules[config.router_layer]
        encoder = self._check_router_in_encoder()
        self._frozen_encoder = encoder is not None and not any(n.startswith(encoder + ".") for n in targets)
        self._frozen_prefix = frozen_prefix(base_model, targets) if self.replay_prefix else []
        key_dim = self._probe(targets)
        self.lora = nn.ModuleDict()
        for name, module in targets.items():
            fin, fout = module_features(module, name)
            layer = DynamicLoraLayer(name, fin, fout, config.block_rank, config.scale)
            self.lora[name.replace(".", "__")] = layer.to(next(module.parameters()).device)
        self.db = VectorDatabase(key_dim, config.init_radius)
        self.records: list[dict[str, Any]] = []
        self._handles = [self._router_module.register_forward_hook(self._router_hook)]
        for name, module in targets.items():
            layer = self.lora[name.replace(".", "__")]
            self._handles.append(module.register_forward_hook(layer.hook(self.routing)))

    # ---- set-up checks ----------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.melo_config.task

    @property
    def device(self) -> torch.device:
        return next(self.base_model.parameters()).device

    @property
    def config(self):
        return self.base_model.config

    def _check_router_in_encoder(self) -> str | None:
        """The encoder's module name (seq2seq only), after checking that the router is inside it."""
        if self.task != "seq2seq":
            return None
        encoder = self.base_model.get_encoder()
        prefix = next(n for n, m in self.base_model.named_modules() if m is encoder)
        if not self.melo_config.router_layer.startswith(prefix + "."):
            raise MeloConfigError(
                f"router layer {self.melo_config.router_layer!r} is not in the encoder ({prefix!r}); "
                "seq2seq models are routed on the encoder input"
            )
        return prefix

    def _dummy_inputs(self) -> dict[str, torch.Tensor]:
        return dummy_inputs(self.base_model, self.task)

    def _probe(self, targets: dict[str, nn.Module]) -> int:
        """One dummy forward: the router must run before every target and give a hidden-state tensor."""
        order: list[str] = []
        router_out: list[Any] = []
        def record_router(module: nn.Module, args: tuple, output: Any) -> None:
            order.append("<router>")
            router_out.append(output)

        handles = [self._router_module.register_forward_hook(record_router)]
        for name, module in targets.items():
            handles.append(module.register_forward_hook(lambda m, a, o, n=name: order.append(n)))
        try:
            with torch.no_grad():
                self.base_model(**self._dummy_inputs())
        finally:
            for h in handles:
                h.remove()
        router = self.melo_config.router_layer
        if "<router>" not in order:
            raise MeloConfigError(f"router layer {router!r} did not run in a forward pass of the model")
        first_router = order.index("<router>")
        for name in targets:
            if name in order and order.index(name) < first_router:
                raise MeloConfigError(f"target module {name!r} runs before the router layer {router!r}")
        hidden = _first_tensor(router_out[0])
        if hidden is None or hidden.dim() < 2:
            raise MeloConfigError(
                f"router layer {router!r} returns {type(router_out[0]).__name__}, not a hidden-state tensor"
            )
        return hidden.shape[-1]

    # ---- routing ----------------------------------------------------------------------------
    def _router_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        state = self.routing
        if state.mode not in ("route", "keys"):
            return
        keys = pool_hidden(_first_tensor(output), state.attention_mask, self.melo_config.key_pooling,
                           self.melo_config.normalize_keys)
        if state.mode == "keys":
            state.keys = keys
            raise _StopForward
        state.blocks = self.db.lookup(keys)
        state.mode = "fixed"

    def _key_pass(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with self.routing.use("keys", attention_mask=attention_mask):
            run_prompt(self.base_model, self.task, input_ids, attention_mask, _StopForward)
            keys = self.routing.keys
        if keys is None:
            raise MeloConfigError(f"router layer {self.melo_config.router_layer!r} did not run")
        return keys

    def route(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Block id chosen for each row (-1: no block, the base model)."""
        return self.db.lookup(self._key_pass(input_ids, attention_mask))

    def _tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self.tokenizer is None:
            raise MeloEditError("this MeloModel has no tokenizer: pass tokenizer= to get_melo_model")
        return {k: v.to(self.device) for k, v in tokenize(self.tokenizer, texts).items()}

    def encode_keys(self, prompts: Sequence[str]) -> torch.Tensor:
        """Router keys of prompts, exactly as edit() stores them."""
        enc = self._tokenize(prompts)
        return self._key_pass(enc["input_ids"], enc["attention_mask"])

    # ---- inference --------------------------------------------------------------------------
    def forward(self, *args: Any, melo_blocks: torch.Tensor | None = None, melo_key_mask: torch.Tensor | None = None,
                **kwargs: Any):
        """The base model's forward; each row is routed on its own key.

        ``melo_key_mask`` marks the tokens the key is pooled over (default: the attention mask):
        for a causal LM scored on prompt + target, pass the prompt tokens so the key is the one
        edit() and generate() use. ``melo_blocks`` skips routing and fixes each row's block.
        """
        if self.routing.mode == "off":
            return self.base_model(*args, **kwargs)
        if melo_blocks is not None:
            with self.routing.use("fixed", blocks=melo_blocks.to(self.device)):
                return self.base_model(*args, **kwargs)
        mask = melo_key_mask if melo_key_mask is not None else kwargs.get("attention_mask")
        with self.routing.use("route", attention_mask=mask):
            return self.base_model(*args, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        """Generate with the block chosen on the prompt (encoder input for seq2seq) at every step."""
        if input_ids is None:
            raise MeloEditError("MeloModel.generate needs input_ids to route the prompt")
        if self.routing.mode == "off":
            return self.base_model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        blocks = self.route(input_ids, attention_mask)
        with self.routing.use("fixed", blocks=blocks):
            return self.base_model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    @contextmanager
    def disabled(self):
        """Run the base model as it was before any edit."""
        with self.routing.use("off"):
            yield self

    # ---- editing ----------------------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return next(iter(self.lora.values())).n_blocks

    def _check_batch(self, prompts: Sequence[str], targets: Sequence[Any]) -> None:
        if self.tokenizer is None:
            raise MeloEditError("this MeloModel has no tokenizer: pass tokenizer= to get_melo_model")
        check_edit_batch(self.task, prompts, targets, getattr(self.base_model.config, "num_labels", None))
        cap = self.melo_config.max_blocks
        if cap is not None and self.n_blocks >= cap:
            raise MeloCapacityError(f"max_blocks={cap} reached: cannot add block {self.n_blocks}")

    def _training_batch(self, prompts: Sequence[str], targets: Sequence[Any]) -> tuple[dict[str, torch.Tensor], list[tuple]]:
        """Model inputs with labels for the edit loss, and the exact labels the router compares."""
        batch, labels = edit_batch(self.task, self.tokenizer, prompts, targets, self.melo_config.target_prefix)
        return {k: v.to(self.device) for k, v in batch.items()}, labels

    def edit(self, prompts: Sequence[str], targets: Sequence[Any], progress: bool = False) -> EditResult:
        """Learn one batch of edits in a new block. On any failure the model is left as it was."""
        self._check_batch(prompts, targets)
        start = time.perf_counter()
        cfg = self.melo_config
        batch, labels = self._training_batch(prompts, targets)
        keys = self.encode_keys(prompts)
        block = self.n_blocks
        new_db, report = self.db.updated(keys, labels, block)
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + block)
        params = [p for layer in self.lora.values() for p in layer.start_block(generator)]
        base_params = [p for p in self.base_model.parameters() if p.requires_grad]
        was_training = self.base_model.training
        losses: list[float] = []
        try:
            for p in base_params:
                p.requires_grad_(False)
            self.base_model.eval()
            optimizer = torch.optim.Adam(params, lr=cfg.edit_lr)
            schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
            if self._frozen_encoder:  # the encoder holds no target: run it once, not every step
                with torch.no_grad():
                    encoder_inputs = {k: batch.pop(k) for k in ("input_ids", "token_type_ids") if k in batch}
                    batch["encoder_outputs"] = self.base_model.get_encoder()(
                        **encoder_inputs, attention_mask=batch["attention_mask"])
            if self.task != "classification":
                batch["use_cache"] = False  # layers skipped by the replay must not owe a KV cache entry
            head = self.base_model.get_output_embeddings() if self.task == "causal_lm" else None
            loss_of, only_targets = (lambda out: out.loss), nullcontext()
            if head is not None and self.head_on_targets:
                positions, gold = next_token_targets(batch.pop("labels"))
                loss_of = lambda out: nn.functional.cross_entropy(out.logits.float(), gold)  # noqa: E731
                only_targets = head_at(head, positions)
            with self.routing.use("train"), torch.enable_grad(), replay_outputs(self._frozen_prefix) as replay, \
                    only_targets:
                best = KeepBest(params)
                for step in tqdm(range(cfg.num_iter), desc=f"edit block {block}", disable=not progress, leave=False):
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_of(self.base_model(**batch))
                    if step == 0:
                        replay()  # layers before the first target: same input every step
                    losses.append(loss.item())
                    best.offer(losses[-1])
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                with torch.no_grad():
                    best.offer(loss_of(self.base_model(**batch)).item())
            if not all(math.isfinite(x) for x in losses):
                raise MeloEditError(f"edit loss diverged ({losses[-1]}); lower edit_lr ({cfg.edit_lr})")
            kept_loss = best.restore()
        except BaseException:
            for layer in self.lora.values():
                layer.discard_block()
            raise
        finally:
            for p in base_params:
                p.requires_grad_(True)
            self.base_model.train(was_training)
        for layer in self.lora.values():
            layer.commit_block()
        self.db = new_db
        self.records.extend({"prompt": p, "target": t, "block": block} for p, t in zip(prompts, targets))
        forgotten = [{"edit": i, "reason": r, **self.records[i]} for i, r in report.forgotten.items()]
        return EditResult(block, len(prompts), time.perf_counter() - start, losses, report.added,
                          report.expanded, report.conflicts, forgotten, kept_loss)

    # ---- bookkeeping ------------------------------------------------------------------------
    def forgotten_edits(self) -> list[dict[str, Any]]:
        return [{"edit": i, "reason": r, **self.records[i]} for i, r in sorted(self.db.forgotten.items())]

    def stats(self) -> dict[str, int]:
        return {
            "edits": len(self.records),
            "blocks": self.n_blocks,
            "clusters": self.db.n_clusters,
            "live_keys": int(self.db.live().sum()),
            "conflicts": self.db.n_conflicts,
            "forgotten_edits": len(self.db.forgotten),
            "extra_parameters": sum(layer.extra_parameters() for layer in self.lora.values()),
            "router_floats": self.db.keys.numel() + self.db.centres.numel(),
        }

    def unload(self) -> nn.Module:
        """Remove the hooks and return the untouched base model."""
        for h in self._handles:
            h.remove()
        self._handles = []
        return self.base_model

    # ---- persistence ------------------------------------------------------------------------
    def _signature(self) -> dict[str, Any]:
        return {
            "model_class": type(self.base_model).__name__,
            "targets": {layer.name: [layer.in_features, layer.out_features] for layer in self.lora.values()},
            "key_dim": self.db.dim,
        }

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        tensors = dict(self.db.tensors())
        for layer in self.lora.values():
            for part, value in layer.blocks_state().items():
                tensors[f"lora.{layer.name}.{part}"] = value
        meta = {
            "config": self.melo_config.to_dict(),
            "model": self._signature(),
            "router": self.db.meta(),
            "edits": self.records,
        }
        write_adapter(directory, tensors, meta)

    @classmethod
    def from_pretrained(cls, base_model: nn.Module, directory: str | os.PathLike, tokenizer: Any = None) -> "MeloModel":
        try:
            tensors, meta = read_adapter(directory)
        except FileNotFoundError as err:
            raise MeloLoadError(f"no MELO adapter in {os.fspath(directory)!r}: {err}") from err
        if meta.get("method", "melo") != "melo":
            raise MeloLoadError(f"{os.fspath(directory)!r} holds a {meta['method']!r} baseline, not a MELO adapter; "
                                "load it with melo.baselines.load_baseline")
        if meta.get("format_version") != FORMAT_VERSION:
            raise MeloLoadError(
                f"adapter {os.fspath(directory)!r} has format version {meta.get('format_version')!r}; "
                f"this melo reads version {FORMAT_VERSION}"
            )
        config = MeloConfig.from_dict(meta["config"])
        try:
            model = cls(base_model, config, tokenizer=tokenizer)
        except MeloConfigError as err:
            raise MeloLoadError(f"adapter {os.fspath(directory)!r} does not fit this model: {err}") from err
        saved = meta["model"]
        for layer in model.lora.values():
            shape = saved["targets"].get(layer.name)
            if shape != [layer.in_features, layer.out_features]:
                raise MeloLoadError(
                    f"target module {layer.name!r} is {layer.in_features}x{layer.out_features} here, "
                    f"{shape} in the save"
                )
            layer.load_blocks(tensors[f"lora.{layer.name}.A"], tensors[f"lora.{layer.name}.B"])
        if saved["key_dim"] != model.db.dim:
            raise MeloLoadError(
                f"router layer {config.router_layer!r} gives keys of size {model.db.dim}, the save has {saved['key_dim']}"
            )
        model.db = VectorDatabase.restore(model.db.dim, config.init_radius, tensors, meta["router"])
        model.records = meta["edits"]
        return model


def get_melo_model(base_model: nn.Module, config: MeloConfig, tokenizer: Any = None) -> MeloModel:
    """Wrap ``base_model`` for MELO editing (PEFT-style entry point)."""
    return MeloModel(base_model, config, tokenizer=tokenizer)
