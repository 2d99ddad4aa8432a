"""Greedy CTC decoding and word/character error rates (jiwer)."""

from __future__ import annotations

import jiwer
import torch


def greedy_decode(
    log_probs: torch.Tensor, out_lens: torch.Tensor, blank: int = 0
) -> list[list[int]]:
    """Best path per utterance: argmax per frame, merge repeats, drop blanks.

    log_probs (B, T, V) and out_lens (B,); frames beyond an utterance's length are ignored.
    """
    best = log_probs.argmax(dim=-1).cpu()
    lengths = out_lens.cpu().tolist()
    hyps: list[list[int]] = []
    for row, length in zip(best, lengths, strict=True):
        path = row[: int(length)]
        if path.numel() == 0:
            hyps.append([])
            continue
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        tokens = path[keep]
        hyps.append(tokens[tokens != blank].tolist())
    return hyps


def error_rates(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Corpus-level WER and CER (errors summed over utterances / reference words or chars)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no utterances to score")
    if any(not ref.strip() for ref in refs):
        raise ValueError("a reference transcript is empty")
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}
