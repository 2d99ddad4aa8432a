"""The speech-recognition task of every workload: model, CTC loss, greedy decoding, WER/CER.

The workload owns these (the AlgoPerf split): the trainer calls them and knows nothing of
speech; the optimizer side never sees them.
"""

from __future__ import annotations

import jiwer
import torch

from fambench.data.batching import Batch
from fambench.model import ConformerCTC
from fambench.workloads.data import Split, WorkloadData
from fambench.workloads.precision import autocast
from fambench.workloads.presets import Preset

_CTC = torch.nn.CTCLoss(blank=0, reduction="sum", zero_infinity=True)


def build_model(preset: Preset, data: WorkloadData) -> ConformerCTC:
    """The preset's Conformer, sized for the data's vocabulary and feature bins."""
    settings = preset.model.replace(vocab_size=data.tokenizer.vocab_size, n_mels=data.n_mels)
    return ConformerCTC(settings)


def ctc_loss_sum(
    log_probs: torch.Tensor,
    out_lens: torch.Tensor,
    targets: torch.Tensor,
    target_lens: torch.Tensor,
) -> torch.Tensor:
    """CTC loss summed over the batch, in fp32 (log_probs are (B, T, V)).

    Give the lengths as host tensors: torch copies device lengths to the host (a sync on a GPU).
    Its CUDA kernel still copies three small host arrays to the device, with a blocking copy, in
    the forward and again in the backward; no caller can avoid those.
    """
    return _CTC(log_probs.float().transpose(0, 1), targets, out_lens, target_lens)


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    split: Split,
    data: WorkloadData,
    precision: str,
    device: torch.device,
) -> dict[str, float]:
    """Corpus WER and CER by greedy decoding, and the CTC loss per target token, on ``split``
    (in the run's precision: see fambench.workloads.precision)."""
    model.eval()
    loss_sum, tokens = 0.0, 0
    hyps: list[str] = []
    for batch in split.batches:
        feats = batch.feats.to(device, non_blocking=True)
        lens = batch.feat_lens.to(device)
        with autocast(precision, device):
            log_probs, out_lens = model(feats, lens)
        loss = ctc_loss_sum(
            log_probs, out_lens, batch.targets.to(device), batch.target_lens.to(device)
        )
        loss_sum += float(loss)
        tokens += int(batch.target_lens.sum())
        hyps.extend(
            " ".join(data.tokenizer.decode(ids).split())
            for ids in greedy_decode(log_probs, out_lens)
        )
    model.train()
    rates = error_rates(split.references, hyps)
    rates["loss"] = loss_sum / max(tokens, 1)
    return rates


@torch.no_grad()
def reestimate_norm_statistics(
    model: torch.nn.Module, batches: list[Batch], precision: str, device: torch.device
) -> int:
    """Batch norm's running statistics gathered anew from ``batches`` at the model's present
    weights (an optimizer that evaluates at other weights than it trains at asks for this).

    Every batch-norm layer restarts its statistics and averages them over the batches with
    equal weight (momentum None); every other module stays in eval mode, so no dropout draws a
    random number. The model is left in eval mode. Returns the number of layers re-estimated.
    """
    norms = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    model.eval()
    if not norms or not batches:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for batch in batches:
            feats = batch.feats.to(device, non_blocking=True)
            with autocast(precision, device):
                model(feats, batch.feat_lens.to(device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
            m.eval()
    return len(norms)


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
