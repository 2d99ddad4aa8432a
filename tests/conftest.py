"""Shared fixtures: a tiny real corpus made once per test session by our eSpeak NG generator."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import torch

from fambench.data.synth import SynthSettings, ensure_corpus
from fambench.training import RunRequest

SYNTH_TEST_SETTINGS = SynthSettings(hours=0.02, dev_utterances=20, test_utterances=20, seed=0)
"""~70 s of train audio, 20 dev and 20 test utterances: generated in a few seconds."""


@pytest.fixture(scope="session", autouse=True)
def _isolated_machine_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests see no shipped workload targets (presets keep their hand-set ones; the committed
    files are checked by their own tests), write tuned values and targets only where a test
    says, and take core slots in a directory of their own."""
    import fambench.targets
    from fambench.core_slots import SLOTS_ENV
    from fambench.hparams_dirs import HPARAMS_DIR_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fambench.targets, "SHIPPED_TARGETS_DIR", None)
        patch.setenv(HPARAMS_DIR_ENV, str(tmp_path_factory.mktemp("hparams")))
        patch.setenv(SLOTS_ENV, str(tmp_path_factory.mktemp("core-slots")))
        yield


@pytest.fixture(scope="session", autouse=True)
def _wide_console() -> Iterator[None]:
    """Rich fixes the console's width when it is made (80 columns without a terminal, as in
    CI), and tables wrap cells across lines at that width: tests read whole rows at 200."""
    from fambench import cli

    with pytest.MonkeyPatch.context() as patch:
        for console in (cli.console, cli.err_console):
            patch.setattr(console, "_width", 200)
        yield


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


@pytest.fixture(scope="session")
def postgres_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """SQLAlchemy URL (``postgresql+psycopg2://...``) of a database on a real PostgreSQL server.

    The server is started for the session in a temporary directory (tests/postgres.py) and
    stopped afterwards. Without the server binaries (Debian's ``postgresql`` package), or when the
    server fails to start, the tests that use it skip with the reason printed; with the
    environment variable CI set (``.ci/run`` sets it) they fail instead.
    """
    from postgres import PostgresStartError, PostgresUnavailable, temporary_postgres

    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(temporary_postgres(tmp_path_factory.mktemp("postgres")))
        except (PostgresUnavailable, PostgresStartError) as exc:
            _skip_or_fail(request, f"PostgreSQL tests: {exc}")
        yield url


@pytest.fixture(scope="session")
def slurm_conf(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The slurm.conf of a real single-node Slurm cluster on this machine, started for the
    session (tests/slurm_cluster.py) and stopped afterwards; skipped (failed with CI set) like
    postgres_url when Debian's ``slurm-wlm`` and ``munge`` are not installed."""
    from slurm_cluster import SlurmStartError, SlurmUnavailable, temporary_slurm

    with contextlib.ExitStack() as stack:
        try:
            conf = stack.enter_context(temporary_slurm(tmp_path_factory.mktemp("slurm")))
        except (SlurmUnavailable, SlurmStartError) as exc:
            _skip_or_fail(request, f"Slurm tests: {exc}")
        yield conf


def _skip_or_fail(request: pytest.FixtureRequest, reason: str) -> NoReturn:
    """Skip with the reason printed, or fail when the environment variable CI is set (.ci/run
    sets it): CI installs what these tests need."""
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}\n(CI is set: failing instead of skipping)", pytrace=False)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\nSKIPPING {reason}", file=sys.stderr, flush=True)
    pytest.skip(reason)


#: Fixtures that generate a corpus or train: a test asking for one is slow.
SLOW_FIXTURES = frozenset({"synth_corpus", "smoke", "postgres_url", "slurm_conf"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Markers that follow from what a test uses: `slow` for a corpus or training (and for
    anything that starts processes), `postgres` for the server, `slurm` for the cluster; `gpu` tests skip without CUDA."""
    no_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "postgres_url" in fixtures:
            item.add_marker(pytest.mark.postgres)
        if "slurm_conf" in fixtures:
            item.add_marker(pytest.mark.slurm)
        if fixtures & SLOW_FIXTURES or item.get_closest_marker("subprocess"):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("gpu") and not torch.cuda.is_available():
            item.add_marker(no_gpu)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Test workers share the machine's cores: one torch thread each (no OpenMP oversubscription).
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory) -> Path:
    """Feature cache shared by the smoke runs of this session."""
    return tmp_path_factory.mktemp("smoke-cache")


@pytest.fixture
def smoke(synth_corpus, smoke_cache, tmp_path):
    """A RunRequest factory for the smoke preset on the session's tiny corpus."""

    def make(optimizer: str = "sgd", **changes) -> RunRequest:
        fields = dict(
            optimizer=optimizer,
            preset="smoke",
            data_root=synth_corpus,
            cache_dir=smoke_cache,
            out_dir=tmp_path / "results",
            threads=1,
        )
        fields.update(changes)
        return RunRequest(**fields)

    return make


@pytest.fixture
def hparams_dir(tmp_path) -> Path:
    """A user's directory of tuned values and targets, empty at first (``--hparams-dir``)."""
    return tmp_path / "hparams"
