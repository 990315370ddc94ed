"""GRACE (Hartvigsen et al., NeurIPS 2023): a discrete key-value codebook at one layer.

A codebook entry has a key (the layer's *input* at the key token: the last prompt token), a value
(a learned vector that replaces the layer's *output* there), a deferral radius and the label it
was learned for. At inference a row's key is compared with every stored key; if the nearest one is
within its radius, its value replaces the layer output at the key token (``replacement="last"``)
or at every prompt token (``"all"``); otherwise the row runs through the untouched layer, bit for
bit. Rules when an edit's key ``h`` arrives (nearest key ``k_j``, distance ``d``, Euclidean):

* add:    empty codebook, or ``d > eps_j + eps_init``: new entry (h, fresh value, eps_init);
* expand: same label: ``eps_j = max(eps_j, d)`` (GRACE's "coverage"; the key does not move) and
          the entry's value is trained further on the new edit;
* split:  different label: new entry at ``h`` with ``eps = d / 2`` and ``eps_j = d / 2 - 1e-5``
          (*set*, as in the reference: a ball an earlier split shrank can grow again; lookup only
          ever consults the nearest key, so it still cannot take over that key's neighbourhood).

Lookup: the nearest key (one float32 matrix product for candidates, the decision on exact float64
distances; ties go to the newest entry) and its entry if the query is within its radius, else none.
A row without prompt tokens (a causal LM scored on a text with an empty prompt) has no key: none.

New values start "cold" (uniform [0, 1), GRACE's default) or "warm" (the layer's own output at the
key token); only the values the batch uses are trained, ``n_iter`` Adam steps at constant ``lr``
on the model's loss, or until it is below the MeloConfig's ``stop_loss`` (the stopping rule every method
shares in a benchmark; defaults as GRACE: eps_init 1.0, lr 1.0, 100 steps, Euclidean distance).

Differences from the reference implementation (Thartvigsen/GRACE), for batching and exactness:
a batch of edits applies the rules key by key, in order, then trains all the values it uses
jointly on the batch loss (the reference edits one example at a time; with Adam the step size does
not depend on the loss scale); labels are compared exactly (token ids or class id; the reference
compares the means of the label ids); ties in the nearest-key search go to the newest entry (the
reference takes the oldest, so a re-edit of the same prompt with a new label would route nowhere);
the key is always the last *prompt* token and, for causal LMs, the entry chosen on the prompt
holds for every generated token (the reference queries with the last token of whatever the layer
sees, so each decoding step is re-keyed on the newest token); ``"all"`` replaces every prompt token
including the key token (the reference's default ``replace_prompt`` slices ``[:key_id]`` and so
leaves the key token itself out). Only Euclidean distance is implemented.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..config import MeloConfig
from ..editor import EditResult, frozen, train_steps
from ..errors import MeloConfigError, MeloEditError, MeloLoadError, MeloRoutingError
from ..nethook import CallContext, StopForward, check_in_encoder, named_module, resolve_targets, run_prompt, trace
from .base import BaselineEditor
from .codebook import Codebook, Label


# ---- per-call state, owned by one editor --------------------------------------------------------
@dataclass
class GraceState:
    """What the hook does in one call (each call has its own: see ``CallContext``).

    ``mode``: "off" (disabled), "route" (look the batch's keys up, replace), "generate" (look up on
    the prompt at the first call, hold those entries for every later decoding step), "train" (every
    row uses its trainable value), "keys" (collect keys and stop). Outside any call the layer runs
    as it is. ``key_mask`` marks the prompt tokens: the key is its last one.
    """

    mode: str
    key_mask: torch.Tensor | None = None
    entries: torch.Tensor | None = None  # route/generate: entry per row (-1: none); train: value row
    values: torch.Tensor | None = None  # train: the values being learned
    calls: int = 0
    keys: torch.Tensor | None = None
    key_outputs: torch.Tensor | None = None


def _layer_input(args: tuple, kwargs: dict) -> Any:
    if args:
        return args[0]
    return kwargs.get("hidden_states", kwargs.get("input"))


def _split_output(output: Any) -> tuple[Any, Callable[[torch.Tensor], Any]]:
    if isinstance(output, torch.Tensor):
        return output, lambda t: t
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor) and type(output) is tuple:
        return output[0], lambda t: (t, *output[1:])
    return None, lambda t: output


def _last_positions(mask: torch.Tensor) -> torch.Tensor:
    return mask.shape[1] - 1 - mask.long().flip(1).argmax(1)


# ---- the editor -------------------------------------------------------------------------------
class GraceEditor(BaselineEditor):
    """GRACE at one layer of ``base_model``, driven like a MeloModel."""

    method = "grace"

    def __init__(self, base_model: nn.Module, config: MeloConfig, tokenizer: Any = None, layer: str | None = None,
                 eps_init: float = 1.0, lr: float = 1.0, n_iter: int = 100, replacement: str = "last",
                 val_init: str = "cold"):
        super().__init__(base_model, config, tokenizer)
        if not float(eps_init) > 0:
            raise MeloConfigError(f"grace eps_init must be positive, got {eps_init!r}")
        if not float(lr) > 0:
            raise MeloConfigError(f"grace lr must be positive, got {lr!r}")
        if int(n_iter) < 1:
            raise MeloConfigError(f"grace n_iter must be at least 1, got {n_iter!r}")
        if replacement not in ("last", "all"):
            raise MeloConfigError(f"grace replacement {replacement!r} is not 'last' or 'all'")
        if val_init not in ("cold", "warm"):
            raise MeloConfigError(f"grace val_init {val_init!r} is not 'cold' or 'warm'")
        if layer is None:
            layer = next(iter(resolve_targets(base_model, config.target_modules)))
        module = named_module(base_model, layer, "GRACE layer")
        self.options = {"layer": layer, "eps_init": float(eps_init), "lr": float(lr), "n_iter": int(n_iter),
                        "replacement": replacement, "val_init": val_init}
        self.layer_name = layer
        check_in_encoder(base_model, self.task, layer, "GRACE layer")
        key_dim, value_dim = self._probe(module)
        self.codebook = Codebook(key_dim, value_dim, eps_init, self.device)
        self._calls: CallContext[GraceState] = CallContext("grace_state")
        self.edit_keys = torch.empty(0, key_dim, device=self.device)
        self.edit_labels: list[Label] = []
        self.forgotten: dict[int, str] = {}
        self._handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _probe(self, module: nn.Module) -> tuple[int, int]:
        """One dummy forward: the layer must take and return [batch, seq, features] tensors."""
        seen = trace(self.base_model, self.task, {self.layer_name: module})
        if not seen:
            raise MeloConfigError(f"GRACE layer {self.layer_name!r} did not run in a forward pass of the model")
        _, args, kwargs, output = seen[0]
        x, out = _layer_input(args, kwargs), _split_output(output)[0]
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise MeloConfigError(f"GRACE layer {self.layer_name!r} takes {type(x).__name__} "
                                  f"{tuple(getattr(x, 'shape', ()))}, not a [batch, seq, features] hidden state")
        if not isinstance(out, torch.Tensor) or out.dim() != 3 or out.shape[:2] != x.shape[:2]:
            raise MeloConfigError(f"GRACE layer {self.layer_name!r} does not return a [batch, seq, features] "
                                  "hidden-state tensor (or a tuple starting with one)")
        return x.shape[-1], out.shape[-1]

    # ---- the hook ---------------------------------------------------------------------------
    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        st = self._calls.get()
        if st is None or st.mode == "off":
            return None
        x = _layer_input(args, kwargs)
        out, rebuild = _split_output(output)
        n, length = x.shape[:2]
        mask = st.key_mask
        if st.mode == "generate":
            if st.calls > 0 and length == 1:  # a cached decoding step: no prompt token here
                st.calls += 1
                return None
            if st.calls == 0:
                if mask is None:
                    mask = torch.ones(n, length, dtype=torch.long, device=x.device)
                if mask.shape[0] != n:  # generate() expands rows (beams, num_return_sequences)
                    mask = mask.repeat_interleave(n // mask.shape[0], 0)
                st.key_mask = mask = mask.to(x.device)
                st.entries = self._lookup(x, mask)
            elif length > mask.shape[1]:  # decoding without cache: the prompt comes first again
                mask = torch.cat([mask, mask.new_zeros(n, length - mask.shape[1])], 1)
            st.calls += 1
        elif mask is None:
            mask = torch.ones(n, length, dtype=torch.long, device=x.device)
        if mask.shape != (n, length):
            raise MeloRoutingError(
                f"GRACE layer {self.layer_name!r} got a [{n}, {length}] input but a {list(mask.shape)} key mask; "
                "call the editor on whole prompts (use generate() for cached decoding)")
        mask = mask.to(x.device)
        if st.mode == "keys":
            rows = torch.arange(n, device=x.device)
            last = _last_positions(mask)
            st.keys, st.key_outputs = x[rows, last].detach().float(), out[rows, last].detach().float()
            raise StopForward
        if st.mode == "train":
            values = st.values[st.entries]
            routed = torch.ones(n, dtype=torch.bool, device=x.device)
        else:
            if st.mode == "route":
                st.entries = self._lookup(x, mask)
            routed = st.entries >= 0
            if not bool(routed.any()):
                return None
            values = self.codebook.values[st.entries.clamp_min(0)]
        return rebuild(self._replace(out, mask, routed, values))

    def _lookup(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Entry of each row, keyed on its last prompt token; a row without prompt tokens (e.g. a
        causal LM scored on a text with an empty prompt) has no key and gets none."""
        rows = torch.arange(x.shape[0], device=x.device)
        entries = self.codebook.lookup(x[rows, _last_positions(mask)])
        return torch.where(mask.bool().any(1), entries, -1)

    def _replace(self, out: torch.Tensor, mask: torch.Tensor, routed: torch.Tensor,
                 values: torch.Tensor) -> torch.Tensor:
        values = values.to(out.dtype)
        if self.options["replacement"] == "last":
            rows = torch.nonzero(routed).squeeze(1)
            return out.index_put((rows, _last_positions(mask)[rows]), values[rows])
        where = (mask.bool() & routed.unsqueeze(1)).unsqueeze(-1)
        return torch.where(where, values.unsqueeze(1), out)

    # ---- keys and inference -----------------------------------------------------------------
    def _key_pass(self, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer inputs and outputs at the last prompt token, running the model only up to the layer."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        with self._calls.use(GraceState("keys", key_mask=attention_mask)) as st:
            run_prompt(self.base_model, self.task, input_ids, attention_mask)
        keys, outs = st.keys, st.key_outputs
        if keys is None:
            raise MeloConfigError(f"GRACE layer {self.layer_name!r} did not run")
        return keys, outs

    def route(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Codebook entry chosen for each row (-1: none, the base model)."""
        return self.codebook.lookup(self._key_pass(input_ids, attention_mask)[0])

    def encode_keys(self, prompts: Sequence[str]) -> torch.Tensor:
        enc = self._tokenize(prompts)
        return self._key_pass(enc["input_ids"], enc["attention_mask"])[0]

    def forward(self, *args: Any, melo_key_mask: torch.Tensor | None = None, **kwargs: Any):
        """The base model's forward with GRACE at the layer; ``melo_key_mask`` marks the prompt
        tokens (default: the attention mask), e.g. the prompt part of a causal LM's prompt + target."""
        if self._off():
            return self.base_model(*args, **kwargs)
        mask = melo_key_mask if melo_key_mask is not None else kwargs.get("attention_mask")
        with self._calls.use(GraceState("route", key_mask=mask)):
            return self.base_model(*args, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 **kwargs: Any):
        """Generate with the entry chosen on the prompt (encoder input for seq2seq) at every step."""
        if input_ids is None:
            raise MeloEditError("GraceEditor.generate needs input_ids to look the prompt up")
        if self._off():
            return self.base_model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        with self._calls.use(GraceState("generate", key_mask=attention_mask)):
            return self.base_model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def _off(self) -> bool:
        st = self._calls.get()
        return st is not None and st.mode == "off"

    @contextmanager
    def disabled(self):
        """Run the base model as it was before any edit (in this thread only)."""
        with self._calls.use(GraceState("off")):
            yield self

    def unload(self) -> nn.Module:
        """Remove the hook and return the untouched base model."""
        self._handle.remove()
        return self.base_model

    # ---- editing ----------------------------------------------------------------------------
    def edit(self, prompts: Sequence[str], targets: Sequence[Any], progress: bool = False) -> EditResult:
        """Apply the codebook rules to the batch's keys, then train the values it uses.
        On any failure the editor is left as it was."""
        self._check_batch(prompts, targets)
        start = time.perf_counter()
        opt = self.options
        batch, labels = self._training_batch(prompts, targets)
        enc = self._tokenize(prompts)
        keys, key_outputs = self._key_pass(enc["input_ids"], enc["attention_mask"])
        book, report = self.codebook.updated(keys, labels)
        assigned = torch.tensor(report.assigned, dtype=torch.long, device=self.device)
        touched, rows_value = torch.unique(assigned, return_inverse=True)
        init = book.values[touched].clone()
        new = touched >= self.codebook.n
        if bool(new.any()):
            if opt["val_init"] == "cold":
                generator = torch.Generator().manual_seed(self.melo_config.block_seed(self.n_batches))
                init[new] = torch.rand(int(new.sum()), book.value_dim, generator=generator).to(init)
            else:  # warm: the layer's own output at the key token of the entry's first edit
                first = (assigned.unsqueeze(0) == touched[new].unsqueeze(1)).long().argmax(1)
                init[new] = key_outputs[first].to(init)
        values = nn.Parameter(init)
        if self.task == "causal_lm":
            key_mask = batch["attention_mask"] * (batch["labels"] == -100)
        else:
            key_mask = batch["attention_mask"]
        state = GraceState("train", key_mask=key_mask, entries=rows_value, values=values)
        with frozen(self.base_model), self._calls.use(state):
            losses, _ = train_steps([values], lambda: self.base_model(**batch).loss, opt["n_iter"], opt["lr"],
                                    desc=f"grace batch {self.n_batches}", progress=progress,
                                    what="GRACE value training", lr_name="lr",
                                    stop_loss=self.melo_config.stop_loss)
        book.values[touched] = values.detach()
        self.codebook = book
        batch_id = self._record(prompts, targets)
        self.edit_keys = torch.cat([self.edit_keys, keys.float().to(self.edit_keys.device)])
        self.edit_labels.extend(tuple(label) for label in labels)
        before = set(self.forgotten)
        self._refresh_forgotten()
        forgotten = self._forgotten_rows({i: r for i, r in sorted(self.forgotten.items()) if i not in before})
        return EditResult(batch_id, len(prompts), time.perf_counter() - start, losses, report.added,
                          report.expanded, report.conflicts, forgotten)

    def _refresh_forgotten(self) -> None:
        """An edit is forgotten when its key no longer reaches an entry with its label."""
        if not self.edit_labels:
            self.forgotten = {}
            return
        entries = self.codebook.lookup(self.edit_keys).tolist()
        self.forgotten = {}
        for i, e in enumerate(entries):
            if e < 0:
                self.forgotten[i] = "outside"
            elif self.codebook.labels[e] != self.edit_labels[i]:
                self.forgotten[i] = "other_label"

    def forgotten_edits(self) -> list[dict[str, Any]]:
        return self._forgotten_rows(dict(sorted(self.forgotten.items())))

    def stats(self) -> dict[str, int]:
        book = self.codebook
        return {
            **super().stats(),
            "clusters": book.n,
            "conflicts": book.n_conflicts,
            "forgotten_edits": len(self.forgotten),
            "extra_parameters": book.n * (book.key_dim + book.value_dim),
        }

    # ---- persistence ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        book = self.codebook
        tensors = {**book.tensors(), "grace.edit_keys": self.edit_keys}
        meta = self._meta(
            options=self.options,
            grace={
                "model_class": type(self.base_model).__name__,
                "key_dim": book.key_dim,
                "value_dim": book.value_dim,
                "labels": [list(label) for label in book.labels],
                "edit_labels": [list(label) for label in self.edit_labels],
                "n_conflicts": book.n_conflicts,
            },
        )
        self._write(directory, tensors, meta)

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], directory: str | os.PathLike) -> None:
        saved, book = meta["grace"], self.codebook
        if [saved["key_dim"], saved["value_dim"]] != [book.key_dim, book.value_dim]:
            raise MeloLoadError(
                f"GRACE layer {self.layer_name!r} is {book.key_dim}->{book.value_dim} here, "
                f"{saved['key_dim']}->{saved['value_dim']} in the save")
        book.load(tensors, saved["labels"], saved["n_conflicts"])
        self.edit_keys = tensors["grace.edit_keys"].float().to(self.device)
        self.edit_labels = [tuple(label) for label in saved["edit_labels"]]
        self._restore_records(meta)
        self._refresh_forgotten()
