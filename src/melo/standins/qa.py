"""``minilm-qa``: MiniLM encoder + a small BERT decoder, trained on NQ-open question -> answer.

Stands in for GRACE/MELO's ``google/t5-small-ssm-nq`` (T5-Small fine-tuned on Natural Questions,
edited on zsRE) when the hub is out of reach: a frozen all-MiniLM-L6-v2 encoder and a 2-layer BERT
decoder with cross-attention, seeded from MiniLM's layers 4-5 and trained on cached encoder states
of the benchmark's 1000 NQ upstream questions. MELO settings: ``PRESETS["minilm-qa"]``
(``melo.presets``). Architecture, training, measured figures and the sweeps behind the settings:
``docs/standins/qa.md``.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..persistence import cache_dir
from ..presets import PRESETS
from .cache import base_model_path, data_sources, keyed_dir, quiet_transformers, save_cached
from .cache import cached_info as cached_info_in
from .cache import load_or_train as load_or_train_cached
from .training import length_batches

NAME = "minilm-qa"
VERSION = 1  # bump to retrain cached models

SETTINGS: dict[str, Any] = dict(
    seed=0, n_train=1000, decoder_layers=2, init_layers=[4, 5], max_position_embeddings=64,
    max_length=64, epochs=15, lr=1e-3, batch_size=32, max_new_tokens=32,
)

MELO_SETTINGS: dict[str, Any] = PRESETS[NAME]  # read-only view; the values live in melo.presets

# --------------------------------------------------------------------------------------------
# model and tokenizer


def build_tokenizer(source: Any = None):
    """MiniLM's tokenizer (or ``source``: a path or a tokenizer) with ``bos = [CLS]``, ``eos = [SEP]``.

    The BOS starts decoding; the EOS is what melo appends to seq2seq edit labels and what
    generation stops on (MiniLM's tokenizer has neither). A tokenizer without [CLS] / [SEP]
    keeps its own BOS / EOS.
    """
    from transformers import AutoTokenizer

    if source is None or isinstance(source, (str, Path)):
        tokenizer = AutoTokenizer.from_pretrained(source or base_model_path())
    else:
        tokenizer = source
    if tokenizer.cls_token is not None:
        tokenizer.bos_token = tokenizer.cls_token
    if tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token
    tokenizer.model_max_length = int(SETTINGS["max_length"])
    return tokenizer


def decoder_config(encoder_config: Any, decoder_layers: int, max_position_embeddings: int):
    """A BERT decoder config of the encoder's width, with cross-attention and no dropout."""
    from transformers import BertConfig

    e = encoder_config
    return BertConfig(
        vocab_size=e.vocab_size, hidden_size=e.hidden_size, num_hidden_layers=int(decoder_layers),
        num_attention_heads=e.num_attention_heads, intermediate_size=e.intermediate_size,
        hidden_act=e.hidden_act, layer_norm_eps=e.layer_norm_eps, type_vocab_size=e.type_vocab_size,
        max_position_embeddings=min(int(max_position_embeddings), e.max_position_embeddings),
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=e.pad_token_id,
        is_decoder=True, add_cross_attention=True, tie_word_embeddings=True,
    )


def _set_special_ids(model: nn.Module, start: int, eos: int, pad: int, max_new_tokens: int) -> None:
    from transformers import GenerationConfig

    for cfg in (model.config, model.config.decoder):
        cfg.decoder_start_token_id, cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = start, start, eos, pad
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, bos_token_id=start, eos_token_id=eos, pad_token_id=pad,
        max_new_tokens=int(max_new_tokens), do_sample=False,
    )


