"""Options several commands share, and the checks of their values."""

from __future__ import annotations

from typing import Annotated

import typer

from fambench.errors import ConfigError

DEFAULT_REFERENCE = "fam"
REFERENCE_HELP = "Optimizer every other one is compared with (ΔWER = reference − other)."
_CI_METHOD_HELP = (
    "How 95% intervals are computed: t (Student t; paired t or Welch for differences) or "
    "bootstrap (percentile bootstrap, sound from about 10 seeds)."
)
CiMethodOption = Annotated[str, typer.Option("--ci-method", help=_CI_METHOD_HELP)]
ContendedOption = Annotated[
    bool,
    typer.Option(
        "--include-contended",
        help="Count the times of runs that shared their cores with other processes (default: "
        "left out of time statistics; their WER always counts).",
    ),
]
BaselineOption = Annotated[
    str,
    typer.Option(
        help="Configuration speedups are measured against: 'best' (the best tuned baseline per "
        "workload: lowest median final dev WER of the optimizers that are not the reference or "
        "an ablation of it) or a name such as adamw."
    ),
]


PrecisionOption = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="fp32, or bf16 autocast (native on CUDA and on a CPU with AVX512_BF16 or AMX; on "
        "another CPU its products run as fp32 arithmetic on bf16 values and the run's time is "
        "left out of comparisons). Default: the preset's, where the device has native bf16. "
        "Part of the run id: a study that may span machines pins it.",
    ),
]


def check_budget(steps: int | None, time_budget: float | None) -> None:
    """A run's budget is steps or training seconds: ConfigError when both are given."""
    if steps is not None and time_budget is not None:
        raise ConfigError("give either --steps or --time-budget, not both")


def check_target(target_wer: float | None) -> None:
    """ConfigError unless --target-wer is absent or positive."""
    if target_wer is not None and not target_wer > 0:
        raise ConfigError(f"--target-wer must be > 0, got {target_wer}")
