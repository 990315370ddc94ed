"""Subject scope: an edit that names its subject routes only prompts that mention the subject.

Matching is on the key encoder's WordPiece tokens: the subject's tokens must occur in the prompt's
as a run of whole words (the token after the run does not continue a word), so with an uncased
encoder it is a whole-word, case-insensitive match ("Toko Yasuda" matches "toko yasuda's", not
"Toko Yasudas"). With ``subject_names`` the run must not be followed at once by a word that starts
with a capital letter or a digit either: "Nintendo" is then not mentioned in "Nintendo 64 is made
by", nor "Arno" in "Arno Holz was born in". Every token run is reduced to one 64-bit polynomial
hash, so a batch of prompts is matched against all stored subjects with one sort and one
``searchsorted`` (``subject_matches``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import MeloConfigError, MeloEditError

NO_TOKEN = -1  # padding of a stored subject's token row
_MULT = 0x100000001B3  # FNV-64 prime: odd, so the wrapping products below lose no information per step
_OFFSET = -0x340D631B7BDDDCDB  # FNV-64 offset basis as a signed 64-bit value


def continuation_table(tokenizer) -> torch.Tensor:
    """[vocab] bool: the token continues the previous word (a WordPiece ``##`` piece)."""
    vocab = tokenizer.get_vocab()
    if not any(t.startswith("##") for t in vocab):
        raise MeloConfigError("subject_gate needs a WordPiece key encoder (a BERT-family tokenizer with ## pieces)")
    table = torch.zeros(max(vocab.values()) + 1, dtype=torch.bool)
    table[[i for t, i in vocab.items() if t.startswith("##")]] = True
    return table


def _step(h: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    return (h ^ token) * _MULT  # int64 products wrap: the same bits on every platform


def subject_hashes(rows: torch.Tensor) -> torch.Tensor:
    """[n, width] token rows padded with NO_TOKEN -> [n] hashes (0 for an empty row: no subject)."""
    h = torch.full((rows.shape[0],), _OFFSET, dtype=torch.long, device=rows.device)
    length = (rows != NO_TOKEN).sum(1)
    for j in range(rows.shape[1]):  # over token positions, not rows
        h = torch.where(j < length, _step(h, rows[:, j]), h)
    return torch.where(length > 0, _step(h, length), torch.zeros_like(h))


def name_starts(texts: Sequence[str], offsets: torch.Tensor, continues: torch.Tensor) -> torch.Tensor:
    """[batch, seq] bool: the token begins a word whose first character is an upper-case letter or a
    digit. ``offsets``: the tokenizer's [batch, seq, 2] character spans of ``texts`` ((0, 0): a special
    or padding token); ``continues``: [batch, seq] the token continues the previous word."""
    lengths = torch.from_numpy(np.char.str_len(np.asarray(list(texts), dtype=str)).astype(np.int64)).reshape(-1)
    codes = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    start, end = offsets[..., 0].long(), offsets[..., 1].long()
    if len(codes) == 0:
        return torch.zeros(start.shape, dtype=torch.bool)
    at = ((torch.cumsum(lengths, 0) - lengths)[:, None] + start).clamp(0, len(codes) - 1)
    first = codes[at.numpy()].view("<U1")
    named = torch.from_numpy(np.char.isupper(first) | np.char.isdigit(first))
    return named & (end > start) & ~continues.bool()


def window_hashes(ids: torch.Tensor, mask: torch.Tensor, continues: torch.Tensor, max_len: int,
                  name_next: torch.Tensor | None = None) -> torch.Tensor:
    """Hashes of every whole-word token run of length 1..max_len in each row: [batch, seq * max_len];
    0 where a run leaves the mask or ends inside a word (or, with ``name_next`` ([batch, seq] bool,
    ``name_starts``), is followed at once by a capitalised word or a number)."""
    batch, seq = ids.shape
    ids = ids.long()
    valid = mask.bool()
    nxt_cont = torch.zeros_like(valid)
    nxt_cont[:, :-1] = continues.to(ids.device)[ids[:, 1:].clamp(0, len(continues) - 1)] & valid[:, 1:]
    if name_next is not None:
        nxt_cont[:, :-1] |= name_next.to(ids.device)[:, 1:] & valid[:, 1:]
    out = torch.zeros(batch, seq, max_len, dtype=torch.long, device=ids.device)
    h = torch.full((batch, seq), _OFFSET, dtype=torch.long, device=ids.device)
    inside = torch.ones_like(valid)
    for n in range(1, max_len + 1):  # over run lengths, not rows
        end = torch.arange(seq, device=ids.device) + n - 1
        ok = end < seq
        end = end.clamp_max(seq - 1)
        inside = inside & valid.gather(1, end.expand(batch, seq)) & ok
        h = _step(h, ids.gather(1, end.expand(batch, seq)))
        whole = inside & ~nxt_cont.gather(1, end.expand(batch, seq))
        out[:, :, n - 1] = torch.where(whole, _step(h, torch.full_like(h, n)), torch.zeros_like(h))
    return out.reshape(batch, seq * max_len)


def subject_matches(windows: torch.Tensor, key_hashes: torch.Tensor) -> torch.Tensor:
    """[batch, n_keys] bool: row b mentions the subject of key k (keys without a subject: False)."""
    batch, n = windows.shape[0], key_hashes.shape[0]
    match = torch.zeros(batch, n, dtype=torch.bool, device=key_hashes.device)
    has = torch.nonzero(key_hashes != 0).squeeze(1)
    if len(has) == 0 or windows.numel() == 0:
        return match
    sorted_h, order = torch.sort(key_hashes[has])
    w = windows.to(key_hashes.device)
    lo = torch.searchsorted(sorted_h, w)
    hi = torch.searchsorted(sorted_h, w, right=True)
    count = torch.where(w != 0, hi - lo, torch.zeros_like(lo)).reshape(-1)
    if int(count.sum()) == 0:
        return match
    row = torch.arange(batch, device=w.device).repeat_interleave(w.shape[1])
    rows = row.repeat_interleave(count)
    first = lo.reshape(-1).repeat_interleave(count)
    offset = torch.arange(len(rows), device=w.device) - (torch.cumsum(count, 0) - count).repeat_interleave(count)
    match[rows, has[order[first + offset]]] = True
    return match


def check_subjects(subjects: Sequence[str | None], n: int, gate: bool) -> None:
    """MeloEditError unless ``subjects`` is one non-empty string or None per prompt, on a gated config."""
    if not gate:
        raise MeloEditError("subjects scope edits only with subject_gate=True in the MeloConfig")
    if isinstance(subjects, str) or len(subjects) != n:
        raise MeloEditError(f"subjects must be a list of {n} strings or None, one per prompt")
    for i, subject in enumerate(subjects):
        if subject is not None and (not isinstance(subject, str) or not subject.strip()):
            raise MeloEditError(f"subjects[{i}] is {subject!r}: give a non-empty string or None")


def check_named(subjects: Sequence[str | None], named: torch.Tensor) -> None:
    """MeloEditError for the first subject its own prompt does not mention (``named``: [n] bool)."""
    for i, subject in enumerate(subjects):
        if subject is not None and not bool(named[i]):
            raise MeloEditError(f"subjects[{i}] {subject!r} does not occur as whole words in prompt {i}'s text")