@torch.no_grad()
def _init_decoder_from_encoder(decoder: nn.Module, encoder: nn.Module, init_layers: Sequence[int] | None) -> None:
    """Copy word / position / type embeddings (and their LayerNorm) and, per decoder layer, the
    self-attention and FFN of encoder layer ``init_layers[i]``; cross-attention keeps its fresh init."""
    src, dst = encoder.embeddings, decoder.bert.embeddings
    dst.word_embeddings.weight.copy_(src.word_embeddings.weight)
    n_pos = dst.position_embeddings.weight.shape[0]
    dst.position_embeddings.weight.copy_(src.position_embeddings.weight[:n_pos])
    dst.token_type_embeddings.weight.copy_(src.token_type_embeddings.weight)
    dst.LayerNorm.load_state_dict(src.LayerNorm.state_dict())
    for layer, i in zip(decoder.bert.encoder.layer, list(init_layers or [])):
        source = encoder.encoder.layer[int(i)]
        for part in ("attention", "intermediate", "output"):
            getattr(layer, part).load_state_dict(getattr(source, part).state_dict())


def build_model(encoder: Any = None, decoder_layers: int = SETTINGS["decoder_layers"],
                init_layers: Sequence[int] | None = SETTINGS["init_layers"], tokenizer: Any = None,
                seed: int = SETTINGS["seed"], max_position_embeddings: int = SETTINGS["max_position_embeddings"]):
    """The untrained stand-in: ``EncoderDecoderModel`` of ``encoder`` and a fresh BERT decoder.

    ``encoder``: None (MiniLM's weights), a ``BertConfig`` (random weights, for tests) or a
    ``BertModel``. ``init_layers``: encoder layers whose self-attention and FFN seed the decoder
    layers (None: random). Special ids come from ``tokenizer`` (MiniLM's by default).
    """
    from transformers import BertLMHeadModel, BertModel, EncoderDecoderModel

    quiet_transformers()
    if encoder is None:
        encoder = BertModel.from_pretrained(base_model_path())
    elif not isinstance(encoder, nn.Module):
        torch.manual_seed(seed)
        encoder = BertModel(encoder)
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    torch.manual_seed(seed)
    decoder = BertLMHeadModel(decoder_config(encoder.config, decoder_layers, max_position_embeddings))
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    model.encoder.load_state_dict(state)  # whatever construction did, the encoder is the given one
    _init_decoder_from_encoder(model.decoder, model.encoder, init_layers)
    model.decoder.tie_weights()
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    _set_special_ids(model, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
                     SETTINGS["max_new_tokens"])
    return model.eval()


# --------------------------------------------------------------------------------------------
# training


