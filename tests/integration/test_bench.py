"""The benchmark grid with a runner that writes hand-built runs (the training is not run)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from rundirs import write_run

from fambench.bench import GridCell, parse_optimizers, run_grid
from fambench.errors import ConfigError

WER = {"fam": 0.30, "fam-fixed": 0.35, "adamw": 0.40, "sgd": 0.50}


@dataclass(frozen=True)
class Outcome:
    run_dir: Path
    status: str
    skipped: bool = False
    resumed: bool = False


class FakeRunner:
    """Writes a run directory with known numbers per cell; the second call of a cell skips."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls: list[GridCell] = []
        self.interrupt_at = interrupt_at

    def __call__(self, cell: GridCell) -> Outcome:
        self.calls.append(cell)
        name = f"{cell.preset}-{cell.optimizer}-s{cell.seed}"
        if cell.overrides:
            name = f"{cell.preset}-{cell.optimizer}-variant-s{cell.seed}"
        existing = list(cell.out_dir.glob(f"{name}-*"))
        if existing:
            return Outcome(existing[0], "completed", skipped=True)
        status = "interrupted" if len(self.calls) == self.interrupt_at else "completed"
        wer = WER[cell.optimizer] + 0.01 * cell.seed
        run_dir = write_run(
            cell.out_dir, preset=cell.preset, optimizer=cell.optimizer, seed=cell.seed,
            ablation_of="fam" if cell.optimizer == "fam-fixed" else None, hparams_key=cell.label,
            status=status, evals=[(50, 10.0, 0.9), (100, 20.0, wer)],
            overrides=dict(cell.overrides), run_id=f"{name}-0" if cell.overrides else None,
        )  # fmt: skip
        return Outcome(run_dir, status)


def test_grid_runs_every_cell_then_writes_the_comparison(tmp_path):
    runner = FakeRunner()
    seen = []
    result = run_grid(
        "synth", ["fam", "fam-fixed", "adamw", "sgd"], range(2), tmp_path / "out", tmp_path / "d",
        steps=100, runner=runner, on_run=lambda i, n, label: seen.append((i, n, label)), n_boot=500,
        reference="fam",
    )  # fmt: skip
    assert [(c.optimizer, c.seed) for c in runner.calls] == [
        (o, s) for s in (0, 1) for o in ("fam", "fam-fixed", "adamw", "sgd")
    ]
    assert runner.calls[0].steps == 100 and runner.calls[0].cache_dir == tmp_path / "d"
    assert seen[0] == (1, 8, "fam seed 0") and seen[-1] == (8, 8, "sgd seed 1")
    assert not result.interrupted and len(result.runs) == 8
    out = tmp_path / "out"
    for name in ("comparison.csv", "comparison.md", "pairwise.csv", "report.md"):
        assert (out / name).is_file()
    assert len(list(out.glob("*.png"))) == 4  # no trace files here: the four learning curves
    comparison = pd.read_csv(out / "comparison.csv")
    assert comparison["optimizer"].tolist() == ["adamw", "fam", "fam-fixed", "sgd"]
    assert comparison["final_dev_wer_mean"].tolist() == pytest.approx([0.405, 0.305, 0.355, 0.505])
    pairs = pd.read_csv(out / "pairwise.csv")
    assert pairs["other"].tolist() == ["adamw", "adamw", "fam-fixed", "fam-fixed", "sgd", "sgd"]
    dev = pairs.query("metric == 'final_dev_wer'")
    assert dev["delta"].tolist() == pytest.approx([-0.10, -0.05, -0.20])
    assert dev["kind"].tolist() == ["baseline", "ablation", "baseline"]  # fam-fixed's ablation_of
    # Student t by default; two seeds are too few for a verdict (and these differences are
    # the same on both seeds: no spread, so no power estimate).
    assert dev["method"].tolist() == ["t"] * 3 and dev["n"].tolist() == [2] * 3
    assert dev["verdict"].tolist() == ["inconclusive (n = 2)"] * 3
    # `fambench bench --ci-method bootstrap`: the grid's report uses the bootstrap.
    boot = run_grid(
        "synth", ["fam", "fam-fixed", "adamw", "sgd"], range(2), out, tmp_path / "d",
        runner=runner, n_boot=500, reference="fam", method="bootstrap",
    )  # fmt: skip
    assert all(r.skipped for r in boot.runs)
    assert set(boot.files.pairs["method"]) == {"bootstrap"}
    assert set(pd.read_csv(out / "pairwise.csv")["method"]) == {"bootstrap"}
    # A second grid: every run is reported as finished, not rerun.
    again = run_grid(
        "synth",
        ["fam", "sgd"],
        [0],
        out,
        tmp_path / "d",
        runner=runner,
        n_boot=500,
        reference="fam",
    )
    assert all(r.skipped for r in again.runs)
    assert pd.read_csv(out / "comparison.csv")["optimizer"].tolist() == ["fam", "sgd"]


