"""Greedy CTC decoding and error rates."""

from __future__ import annotations

import math

import pytest
import torch

from fambench.workloads.recognition import error_rates, greedy_decode


def _one_hot_log_probs(paths: list[list[int]], vocab: int = 6) -> torch.Tensor:
    length = max(len(p) for p in paths)
    log_probs = torch.full((len(paths), length, vocab), -10.0)
    for b, path in enumerate(paths):
        for t, token in enumerate(path):
            log_probs[b, t, token] = 0.0
    return log_probs


def test_greedy_decode_merges_repeats_and_drops_blanks():
    log_probs = _one_hot_log_probs([[0, 1, 1, 0, 1, 2, 2, 0], [3, 3, 3, 0, 0, 0, 4, 0]])
    hyps = greedy_decode(log_probs, torch.tensor([8, 8]))
    assert hyps == [[1, 1, 2], [3, 4]]


def test_greedy_decode_ignores_frames_beyond_the_length():
    log_probs = _one_hot_log_probs([[1, 0, 2, 3], [5, 5, 4, 4]])
    assert greedy_decode(log_probs, torch.tensor([2, 0])) == [[1], []]


def test_error_rates_against_hand_counts():
    refs = ["THE CAT SAT", "A DOG"]
    hyps = ["THE CAT SIT", ""]
    rates = error_rates(refs, hyps)
    assert rates["wer"] == pytest.approx(3 / 5)  # one substitution + two deletions
    # characters: "THE CAT SAT" (11) one substitution; "A DOG" (5) all deleted
    assert rates["cer"] == pytest.approx(6 / 16)
    assert error_rates(refs, refs) == {"wer": 0.0, "cer": 0.0}


def test_insertions_can_push_wer_above_one():
    rates = error_rates(["A"], ["B C D"])
    assert rates["wer"] == pytest.approx(3.0) and math.isfinite(rates["cer"])


def test_error_rates_reject_bad_input():
    with pytest.raises(ValueError, match="2 references but 1"):
        error_rates(["A", "B"], ["A"])
    with pytest.raises(ValueError, match="empty"):
        error_rates([""], ["A"])
    with pytest.raises(ValueError, match="no utterances"):
        error_rates([], [])