@torch.no_grad()
def encoder_states(model: nn.Module, tokenizer: Any, questions: Sequence[str],
                   max_length: int = SETTINGS["max_length"], batch_size: int = 64,
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder outputs [n, width, hidden] (zero-padded) and attention masks [n, width], computed once."""
    enc = tokenizer(list(questions), truncation=True, max_length=max_length)["input_ids"]
    width = max(map(len, enc))
    hidden = torch.zeros(len(questions), width, model.config.encoder.hidden_size)
    mask = torch.zeros(len(questions), width, dtype=torch.long)
    model.encoder.eval()
    batches = length_batches([len(e) for e in enc], batch_size)
    for idx in tqdm(batches, desc=f"{NAME}: encode", disable=not progress, leave=False):
        batch = tokenizer([questions[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        out = model.encoder(**batch).last_hidden_state
        hidden[idx, : out.shape[1]] = out
        mask[idx, : out.shape[1]] = batch["attention_mask"]
    return hidden, mask


def answer_ids(tokenizer: Any, answers: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Answer token ids + EOS, as melo builds seq2seq edit labels (truncated to ``max_tokens``)."""
    rows = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    return [list(r)[: max_tokens - 1] + [tokenizer.eos_token_id] for r in rows]


def train(model: nn.Module, tokenizer: Any, questions: Sequence[str], answers: Sequence[str],
          settings: dict[str, Any] | None = None, progress: bool = True, label: str = NAME) -> dict[str, Any]:
    """Train the decoder on cached encoder outputs (the encoder and word embeddings stay frozen)."""
    start = time.perf_counter()
    settings = settings or SETTINGS
    seed = int(settings["seed"])
    random.seed(seed)
    torch.manual_seed(seed)
    hidden, mask = encoder_states(model, tokenizer, questions, int(settings["max_length"]), progress=progress)
    rows = answer_ids(tokenizer, answers, int(settings["max_position_embeddings"]))
    width = max(map(len, rows))
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        labels[i, : len(r)] = torch.tensor(r)
    start_id = model.config.decoder_start_token_id
    dec_in = torch.cat([torch.full((len(rows), 1), start_id), labels[:, :-1].clamp_min(0)], 1)
    dec_in[:, 1:][labels[:, :-1] == -100] = model.config.pad_token_id
    dec_mask = torch.cat([torch.ones(len(rows), 1, dtype=torch.long), (labels[:, :-1] != -100).long()], 1)

    decoder = model.decoder
    for p in model.parameters():
        p.requires_grad_(False)
    for name, p in decoder.named_parameters():
        p.requires_grad_("word_embeddings" not in name)  # the tied LM head stays MiniLM's embeddings
    params = [p for p in decoder.parameters() if p.requires_grad]
    bs, epochs = int(settings["batch_size"]), int(settings["epochs"])
    per_epoch = (len(rows) + bs - 1) // bs
    total = epochs * per_epoch
    optimizer = torch.optim.AdamW(params, lr=float(settings["lr"]), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, (total - s) / total))
    generator = torch.Generator().manual_seed(seed)
    epoch_losses: list[float] = []
    bar = tqdm(total=total, desc=f"{label}: train decoder", disable=not progress)
    decoder.train()
    try:
        for _ in range(epochs):
            perm = torch.randperm(len(rows), generator=generator)
            total_loss = 0.0
            for lo in range(0, len(rows), bs):
                idx = perm[lo : lo + bs]
                lab = labels[idx]
                w = int((lab != -100).sum(1).max())
                q = int(mask[idx].sum(1).max())
                lab = lab[:, :w]
                out = decoder.bert(input_ids=dec_in[idx, :w], attention_mask=dec_mask[idx, :w],
                                   encoder_hidden_states=hidden[idx, :q], encoder_attention_mask=mask[idx, :q],
                                   use_cache=False).last_hidden_state
                keep = lab != -100
                loss = nn.functional.cross_entropy(decoder.cls(out[keep]), lab[keep])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total_loss += loss.item() * len(idx)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            epoch_losses.append(round(total_loss / len(rows), 4))
    finally:
        bar.close()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
    return {"epoch_losses": epoch_losses, "train_seconds": round(time.perf_counter() - start, 1)}


@torch.no_grad()
def generate(model: nn.Module, tokenizer: Any, questions: Sequence[str], batch_size: int = 64,
             max_new_tokens: int = SETTINGS["max_new_tokens"], progress: bool = False) -> list[str]:
    """Greedy answers (``model`` may be the stand-in or a MeloModel wrapping it)."""
    out: list[str] = [""] * len(questions)
    lengths = [len(q) for q in questions]
    for idx in tqdm(length_batches(lengths, batch_size), desc=f"{NAME}: generate", disable=not progress, leave=False):
        enc = tokenizer([questions[i] for i in idx], padding=True, truncation=True, return_tensors="pt")
        ids = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                             max_new_tokens=max_new_tokens, do_sample=False)
        for i, text in zip(idx, tokenizer.batch_decode(ids, skip_special_tokens=True)):
            out[i] = text.strip()
    return out


def scores(predictions: Sequence[str], answers: Sequence[Sequence[str]], tokenizer: Any) -> dict[str, float]:
    """Token F1 / EM against the answers as written, and against their tokenizer round trip
    (``decode(encode(answer))``: what an uncased WordPiece model can output at best)."""
    from ..evaluation.metrics import exact_match, token_f1

    n = max(1, len(predictions))
    def round_trip(text: str) -> str:
        return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"])

    reachable = [[round_trip(a) for a in ans] for ans in answers]
    return {
        "f1": sum(token_f1(p, a) for p, a in zip(predictions, answers)) / n,
        "em": sum(exact_match(p, a) for p, a in zip(predictions, answers)) / n,
        "f1_tokenized": sum(token_f1(p, a) for p, a in zip(predictions, reachable)) / n,
        "em_tokenized": sum(exact_match(p, a) for p, a in zip(predictions, reachable)) / n,
    }


