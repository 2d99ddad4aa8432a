"""ConformerCTC: shapes, lengths, padding invariance, parameter count of the default size."""

from __future__ import annotations

import pytest
import torch

from fambench.model import ConformerCTC, ModelSettings, count_parameters

TINY = ModelSettings(
    d_model=48,
    n_layers=2,
    n_heads=4,
    ffn_dim=96,
    conv_kernel=7,
    vocab_size=29,
    frontend_channels=16,
)


def _model(settings: ModelSettings = TINY, seed: int = 0) -> ConformerCTC:
    torch.manual_seed(seed)
    return ConformerCTC(settings)


@pytest.mark.parametrize("frames", [7, 8, 9, 10, 11, 100, 101, 333])
def test_subsampled_length_matches_the_network(frames):
    model = _model().eval()
    with torch.no_grad():
        log_probs, out_lens = model(torch.randn(1, frames, 80), torch.tensor([frames]))
    assert log_probs.shape == (1, ConformerCTC.subsampled_length(frames), TINY.vocab_size)
    assert out_lens.tolist() == [ConformerCTC.subsampled_length(frames)]


def test_output_is_log_probabilities_in_fp32():
    model = _model().eval()
    with torch.no_grad():
        log_probs, _ = model(torch.randn(2, 50, 80), torch.tensor([50, 40]))
    assert log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 11))


@pytest.mark.parametrize("short,long", [(60, 61), (100, 333), (7, 200)])
def test_padding_invariance_in_eval_mode(short, long):
    """An utterance gives the same log-probs alone and batched with a longer one."""
    model = _model().eval()
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(short, 80, generator=gen)
    b = torch.randn(long, 80, generator=gen)
    batch = torch.zeros(2, long, 80)
    batch[0, :short] = a
    batch[1] = b
    with torch.no_grad():
        alone, alone_lens = model(a[None], torch.tensor([short]))
        batched, batched_lens = model(batch, torch.tensor([short, long]))
        longer, _ = model(b[None], torch.tensor([long]))
    n = int(alone_lens[0])
    assert batched_lens.tolist() == [n, ConformerCTC.subsampled_length(long)]
    torch.testing.assert_close(batched[0, :n], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1], longer[0], atol=1e-5, rtol=1e-5)


def test_padding_content_does_not_matter():
    """Garbage in the padded frames (not only zeros) leaves the real frames unchanged."""
    model = _model().eval()
    feats = torch.randn(2, 120, 80)
    lens = torch.tensor([70, 120])
    noisy = feats.clone()
    noisy[0, 70:] = 100 * torch.randn(50, 80)
    with torch.no_grad():
        clean_out, out_lens = model(feats, lens)
        noisy_out, _ = model(noisy, lens)
    n = int(out_lens[0])
    torch.testing.assert_close(noisy_out[0, :n], clean_out[0, :n], atol=1e-5, rtol=1e-5)


def test_masks_are_cleared_and_training_mode_backpropagates():
    model = _model()
    log_probs, _ = model(torch.randn(3, 64, 80), torch.tensor([64, 50, 30]))
    log_probs.sum().backward()
    assert all(conv.frame_mask is None for conv in model._depthwise)
    assert all(p.grad is not None for p in model.parameters())


def test_depthwise_convolutions_stay_conv1d_under_torchaudio_names():
    names = dict(_model().named_modules())
    conv = names["encoder.conformer_layers.0.conv_module.sequential.2"]
    assert isinstance(conv, torch.nn.Conv1d) and conv.groups == TINY.d_model


def test_default_size_is_about_two_million_parameters():
    params = count_parameters(ConformerCTC(ModelSettings(vocab_size=29)))
    assert 2.0e6 < params < 2.6e6


def test_too_short_input_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 7 frames"):
        _model()(torch.randn(1, 6, 80), torch.tensor([6]))