def test_grid_stops_at_an_interruption_and_reports_what_exists(tmp_path):
    runner = FakeRunner(interrupt_at=2)
    result = run_grid(
        "synth", ["fam", "adamw"], range(2), tmp_path, tmp_path / "d", runner=runner, n_boot=500,
        reference="fam",
    )  # fmt: skip
    assert result.interrupted and len(runner.calls) == 2
    assert [r.status for r in result.runs] == ["completed", "interrupted"]
    comparison = pd.read_csv(tmp_path / "comparison.csv")
    by_optimizer = comparison.set_index("optimizer")
    assert [(c.optimizer, c.seed) for c in runner.calls] == [("fam", 0), ("adamw", 0)]
    assert by_optimizer.loc["fam", "n_completed"] == 1
    assert by_optimizer.loc["adamw", "n_completed"] == 0
    assert by_optimizer.loc["adamw", "n_interrupted"] == 1


def test_parse_optimizers():
    assert parse_optimizers(" fam, adamw ,,sgd") == ["fam", "adamw", "sgd"]
    with pytest.raises(ConfigError, match="empty"):
        parse_optimizers(" , ")
    with pytest.raises(ConfigError, match="fam more than once"):
        parse_optimizers("fam,adamw,fam")
    with pytest.raises(ConfigError, match="no seeds"):
        run_grid("synth", ["fam"], [], "x", "y", runner=FakeRunner(), reference="fam")


def test_parse_variant():
    from fambench.bench import parse_variant

    assert parse_variant("fam:sampling=random") == ("fam", (("sampling", "random"),))
    assert parse_variant("adamw: lr=0.01, weight_decay=0") == (
        "adamw",
        (("lr", 0.01), ("weight_decay", 0)),
    )
    for bad in ("fam", "fam:", ":lr=1", "fam:lr"):
        with pytest.raises(ConfigError, match="--variant"):
            parse_variant(bad)


def test_grid_runs_variants_beside_the_optimizers(tmp_path):
    runner = FakeRunner()
    run_grid(
        "synth", ["fam", "sgd"], range(1), tmp_path / "out", tmp_path / "d", runner=runner,
        reference="fam", variants=[("fam", (("sampling", "random"),))],
    )  # fmt: skip
    assert [c.label for c in runner.calls] == ["fam", "sgd", "fam[sampling=random]"]
    assert runner.calls[2].request().overrides == {"sampling": "random"}
    pairs = pd.read_csv(tmp_path / "out" / "pairwise.csv").query("metric == 'final_dev_wer'")
    assert pairs["other"].tolist() == ["fam[sampling=random]", "sgd"]
    assert pairs["kind"].tolist() == ["variant", "baseline"]


def test_a_grid_cell_is_labelled_as_compare_labels_its_runs(tmp_path):
    from fambench.analysis.labels import config_label
    from fambench.bench import GridCell

    overrides = (("sampling", "random"), ("beta", 0.950))
    cell = GridCell("fam", 0, "synth", tmp_path, tmp_path, overrides=overrides)
    assert cell.label == "fam[beta=0.95,sampling=random]"
    assert cell.label == config_label("fam", json.dumps(dict(overrides)))  # as config.json has it


def test_a_grid_pins_one_precision_in_every_cell_and_its_run_id(tmp_path, synth_corpus):
    from fambench.bench import grid_cells
    from fambench.training import plan_run

    cells = grid_cells(
        "smoke", ["adamw", "sgd"], range(2), tmp_path, tmp_path, data_root=synth_corpus,
        precision="fp32", variants=[("fam", (("sampling", "random"),))],
    )  # fmt: skip
    assert len(cells) == 6 and {c.request().precision for c in cells} == {"fp32"}
    assert {plan_run(c.request()).precision for c in cells} == {"fp32"}
    unpinned = grid_cells("smoke", ["adamw"], [0], tmp_path, tmp_path, data_root=synth_corpus)
    assert unpinned[0].request().precision is None  # the preset's, where the device has it