# --------------------------------------------------------------------------------------------
# cache


def training_sources(data_dir: Any = None) -> dict[str, Any]:
    """What the stand-in is trained from (:func:`melo.standins.cache.data_sources`): the NQ file of the data dir."""
    from ..data import resolve_data_dir
    from ..data.locate import NQ_FILES, first_file

    return data_sources({"upstream": first_file(resolve_data_dir(data_dir), NQ_FILES)})


def cache_path(data_dir: Any = None) -> Path:
    """The cache folder of the stand-in trained on this data dir's NQ file (keyed by its bytes and SETTINGS)."""
    return keyed_dir(cache_dir("standins", NAME), VERSION, SETTINGS, training_sources(data_dir))


def load_saved(directory: Path):
    """(model, tokenizer) saved in ``directory`` by :func:`train_and_save`."""
    from transformers import EncoderDecoderModel

    quiet_transformers()
    model = EncoderDecoderModel.from_pretrained(directory).eval()
    return model, build_tokenizer(directory)


def cached_info(data_dir: Any = None) -> dict[str, Any] | None:
    """The JSON saved with the model cached for this data dir (settings, data, seed, figures, time), or None."""
    return cached_info_in(cache_path(data_dir))


def load_training_data(data_dir: Any = None, n_train: int | None = None):
    """The NQ records the stand-in is trained on (= the benchmark's upstream / TRR set)."""
    from ..data import load_nq, resolve_data_dir
    from ..data.locate import NQ_FILES, first_file

    n_train = int(SETTINGS["n_train"]) if n_train is None else n_train
    return load_nq(first_file(resolve_data_dir(data_dir), NQ_FILES), limit=n_train)


def train_and_save(directory: Path, data_dir: Any = None, settings: dict[str, Any] | None = None,
                   progress: bool = True, model: nn.Module | None = None, tokenizer: Any = None,
                   records: Sequence[Any] | None = None) -> dict[str, Any]:
    """Train (the full stand-in unless ``model``/``tokenizer``/``records`` are given), measure, save."""
    import transformers

    start = time.perf_counter()
    settings = settings or SETTINGS
    records = list(records) if records is not None else load_training_data(data_dir, int(settings["n_train"]))
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    if model is None:
        model = build_model(None, settings["decoder_layers"], settings["init_layers"], tokenizer,
                            int(settings["seed"]), settings["max_position_embeddings"])
    questions = [r.prompt for r in records]
    stats = train(model, tokenizer, questions, [str(r.target) for r in records], settings, progress)
    predictions = generate(model, tokenizer, questions, max_new_tokens=int(settings["max_new_tokens"]),
                           progress=progress)
    measured = scores(predictions, [r.answers or [str(r.target)] for r in records], tokenizer)
    info = {
        "name": NAME,
        "version": VERSION,
        "seed": settings["seed"],
        "settings": settings,
        "n_train": len(records),
        **{f"train_{k}": round(v, 4) for k, v in measured.items()},
        "seconds": round(time.perf_counter() - start, 1),
        **stats,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    save_cached(directory, model, tokenizer, info)
    if progress:
        print(f"{NAME}: train F1 {info['train_f1']:.3f} (tokenized answers {info['train_f1_tokenized']:.3f}), "
              f"EM {info['train_em']:.3f}, {info['seconds']:.0f} s; cached in {directory}")
    return info


def load_or_train(data_dir: Any = None, progress: bool = True, data: Any = None):
    """(model, tokenizer): the cached stand-in, trained first (once, a few minutes on 2 cores) if needed.

    Trained on the data dir's NQ file whatever the edits; ``data`` (the bench task) is not used.
    """
    model, tokenizer, _ = load_or_train_cached(cache_dir("standins", NAME), VERSION, SETTINGS, load_saved,
                                              lambda directory: train_and_save(directory, data_dir, None, progress),
                                              training_sources(data_dir))
    return model, tokenizer
