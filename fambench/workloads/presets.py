"""Workload presets: a name fixes the data, model size, batch, budget, evaluation and target.

The AlgoPerf idea: a workload is everything but the optimizer, so runs with different
optimizers on one preset compare like with like. The hyperparameters tuned for a preset live
apart, in `fambench/workloads/tuned/<preset>.json` (see `fambench.workloads.tuned`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from fambench.errors import ConfigError
from fambench.model import ModelSettings


@dataclass(frozen=True)
class DataSpec:
    """Where the speech comes from and how it is tokenized.

    kind "synth": the embedded eSpeak NG corpus, generated under the cache directory with
    the synth_* settings. kind "librispeech": subsets of a LibriSpeech root given by --data.
    """

    kind: Literal["synth", "librispeech"]
    train_subset: str
    dev_subset: str
    test_subset: str | None = None
    synth_hours: float = 3.0
    synth_dev_utterances: int = 300
    synth_test_utterances: int = 300
    synth_seed: int = 0
    # What the synthetic utterances say and who says them (fambench.data.synth.SynthSettings):
    # "words", "digits" or "commands"; the words per utterance (digits for "digits"); the
    # vocabulary of "words" (its most frequent N words, 0 for all); train speakers; SNR range;
    # speaking rates (words per minute).
    synth_text: str = "words"
    synth_words: tuple[int, int] = (4, 20)
    synth_vocabulary: int = 0
    synth_train_speakers: int = 32
    synth_snr_db: tuple[float, float] = (15.0, 35.0)
    synth_rate_wpm: tuple[int, int] = (115, 150)
    tokenizer: Literal["char", "sentencepiece"] = "char"
    vocab_size: int | None = None  # sentencepiece only
    max_dev_utterances: int | None = None  # evaluate on N dev utterances, evenly spread


@dataclass(frozen=True)
class ScheduleSpec:
    """Warmup -> hold -> cosine (FAMScheduler's shape), as fractions of the step budget."""

    warmup_fraction: float = 0.1
    decay_start_fraction: float = 0.3
    warmup_start_factor: float = 0.01  # first lr = base lr x this
    final_factor: float = 0.01  # last lr = base lr x this


@dataclass(frozen=True)
class SpecAugmentSpec:
    """SpecAugment masks applied to training features (never to dev/test)."""

    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 2
    time_width_ratio: float = 0.05


@dataclass(frozen=True)
class Preset:
    """A workload: data, model, batch, budget, evaluation cadence, schedule shape and target.

    Optimizer hyperparameters are not part of it: tuned values live in data files read by
    `fambench.workloads.tuned`.
    """

    name: str
    description: str
    data: DataSpec
    model: ModelSettings
    batch_frames: int  # cap on padded feature frames per training batch
    steps: int
    eval_every: int
    log_every: int = 10
    eval_batch_frames: int = 20000
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    specaugment: SpecAugmentSpec | None = field(default_factory=SpecAugmentSpec)
    grad_clip: float = 5.0
    max_loss: float = 1000.0  # a train loss (nats per token) above this counts as divergence
    target_wer: float | None = None
    test_target_wer: float | None = None  # shown beside target_wer; the score uses dev WER
    # bf16 autocast by default where the device multiplies bf16 natively (CUDA, or a CPU with
    # AVX512_BF16 or AMX); `--precision` chooses (fambench.workloads.precision).
    amp: bool = False
    # Training and evaluation batches are padded to a multiple of this many frames (0: to their
    # longest utterance), so that a run meets a few batch shapes: the CPU's bf16 kernels are
    # prepared per shape, and a new shape every step costs more than the padding.
    length_bucket_frames: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for config.json)."""
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """What decides a run's result: every setting but the descriptive text and the target
        (it changes no trained number; see fambench.workloads.targets)."""
        data = self.to_dict()
        del data["description"], data["target_wer"], data["test_target_wer"]
        for path, neutral in _NEUTRAL_SETTINGS.items():
            *parents, key = path
            values = data
            for parent in parents:
                values = values[parent]
            if values[key] == neutral:
                del values[key]
        return data


# Neutral values: a setting at its neutral value is left out of a run's identity, so an identity
# without the setting means that value and a run directory recorded without it is found by its
# command.
_NEUTRAL_SETTINGS: dict[tuple[str, ...], Any] = {
    ("length_bucket_frames",): 0,
    ("data", "synth_text"): "words",
    ("data", "synth_words"): (4, 20),
    ("data", "synth_vocabulary"): 0,
    ("data", "synth_train_speakers"): 32,
    ("data", "synth_snr_db"): (15.0, 35.0),
    ("data", "synth_rate_wpm"): (115, 150),
}


_SMOKE = Preset(
    name="smoke",
    description="seconds: a tiny synthetic corpus and model, for tests",
    data=DataSpec(
        kind="synth",
        train_subset="train-synth",
        dev_subset="dev-synth",
        test_subset="test-synth",
        synth_hours=0.02,
        synth_dev_utterances=20,
        synth_test_utterances=20,
    ),
    model=ModelSettings(
        d_model=48,
        n_layers=2,
        n_heads=4,
        ffn_dim=96,
        conv_kernel=7,
        dropout=0.1,
        frontend_channels=16,
    ),
    batch_frames=3000,
    steps=30,
    eval_every=15,
    log_every=1,
    eval_batch_frames=20000,
    target_wer=1.0,
)

# smoke without dropout: the only randomness left is the data order and SpecAugment, drawn the
# same way on any number of data-parallel ranks, so 1 and N processes train the same numbers
# (up to float reduction order). The check of `--nproc`.
_SMOKE_NODROPOUT = dataclasses.replace(
    _SMOKE,
    name="smoke-nodropout",
    description="smoke without dropout: the same trajectory on any number of processes (--nproc)",
    model=_SMOKE.model.replace(dropout=0.0),
)

_CI = Preset(
    name="ci",
    description="the CI-sized workload: 0.6 h synthetic corpus, small model",
    data=DataSpec(
        kind="synth",
        train_subset="train-synth",
        dev_subset="dev-synth",
        test_subset="test-synth",
        synth_hours=0.6,
        synth_dev_utterances=100,
        synth_test_utterances=100,
    ),
    model=ModelSettings(
        d_model=96,
        n_layers=2,
        n_heads=4,
        ffn_dim=384,
        conv_kernel=15,
        frontend_channels=32,
        dropout=0.1,
    ),
    batch_frames=2500,
    steps=1000,
    eval_every=250,
    log_every=10,
    target_wer=0.85,
)

# Two more CPU-sized workloads on ci's corpus, each hard in another way (AlgoPerf scores an
# optimizer over several workloads). ci-subword predicts sentencepiece subwords: a larger, sparser
# output layer and fewer CTC labels per second of speech. ci-deep stacks twice ci's layers at
# two-thirds the width: a longer gradient path through more attention and convolution blocks.
_CI_SUBWORD = dataclasses.replace(
    _CI,
    name="ci-subword",
    description="ci with 128 sentencepiece subwords instead of characters",
    data=dataclasses.replace(_CI.data, tokenizer="sentencepiece", vocab_size=128),
    target_wer=0.9,
)

_CI_DEEP = dataclasses.replace(
    _CI,
    name="ci-deep",
    description="ci's corpus, a deeper and narrower Conformer (4 layers x 64)",
    model=ModelSettings(
        d_model=64,
        n_layers=4,
        n_heads=4,
        ffn_dim=256,
        conv_kernel=15,
        frontend_channels=32,
        dropout=0.1,
    ),
    target_wer=0.9,
)

_SYNTH = Preset(
    name="synth",
    description="the default: ~3 h eSpeak NG corpus, 2.2M-parameter Conformer",
    data=DataSpec(
        kind="synth",
        train_subset="train-synth",
        dev_subset="dev-synth",
        test_subset="test-synth",
        synth_hours=3.0,
        synth_dev_utterances=300,
        synth_test_utterances=300,
    ),
    model=ModelSettings(
        d_model=144,
        n_layers=4,
        n_heads=4,
        ffn_dim=576,
        conv_kernel=15,
        frontend_channels=64,
        dropout=0.0,
    ),
    batch_frames=3000,
    steps=2000,
    eval_every=250,
    schedule=ScheduleSpec(warmup_fraction=0.1, decay_start_fraction=0.2),
    # The step budget ends while the model still underfits, where regularisation only slows
    # learning down: no SpecAugment, no dropout.
    specaugment=None,
    log_every=10,
    target_wer=0.6,
)

# The study's workloads: each trains at one thread to a model that recognises its speech (dev
# CER <= 0.10 and WER <= 0.30 for the best tuned baseline; times per run in docs/workloads.md),
# and each is hard in another way. All train in bf16 where the CPU has it, on batches padded to
# 64-frame buckets (measured faster: `make bench-train`).
_STUDY_MODEL = ModelSettings(
    d_model=144,
    n_layers=4,
    n_heads=4,
    ffn_dim=576,
    conv_kernel=15,
    frontend_channels=64,
    dropout=0.0,
)

_DIGITS = Preset(
    name="digits",
    description=(
        "spoken digit strings (3-12 digits, 11 words) from 140 speakers at 90-190 words per "
        "minute in noise of -5 to 20 dB SNR, as in Aurora-2: speaker and noise variety"
    ),
    data=DataSpec(
        kind="synth",
        train_subset="train-synth",
        dev_subset="dev-synth",
        test_subset="test-synth",
        synth_hours=3.0,
        synth_dev_utterances=300,
        synth_test_utterances=300,
        synth_text="digits",
        synth_words=(3, 12),
        synth_train_speakers=140,
        synth_snr_db=(-5.0, 20.0),
        synth_rate_wpm=(90, 190),
    ),
    model=ModelSettings(
        d_model=96,
        n_layers=3,
        n_heads=4,
        ffn_dim=384,
        conv_kernel=15,
        frontend_channels=32,
        dropout=0.0,
    ),
    batch_frames=3000,
    steps=2500,
    eval_every=250,
    schedule=ScheduleSpec(warmup_fraction=0.05, decay_start_fraction=0.2),
    specaugment=SpecAugmentSpec(freq_masks=2, freq_width=10, time_masks=2, time_width_ratio=0.05),
    amp=True,
    length_bucket_frames=64,
    target_wer=0.3,
)

# The same corpus size, batching, schedule, augmentation and arithmetic as digits.
_COMMANDS_DEEP = dataclasses.replace(
    _DIGITS,
    name="commands-deep",
    description=(
        "a command grammar (185 words, 1-3 commands per utterance; 100 speakers, 0-25 dB SNR) "
        "on a deep, narrow Conformer (8 layers x 96): a long gradient path"
    ),
    data=dataclasses.replace(
        _DIGITS.data,
        synth_text="commands",
        synth_words=(4, 20),
        synth_train_speakers=100,
        synth_snr_db=(0.0, 25.0),
        synth_rate_wpm=(100, 180),
    ),
    model=_DIGITS.model.replace(n_layers=8, frontend_channels=48),
    steps=3000,
    eval_every=500,
)

_COMMANDS_SMALL = dataclasses.replace(
    _COMMANDS_DEEP,
    name="commands-small",
    description=(
        "the command grammar from a quarter of the data (0.75 h, still 100 speakers) on the "
        "4 x 144 Conformer with SpecAugment: generalising from little data"
    ),
    data=dataclasses.replace(_COMMANDS_DEEP.data, synth_hours=0.75),
    model=_STUDY_MODEL,
)

_MINI_LIBRISPEECH = Preset(
    name="mini-librispeech",
    description="Mini LibriSpeech: train-clean-5 -> dev-clean-2 under --data (GPU advised)",
    data=DataSpec(kind="librispeech", train_subset="train-clean-5", dev_subset="dev-clean-2"),
    model=ModelSettings(
        d_model=144, n_layers=4, n_heads=4, ffn_dim=576, conv_kernel=15, frontend_channels=64
    ),
    batch_frames=12000,
    steps=6000,
    eval_every=500,
    log_every=20,
    target_wer=0.6,
)

_LIBRISPEECH_100 = Preset(
    name="librispeech-100",
    description="LibriSpeech 100 h: train-clean-100 -> dev-clean, test-clean; ~10M params; GPU",
    data=DataSpec(
        kind="librispeech",
        train_subset="train-clean-100",
        dev_subset="dev-clean",
        test_subset="test-clean",
        tokenizer="sentencepiece",
        vocab_size=256,
    ),
    model=ModelSettings(
        d_model=256, n_layers=6, n_heads=4, ffn_dim=1024, conv_kernel=31, frontend_channels=128
    ),
    batch_frames=60000,
    steps=30000,
    eval_every=2000,
    log_every=50,
    eval_batch_frames=120000,
    target_wer=0.2,
    amp=True,
)

# MLCommons AlgoPerf's librispeech_conformer workload (algoperf/workloads/librispeech_conformer):
# LibriSpeech 960 h; validation dev-clean + dev-other, test test-clean; a 512-wide, 4-layer,
# 8-head Conformer with 4x feed-forward expansion and depthwise kernel 5; 1024 sentencepiece
# subwords; SpecAugment 2 x 27 frequency bins and 10 time masks of at most 5%; 256 utterances
# per step, a step hint of 80,000; targets 0.085884 (validation WER) and 0.052981 (test WER).
# Not the same: torchaudio's Conformer blocks (AlgoPerf's own blocks differ in details such as
# its query scaler and post-layer norm), fambench's log-mel front end and CMVN, batches cut by
# frames (~256 utterances of LibriSpeech's mean 12.3 s) and evaluation every N steps rather than
# every 24 minutes. A GPU preset: on 8 ranks with `--nproc 8` (DDP), not on a CPU.
_ALGOPERF_CONFORMER = Preset(
    name="algoperf-conformer",
    description=(
        "AlgoPerf librispeech_conformer's shape and targets (LibriSpeech 960 h, 512 x 4 layers, "
        "8 heads, 1024 subwords); its model blocks, front end and batching are fambench's; GPUs"
    ),
    data=DataSpec(
        kind="librispeech",
        train_subset="train-clean-100+train-clean-360+train-other-500",
        dev_subset="dev-clean+dev-other",
        test_subset="test-clean",
        tokenizer="sentencepiece",
        vocab_size=1024,
    ),
    model=ModelSettings(
        d_model=512,
        n_layers=4,
        n_heads=8,
        ffn_dim=2048,
        conv_kernel=5,
        frontend_channels=512,
        dropout=0.1,
    ),
    batch_frames=315_000,
    steps=80_000,
    eval_every=4000,
    log_every=100,
    eval_batch_frames=400_000,
    specaugment=SpecAugmentSpec(freq_masks=2, freq_width=27, time_masks=10, time_width_ratio=0.05),
    target_wer=0.085884,
    test_target_wer=0.052981,
    amp=True,
)

_PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _SYNTH,
        _SMOKE,
        _SMOKE_NODROPOUT,
        _CI,
        _CI_SUBWORD,
        _CI_DEEP,
        _DIGITS,
        _COMMANDS_DEEP,
        _COMMANDS_SMALL,
        _MINI_LIBRISPEECH,
        _LIBRISPEECH_100,
        _ALGOPERF_CONFORMER,
    )
}

DEFAULT_PRESET = "synth"


def list_presets() -> list[Preset]:
    """All presets, the default first."""
    return list(_PRESETS.values())


def get_preset(name: str) -> Preset:
    """The preset called name; ConfigError listing the valid names otherwise."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r}; choose one of: {', '.join(_PRESETS)}"
        ) from None
