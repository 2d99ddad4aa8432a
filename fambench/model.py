"""Conformer CTC acoustic model: Conv2d x4 subsampling front end, torchaudio Conformer, CTC head.

Padding: torchaudio's Conformer lets padded frames leak into real ones through the depthwise
convolution (a kernel near the end of an utterance reads the padding) and, in training mode,
through batch-norm statistics. GroupNorm (``use_group_norm=True``) does not help: with one group
it normalises over time, padding included, in eval mode too. So the model keeps batch norm
(per-frame in eval mode) and zeroes the padded frames right before every depthwise convolution,
which makes the output for an utterance independent of what it is batched with, in eval mode.
The front end's convolutions have no padding, so their valid outputs only read valid frames.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torchaudio.models import Conformer


@dataclass(frozen=True)
class ModelSettings:
    """Sizes of the Conformer CTC model (vocab_size includes the CTC blank)."""

    n_mels: int = 80
    d_model: int = 144
    n_layers: int = 4
    n_heads: int = 4
    ffn_dim: int = 576
    conv_kernel: int = 15
    dropout: float = 0.1
    vocab_size: int = 32
    frontend_channels: int = 64

    def replace(self, **changes: object) -> ModelSettings:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


class _MaskedDepthwiseConv1d(nn.Conv1d):
    """A depthwise Conv1d that zeroes padded frames of its input first.

    The mask is set by ConformerCTC.forward for the duration of one call; parameter names and
    the module type (nn.Conv1d, which optimizers group by) stay those of torchaudio's layer.
    """

    frame_mask: torch.Tensor | None = None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.frame_mask is not None:
            input = input * self.frame_mask
        return super().forward(input)


def _masked_copy(conv: nn.Conv1d) -> _MaskedDepthwiseConv1d:
    masked = _MaskedDepthwiseConv1d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    masked.load_state_dict(conv.state_dict())
    return masked


class ConvSubsampling(nn.Module):
    """Two stride-2 Conv2d layers (4x fewer frames) and a projection to d_model."""

    def __init__(self, n_mels: int, channels: int, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        freq = ConformerCTC.subsampled_length(n_mels)
        self.proj = nn.Linear(channels * freq, d_model)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.conv(feats.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        return self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))


class ConformerCTC(nn.Module):
    """Log-mel frames in, per-frame CTC log-probabilities out (4x subsampled)."""

    def __init__(self, settings: ModelSettings) -> None:
        super().__init__()
        if settings.vocab_size < 2:
            raise ValueError(
                f"vocab_size must be at least 2 (blank + one token), got {settings.vocab_size}"
            )
        self.settings = settings
        self.frontend = ConvSubsampling(
            settings.n_mels, settings.frontend_channels, settings.d_model
        )
        self.dropout = nn.Dropout(settings.dropout)
        self.encoder = Conformer(
            input_dim=settings.d_model,
            num_heads=settings.n_heads,
            ffn_dim=settings.ffn_dim,
            num_layers=settings.n_layers,
            depthwise_conv_kernel_size=settings.conv_kernel,
            dropout=settings.dropout,
            use_group_norm=False,
            convolution_first=False,
        )
        self._depthwise: list[_MaskedDepthwiseConv1d] = []
        for layer in self.encoder.conformer_layers:
            masked = _masked_copy(layer.conv_module.sequential[2])
            layer.conv_module.sequential[2] = masked
            self._depthwise.append(masked)
        self.head = nn.Linear(settings.d_model, settings.vocab_size)

    @staticmethod
    def subsampled_length(n_frames: int) -> int:
        """Output frames for an input of n_frames (two unpadded kernel-3 stride-2 convs)."""
        return max(0, ((n_frames - 1) // 2 - 1) // 2)

    def output_lengths(self, feat_lens: torch.Tensor, max_frames: int) -> torch.Tensor:
        """subsampled_length for a tensor of lengths (int64, at most ``max_frames``: the
        padded batch's output frames). The CTC loss takes these same numbers from the host."""
        lengths = torch.clamp(((feat_lens - 1) // 2 - 1) // 2, min=0).to(torch.long)
        return torch.clamp(lengths, max=max_frames)

    def forward(
        self, feats: torch.Tensor, feat_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, n_mels), feat_lens (B,) -> log_probs (B, T', V), out_lens (B,).

        Frames beyond an utterance's length are padding, however much of it there is: the
        attention ignores them and the depthwise convolutions see zeros. Nothing here reads a
        value back from the device (torchaudio's Conformer.forward sizes its mask with
        ``lengths.max().item()``; the layers are called directly with this mask instead).
        """
        if feats.shape[1] < 7:
            raise ValueError(f"need at least 7 frames for the 4x subsampling, got {feats.shape[1]}")
        x = self.dropout(self.frontend(feats))
        out_lens = self.output_lengths(feat_lens, x.shape[1])
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < out_lens[:, None]
        mask = valid.unsqueeze(1).to(x.dtype)  # (B, 1, T') as the conv module sees (B, D, T')
        for conv in self._depthwise:
            conv.frame_mask = mask
        try:
            x = x.transpose(0, 1)  # torchaudio's layers take (T', B, D)
            for layer in self.encoder.conformer_layers:
                x = layer(x, ~valid)
            x = x.transpose(0, 1)
        finally:
            for conv in self._depthwise:
                conv.frame_mask = None
        logits = self.head(x)
        return torch.log_softmax(logits.float(), dim=-1), out_lens


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
