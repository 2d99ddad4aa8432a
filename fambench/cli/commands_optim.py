"""`fambench optimizers`: list the optimizer registry (built-ins and installed plug-ins)."""

from __future__ import annotations

from rich.table import Table

from fambench.cli import HparamsDir, app, console
from fambench.hparams_dirs import DEFAULT_USER_DIR
from fambench.optim import OptimizerSpec, list_optimizers, optimizer_source
from fambench.workloads import DEFAULT_PRESET, load_tuned


def _format_value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    return str(value)


@app.command("optimizers")
def optimizers_command(hparams_dir: HparamsDir = DEFAULT_USER_DIR) -> None:
    """List the optimizers you can pass to --optimizer, with their default hyperparameters."""
    table = Table(title="Optimizers", show_lines=True)
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("description (code it runs)")
    table.add_column("default hyperparameters (override with --opt key=value)")
    table.add_column(f"tuned on {DEFAULT_PRESET} (replaces the defaults there)")
    tuned = load_tuned(DEFAULT_PRESET, user_dir=hparams_dir)
    for spec in list_optimizers():
        defaults = ", ".join(
            f"{key}={_format_value(value)}" for key, value in spec.defaults.items()
        )
        mine = tuned.for_optimizer(spec.name)
        tuned_text = ", ".join(f"{k}={_format_value(v)}" for k, v in mine.items()) or "-"
        if spec.name in tuned.sources:
            tuned_text += f"\n(from {tuned.source_of(spec.name)})"
        description = spec.description
        if optimizer_source(spec):
            description += f"\ncode: {optimizer_source(spec)}"
        needs = _capabilities_text(spec)
        if needs:
            description += f"\n({needs})"
        table.add_row(spec.name, description, defaults or "-", tuned_text)
    console.print(table)
    console.print(
        "Also accepted: a dotted path package.module:Name (e.g. torch.optim:RAdam) or a plug-in "
        "registered under the entry-point group fambench.optimizers.",
        highlight=False,
    )
    if tuned.source:
        console.print(
            f"Tuned values: {tuned.source} (every preset's: `fambench presets`).",
            highlight=False,
        )


def _capabilities_text(spec: OptimizerSpec) -> str:
    """What the optimizer asks of the trainer beyond the defaults, in words."""
    parts = []
    if spec.capabilities.schedule != "warmup-hold-cosine":
        parts.append(f"schedule: {spec.capabilities.schedule}")
    if spec.capabilities.norm_batches:
        parts.append(
            f"batch-norm statistics re-estimated on {spec.capabilities.norm_batches} "
            "training batches before each evaluation"
        )
    return "; ".join(parts)
