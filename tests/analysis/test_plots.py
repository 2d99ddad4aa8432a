"""PNG plots from hand-built runs: files written, curve numbers, optimizer trace summaries."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from matplotlib.axes import Axes
from rundirs import trace_records, write_run

from fambench.analysis import load_results
from fambench.plots import (
    _preset_target,
    band_shares,
    plot_all,
    plot_curves,
    read_trace,
    seed_curves,
)
from fambench.targets import WorkloadTarget, record_target

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def results(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(2):
        write_run(
            runs, optimizer="fam", seed=seed, trace=trace_records(),
            evals=[(50, 10.0 + seed, 0.9 - 0.1 * seed), (100, 20.0 + 2 * seed, 0.5 - 0.1 * seed)],
        )  # fmt: skip
        write_run(runs, optimizer="adamw", seed=seed, hparams_key="a")
    write_run(
        runs, optimizer="sgd", seed=0, hparams_key="s", status="diverged", evals=[(50, 9.0, 1.0)]
    )
    return load_results([runs])


def test_plot_all_writes_pngs(tmp_path, results):
    out = tmp_path / "plots"
    paths = plot_all(results, out)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "synth-train_loss_vs_step.png",
            "synth-train_loss_vs_time.png",
            "synth-dev_wer_vs_time.png",
            "synth-dev_cer_vs_time.png",
            "synth-fam-momentum.png",
            "synth-fam-bands.png",
        ]
    )
    for path in paths:
        assert path.parent == out
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) > 10_000  # a drawn figure, not an empty canvas
    assert not list(out.glob("*.tmp"))


def test_seed_curves_mean_and_band(results):
    curves = {c.optimizer: c for c in seed_curves(results, "synth", x="train_s", y="dev_wer")}
    fam = curves["fam"]
    assert fam.n_runs == 2 and fam.label == "fam (n=2)"
    # Common grid: 11 s (latest start) to 20 s (earliest end).
    assert fam.x[0] == pytest.approx(11.0) and fam.x[-1] == pytest.approx(20.0)
    # At 20 s: seed 0 is at its last evaluation (0.5); seed 1 (evals at 11 s: 0.8, 22 s: 0.4)
    # is interpolated to 0.8 - 0.4 * 9/11.
    seed1 = 0.8 - 0.4 * 9 / 11
    assert fam.mean[-1] == pytest.approx((0.5 + seed1) / 2)
    assert fam.low[-1] == pytest.approx(min(0.5, seed1))  # two seeds: the band spans both
    assert fam.high[-1] == pytest.approx(max(0.5, seed1))
    assert np.all(fam.low <= fam.mean + 1e-12) and np.all(fam.mean <= fam.high + 1e-12)
    # The diverged sgd run is the only sgd run: drawn alone and marked partial.
    assert curves["sgd"].label == "sgd (n=1) (partial)"
    assert np.isnan(curves["sgd"].low).all()


def test_runs_on_emulated_bf16_stay_off_the_time_axis_but_not_off_the_steps(tmp_path):
    for seed in range(2):
        write_run(tmp_path, optimizer="fam", seed=seed, precision="bf16")
    write_run(
        tmp_path, optimizer="fam", seed=2, precision="bf16", bf16_native=False,
        evals=[(50, 25.0, 0.9), (100, 50.0, 0.5)],
    )  # fmt: skip
    results = load_results([tmp_path])
    (by_time,) = seed_curves(results, "synth", x="train_s", y="dev_wer")
    (by_step,) = seed_curves(results, "synth", x="step", y="dev_wer")
    assert (by_time.n_runs, by_step.n_runs) == (2, 3)
    assert by_time.x[-1] == pytest.approx(20.0)  # the native seeds' end, not the emulated 50 s
    alone = tmp_path / "alone"
    write_run(alone, optimizer="fam", seed=0, precision="bf16", bf16_native=False)
    (only,) = seed_curves(load_results([alone]), "synth", x="train_s", y="dev_wer")
    assert only.n_runs == 1  # with nothing else to compare, the emulated run is drawn


def test_train_loss_curve_on_steps(results):
    curves = {c.optimizer: c for c in seed_curves(results, "synth", x="step", y="train_loss")}
    adamw = curves["adamw"]
    # Both adamw seeds log the same loss 5 / (1 + step / 20) at steps 10..100.
    assert adamw.x[0] == 10 and adamw.x[-1] == 100
    assert adamw.mean[-1] == pytest.approx(5 / 6)
    assert adamw.high[-1] - adamw.low[-1] == pytest.approx(0)


def test_band_shares_and_trace_reader(tmp_path):
    path = tmp_path / "fam_trace.jsonl"
    import json

    lines = [json.dumps(r) for r in trace_records(steps=(10, 20))]
    path.write_text("\n".join(lines) + '\n{"step": 30, "par')  # a half-written last line
    trace = read_trace(path)
    assert len(trace) == 6 and sorted(trace["step"].unique()) == [10, 20]
    steps, shares = band_shares(trace, 0)
    assert list(steps) == [10, 20]
    # param0 [4,2,1,1]/8 and param1 [3,3,1,1]/8, averaged
    assert shares[0] == pytest.approx([0.4375, 0.3125, 0.125, 0.125])
    steps, shares = band_shares(trace, 1)
    assert shares.shape == (2, 3) and shares[1] == pytest.approx([0.25, 0.25, 0.5])


def test_runs_without_metrics_or_trace_write_nothing(tmp_path):
    write_run(tmp_path / "r", optimizer="adamw", summary=False, evals=[], train=[])
    results = load_results([tmp_path / "r"])
    assert plot_all(results, tmp_path / "plots") == []


def test_wer_plot_marks_the_target_compare_times_against(tmp_path, results):
    # No recorded target: the runs' own (write_run records 0.6).
    assert _preset_target(results, "synth") == pytest.approx(0.6)
    # A recorded workload target replaces it, as it does in compare's time to target.
    hparams = tmp_path / "hparams"
    record_target(dataclasses.replace(WorkloadTarget("synth", 0.45, "m"), values=(0.45,)), hparams)
    recorded = load_results([tmp_path / "runs"], hparams_dir=hparams)
    assert _preset_target(recorded, "synth") == pytest.approx(0.45)


def test_configurations_of_one_optimizer_share_its_colour_not_its_line_style(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, optimizer="fam", hparams_key="lr=0.5,sampling=random",
              overrides={"sampling": "random"})  # fmt: skip
    write_run(runs, optimizer="fam", hparams_key="lr=0.5")
    write_run(runs, optimizer="sgd", hparams_key="lr=0.1")
    write_run(runs, optimizer="sgd", hparams_key="lr=0.2", steps_budget=200)
    results = load_results([runs])
    captured = []
    original = Axes.plot

    def record(self, *args, **kwargs):
        captured.append((kwargs.get("label"), kwargs.get("color"), kwargs.get("linestyle")))
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Axes, "plot", record)
        plot_curves(results, "synth", x="step", y="train_loss", path=tmp_path / "p.png")
    # Short labels: compare's configuration label where it tells them apart, else the
    # hyperparameters (and the budget, as these differ); the plain configuration drawn solid.
    assert [c[0] for c in captured] == [
        "fam (n=1)",
        "fam[sampling=random] (n=1)",
        "sgd [lr=0.1, 100 steps] (n=1)",
        "sgd [lr=0.2, 200 steps] (n=1)",
    ]
    (_, fam_colour, fam_style), (_, variant_colour, variant_style) = captured[:2]
    assert fam_colour == variant_colour and (fam_style, variant_style) == ("-", "--")
    assert captured[2][1] != fam_colour
