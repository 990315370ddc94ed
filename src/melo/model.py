"""MeloModel: a transformers model with a router and dynamic LoRA, edited one batch at a time.

The method lives in three files: ``config.py`` (settings), ``router.py`` (keys, the vector database
and each call's routing) and ``layer.py`` (the LoRA blocks each routed row gathers). This module
wires the router to the layers, runs the edit loop and saves / loads the adapter.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Sequence

import torch
from torch import nn

from .augment import augmented, context_prefixes, in_context
from .chat import Prompt, key_mask
from .config import MeloConfig
from .database import VectorDatabase
from .editor import Editor, EditResult, frozen, train_steps
from .encoders import SentenceEncoder
from .errors import MeloConfigError, MeloEditError, MeloLoadError
from .layer import DynamicLoraLayer
from .manage import (
    SAVED_META,
    adapter_stats,
    check_contexts,
    check_edit_ids,
    check_lora_blocks,
    check_records,
    check_rollback,
    check_signature,
    edit_rows,
    live_blocks,
    new_records,
)
from .memory import peak_rss_bytes
from .nethook import (
    check_in_encoder,
    execution_device,
    named_module,
    probe_router,
    resolve_targets,
    supported_features,
)
from .prefix import frozen_prefix, head_loss_at, next_token_targets, replay_outputs
from .router import Router
from .scope import check_named, check_subjects
from .text import tokenize


class MeloModel(Editor):
    """A base model whose target modules carry MELO's dynamic LoRA, gated by a vector database.

    Safe to call from many threads at once (forward, generate, route, disabled); edits run one at a
    time, and a call sees the model either before or after an edit, never a mixture.
    """

    method = "melo"
    required_meta = SAVED_META
    replay_prefix = True  # edits record the layers before the first target once (melo.prefix)
    head_on_targets = True  # causal-LM edits compute logits at target positions only (melo.prefix)

    def __init__(self, base_model: nn.Module, config: MeloConfig, tokenizer: Any = None):
        super().__init__(base_model, config, tokenizer)
        targets = resolve_targets(base_model, config.target_modules)
        self.target_names = list(targets)
        router_module = named_module(base_model, config.router_layer, "router layer")
        encoder = check_in_encoder(base_model, self.task, config.router_layer, "router layer")
        self._frozen_encoder = encoder is not None and not any(n.startswith(encoder + ".") for n in targets)
        self._frozen_prefix = frozen_prefix(base_model, targets) if self.replay_prefix else []
        key_dim = probe_router(base_model, self.task, config.router_layer, router_module, targets)
        encoder = SentenceEncoder(config.key_encoder, self.device) if config.key_encoder is not None else None
        if encoder is not None:
            key_dim = encoder.dim
        self.lora = nn.ModuleDict()
        for name, module in targets.items():
            fin, fout = supported_features(module, name)
            layer = DynamicLoraLayer(name, fin, fout, config.block_rank, config.scale, config.storage_dtype)
            self.lora[name.replace(".", "__")] = layer.to(execution_device(base_model, module))
        self._edit_lock, self._state_lock = threading.Lock(), threading.Lock()  # state: db and records together
        self.contexts: list[str] = []  # melo.augment's prefixes, made at the first edit that needs them
        self.router = Router(base_model, self.melo_config, router_module, key_dim, encoder, self.tokenizer)
        self._handles = [module.register_forward_hook(self.lora[name.replace(".", "__")].hook(self.router.current))
                         for name, module in targets.items()]
        self._publish(self.router.db)

    def _apply(self, fn: Any, recurse: bool = True) -> "MeloModel":
        """What ``to()``, ``half()``, ``double()``, ``cuda()`` run: the base model and the LoRA buffers change
        as usual; then the published blocks become the layers' new buffers, and the database and the key
        encoder move to the model's device (keeping their own dtypes, so routing decisions do not change)."""
        super()._apply(fn, recurse)
        router = self.__dict__.get("router")  # None while __init__ runs
        if router is not None:
            with self._edit_lock:
                if router.encoder is not None:
                    router.encoder.to(self.device)
                self._publish(router.db.moved_to(self.device))
        return self

    def _publish(self, db: VectorDatabase, records: list[dict[str, Any]] | None = None) -> None:
        with self._state_lock:
            self.router.publish(db, {layer.name: layer.weights() for layer in self.lora.values()})
            self.records = self.records if records is None else records

    def _state(self) -> tuple[list[dict[str, Any]], VectorDatabase]:
        with self._state_lock:
            return self.records, self.db

    @property
    def db(self) -> VectorDatabase:
        return self.router.db

    @property
    def n_blocks(self) -> int:
        return next(iter(self.lora.values())).n_blocks

    # ---- routing and inference ----------------------------------------------------------------
    def route(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              melo_key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Block id chosen for each row (-1: no block, the base model)."""
        return self.router.route(input_ids, attention_mask, melo_key_mask)

    def prompt_inputs(self, prompts: Sequence[Prompt], padding_side: str = "right") -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and melo_key_mask of prompts (strings, or chat message lists
        rendered through the chat template with the key on the user's text), on the model's device."""
        texts, spans, _ = self._rendered(prompts)
        enc = tokenize(self.tokenizer, texts, padding_side)
        enc["melo_key_mask"] = key_mask(self.tokenizer, texts, spans, enc["attention_mask"], padding_side)
        return {k: v.to(self.device) for k, v in enc.items()}

    def encode_keys(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        """Router keys of prompts, exactly as edit() stores them."""
        enc = self.prompt_inputs(prompts)
        return self.router.keys(enc["input_ids"], enc["attention_mask"], enc["melo_key_mask"])

    @torch.no_grad()
    def generate_text(self, prompts: Sequence[Prompt], max_new_tokens: int = 16, **kwargs: Any) -> list[str]:
        """Continuations of prompts (strings or chat message lists), routed on each prompt: with
        ``num_return_sequences=n``, n per prompt in order. Greedy unless ``do_sample=True``."""
        side = "left" if self.task == "causal_lm" else "right"
        enc = self.prompt_inputs(prompts, padding_side=side)
        kwargs.setdefault("do_sample", False)
        pad = self.tokenizer.pad_token_id
        out = self.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=pad, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:] if self.task == "causal_lm" else out
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)

    def forward(self, *args: Any, melo_blocks: torch.Tensor | None = None, melo_key_mask: torch.Tensor | None = None,
                **kwargs: Any):
        """The base model's forward; each row is routed on its own key.

        ``melo_key_mask`` marks the tokens the key is pooled over (default: the attention mask):
        for a causal LM scored on prompt + target, pass the prompt tokens so the key is the one
        edit() and generate() use. ``melo_blocks`` skips routing and fixes each row's block.
        """
        if self.router.disabled:
            return self.base_model(*args, **kwargs)
        if melo_blocks is not None:
            with self.router.call("fixed", blocks=melo_blocks.to(self.device)):
                return self.base_model(*args, **kwargs)
        mask = melo_key_mask if melo_key_mask is not None else kwargs.get("attention_mask")
        if self.router.encoder is not None:  # keys from the text: routed before the model runs
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            if input_ids is None:
                raise MeloEditError("a MeloModel with a key encoder routes on input_ids: pass them")
            with self.router.routed(input_ids, kwargs.get("attention_mask"), mask):
                return self.base_model(*args, **kwargs)
        with self.router.call("route", key_mask=mask):
            return self.base_model(*args, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 melo_key_mask: torch.Tensor | None = None, **kwargs: Any):
        """The base model's ``generate``, with each row's block chosen on its prompt once (the encoder input
        for seq2seq) and kept for every decoding step (KV cache, beams, ``num_return_sequences``).

        Args:
            input_ids: the prompts' token ids (needed: the route is taken on them).
            attention_mask: their attention mask (default: every token).
            melo_key_mask: the tokens the key is pooled over (default: the attention mask).
            **kwargs: anything the base model's ``generate`` takes.

        Returns:
            What the base model's ``generate`` returns (token ids, prompt included for causal LMs).
        """
        if input_ids is None:
            raise MeloEditError("MeloModel.generate needs input_ids to route the prompt")
        if self.router.disabled:
            return self.base_model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        with self.router.routed(input_ids, attention_mask, melo_key_mask):
            return self.base_model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    @contextmanager
    def disabled(self):
        """Run the base model as it was before any edit (in this thread only)."""
        with self.router.disable():
            yield self

    # ---- editing ----------------------------------------------------------------------------
    def edit(self, prompts: Sequence[str], targets: Sequence[Any], progress: bool = False,
             subjects: Sequence[str | None] | None = None) -> EditResult:
        """Learn one batch of edits in a new block; the router maps each prompt's key to it.

        Args:
            prompts: strings, or chat message lists (causal LMs: trained through the chat template, keyed
                on the user's text).
            targets: one per prompt: the new answer text (generative tasks) or class id (classification).
            progress: show a progress bar over the training steps.
            subjects: with ``subject_gate``, each edit's subject (None: none), named in its prompt: the
                edit then routes only prompts that mention it (``melo.scope``).

        Returns:
            The EditResult: block id, seconds, losses, and the router's report (clusters added or
            expanded, conflicts, edits forgotten).

        On any failure (a MeloEditError for a malformed batch, MeloCapacityError at ``max_blocks``) the
        model is left exactly as it was.
        """
        with self._edit_lock:
            return self._edit(prompts, targets, progress, subjects)

    def _edit(self, prompts: Sequence[str], targets: Sequence[Any], progress: bool,
              subjects: Sequence[str | None] | None) -> EditResult:
        self._check_batch(prompts, targets)
        start = time.perf_counter()
        cfg = self.melo_config
        batch, labels = self._training_batch(*augmented(prompts, targets, self._contexts()[: cfg.context_prefixes]))
        keys, subject_rows, key_edits = self._scoped_keys(prompts, subjects)
        block = self.n_blocks  # the router compares the edits' own labels:
        new_db, report = self.db.updated(keys, [labels[e] for e in key_edits.tolist()], block, subject_rows, key_edits)
        generator = torch.Generator().manual_seed(cfg.block_seed(block))
        params = [p for layer in self.lora.values() for p in layer.start_block(generator)]
        try:
            with frozen(self.base_model), self.router.call("train") as call:
                losses, kept_loss = self._train_block(params, batch, call, block, progress)
        except BaseException:
            for layer in self.lora.values():
                layer.discard_block()
            raise
        for layer in self.lora.values():
            layer.commit_block()
        self._publish(new_db, self.records + new_records(len(self.records), prompts, targets, block, subjects))
        return EditResult(block, len(prompts), time.perf_counter() - start, losses, report.added,
                          report.expanded, report.conflicts, self._forgotten_rows(report.forgotten), kept_loss)

    def _contexts(self) -> list[str]:
        """The context prefixes edits are also trained (and keyed) after, written once by the base model."""
        n = self.melo_config.n_contexts
        if len(self.contexts) != n:
            if self.task != "causal_lm":
                raise MeloConfigError(f"context prefixes work on causal LMs, this model's task is {self.task!r}")
            with frozen(self.base_model):
                self.contexts = context_prefixes(self.base_model, self.tokenizer, n, self.melo_config.seed,
                                                 self.device)
        return self.contexts

    def _scoped_keys(self, prompts: Sequence[Prompt], subjects: Sequence[str | None] | None) -> tuple[Any, Any, Any]:
        """The edits' keys (each prompt's, then after each of ``key_variants`` contexts), each key's edit and,
        with subjects, the keys' subject token rows after checking each prompt names its subject."""
        variants = self._contexts()[: self.melo_config.key_variants]
        key_prompts = [q for p in prompts for q in (p, *(in_context(p, c) for c in variants))]
        key_edits = torch.arange(len(prompts)).repeat_interleave(1 + len(variants))
        if subjects is None:
            return self.encode_keys(key_prompts), None, key_edits
        check_subjects(subjects, len(prompts), self.melo_config.subject_gate)
        rows = self.router.encoder.subject_rows(subjects)[key_edits]
        enc = self.prompt_inputs(key_prompts)
        keys, named = self.router.keys_and_mentions(enc["input_ids"], enc["attention_mask"], enc["melo_key_mask"],
                                                    rows)
        check_named(subjects, named[:: 1 + len(variants)])
        return keys, rows, key_edits

    def _train_block(self, params: list[nn.Parameter], batch: dict[str, torch.Tensor], call: Any, block: int,
                     progress: bool) -> tuple[list[float], float | None]:
        cfg = self.melo_config
        active = lambda: self.router.current() is call  # noqa: E731  (this edit's own forward passes)
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
            only_targets = head_loss_at(head, positions, gold, active)
        with replay_outputs(self._frozen_prefix, active) as replay, only_targets as head_loss:
            loss_of = head_loss or loss_of
            return train_steps(params, lambda: loss_of(self.base_model(**batch)), cfg.num_iter, cfg.edit_lr,
                               cfg.lr_step, cfg.lr_gamma, keep_best=True, after_first=replay,
                               desc=f"edit block {block}", progress=progress, stop_loss=cfg.stop_loss,
                               beta1=cfg.adam_beta1)

    # ---- edit management ----------------------------------------------------------------------
    def edits(self) -> list[dict[str, Any]]:
        """Every edit: id, prompt, target, block, created (epoch seconds), status ("live",
        "forgotten" or "revoked") and the reason it is not live."""
        return edit_rows(*self._state())

    def revoke(self, edit_ids: Sequence[int]) -> None:
        """Take edits out: their keys leave the database; a block none of whose edits is live is no
        longer used. All or nothing: an unknown id changes nothing."""
        with self._edit_lock:
            ids = self._known_ids(edit_ids)
            self._publish(self.db.revoked(ids))

    def rollback(self, n_blocks: int) -> None:
        """Undo every edit batch after the first ``n_blocks``: the model equals, bit for bit, one
        that only ever made those batches (revoked edits among them stay revoked)."""
        with self._edit_lock:
            check_rollback(n_blocks, self.n_blocks)
            db = self.db.rolled_back(n_blocks)
            for layer in self.lora.values():
                layer.truncate(n_blocks)
            self._publish(db, self.records[: db.n_edits])

    def _known_ids(self, edit_ids: Sequence[int]) -> list[int]:
        return check_edit_ids(edit_ids, len(self.records))

    def live_blocks(self) -> list[int]:
        """Blocks that at least one live edit routes to."""
        return live_blocks(self.db)

    def forgotten_edits(self) -> list[dict[str, Any]]:
        records, db = self._state()
        return self._forgotten_rows(db.edit_reasons(), records)

    def stats(self) -> dict[str, int | None]:
        records, db = self._state()
        return adapter_stats(db, list(self.lora.values()), len(records))

    def memory(self) -> dict[str, int | None]:
        """Bytes of the stored blocks and the router database, and the process's peak resident memory."""
        return {**{k: v for k, v in self.stats().items() if k.endswith("_bytes")}, "peak_rss_bytes": peak_rss_bytes()}

    def unload(self) -> nn.Module:
        """Remove the hooks and return the untouched base model."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.router.remove()
        return self.base_model

    # ---- persistence ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Save the adapter (router database, LoRA blocks, edit records, config) crash-safely.

        Args:
            directory: the folder to write (created; a save there before is replaced atomically).

        Returns:
            None. ``MeloModel.from_pretrained(base_model, directory, tokenizer=tok)`` loads it back.
        """
        tensors = dict(self.db.tensors())
        for layer in self.lora.values():
            for part, value in layer.blocks_state().items():
                tensors[f"lora.{layer.name}.{part}"] = value
        config = self.melo_config.to_dict()
        config["target_modules"] = list(self.target_names)  # resolved: a load never evaluates a saved regex
        meta = self._meta(
            config=config,
            model={"model_class": type(self.base_model).__name__, "key_dim": self.db.dim,
                   "targets": {layer.name: [layer.in_features, layer.out_features] for layer in self.lora.values()}},
            router=self.db.meta(), contexts=list(self.contexts),
            key_encoder=None if self.router.encoder is None else {"name": self.router.encoder.name,
                                                                   "digest": self.router.encoder.digest},
        )
        self._write(directory, tensors, meta)

    @classmethod
    def _saved_config(cls, meta: dict[str, Any], where: str) -> MeloConfig:
        config = super()._saved_config(meta, where)
        if not isinstance(config.target_modules, list):
            raise MeloLoadError(f"adapter {where!r} names its target modules by a regex; saves list them resolved")
        return config

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict, directory: str | os.PathLike) -> None:
        records, cfg = list(meta["edits"]), self.melo_config
        check_signature(meta, list(self.lora.values()), self.router.encoder, self.db.dim, cfg.router_layer)
        n_blocks = check_lora_blocks(tensors, {layer.name: (layer.block_rank, layer.in_features, layer.out_features)
                                               for layer in self.lora.values()}, self.melo_config.storage_dtype)
        db = VectorDatabase.restore(self.db.dim, self.melo_config.init_radius, tensors, meta.get("router", {}),
                                    n_blocks, self.db.device, self.melo_config.conflict_rule)
        check_records(records, db)
        for layer in self.lora.values():
            layer.load_blocks(tensors[f"lora.{layer.name}.A"], tensors[f"lora.{layer.name}.B"])
        self._publish(db, records)
        self.contexts = check_contexts(meta.get("contexts", []), self.melo_config.n_contexts)


def get_melo_model(base_model: nn.Module, config: MeloConfig, tokenizer: Any = None) -> MeloModel:
    """Wrap ``base_model`` for MELO editing (PEFT-style entry point)."""
    return MeloModel(base_model, config, tokenizer=tokenizer)
