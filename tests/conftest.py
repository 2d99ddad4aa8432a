"""Shared fixtures: a tiny real corpus made once per test session by our eSpeak NG generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from fambench.data.synth import SynthSettings, ensure_corpus

SYNTH_TEST_SETTINGS = SynthSettings(hours=0.02, dev_utterances=20, test_utterances=20, seed=0)
"""~70 s of train audio, 20 dev and 20 test utterances: generated in a few seconds."""


@pytest.fixture(scope="session")
def synth_settings() -> SynthSettings:
    """The settings `synth_corpus` was generated with."""
    return SYNTH_TEST_SETTINGS


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LibriSpeech root (``.../LibriSpeech``) of the session's tiny synthetic corpus.

    Subsets: train-synth, dev-synth, test-synth. Treat it as read-only: copy it before
    changing anything (the manifest cache files it gains when read are fine).
    """
    out = tmp_path_factory.mktemp("synth-corpus")
    return ensure_corpus(out, SYNTH_TEST_SETTINGS)
