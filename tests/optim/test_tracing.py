"""The trace as a declared capability: TraceWriter, FAM's trace file, fam-fixed, resume rule."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from torch import nn

from fambench.optim import (
    FAMOptimizer,
    SimpleFAM,
    TraceWriter,
    build_optimizer,
)
from fambench.optim.fam.trace import TRACE_COLUMNS, TRACE_EVERY, TRACE_FILE, read_trace
from fambench.optim.tracing import truncate_trace

# Small thresholds: analysis (hence a trace row every TRACE_EVERY steps) starts after step 2.
FAM_OVERRIDES = {"fam_start_step": 2, "min_size": 64, "lr": 0.01}
RECORD_KEYS = {"step", "param", "group", "handler", "band_ema", "momentum"}


def _model() -> nn.Module:
    torch.manual_seed(0)
    # conv.weight (4 * 16 * 5 = 320) and linear.weight (16 * 8 = 128) are analysed.
    return nn.Sequential(nn.Conv1d(4, 16, 5), nn.ReLU(), nn.Linear(16, 8))


def _analysed(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.numel() > FAM_OVERRIDES["min_size"]]


def _steps(optimizer, model: nn.Module, first: int, last: int) -> None:
    """Optimizer steps first..last, each with gradients that depend only on the step number."""
    for step in range(first, last + 1):
        generator = torch.Generator().manual_seed(step)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()


def _read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_fam_declares_the_capability_and_torch_optimizers_do_not():
    model = _model()
    assert isinstance(build_optimizer("fam", model), TraceWriter)
    assert isinstance(FAMOptimizer(model.parameters()), TraceWriter)
    assert not isinstance(torch.optim.AdamW(model.parameters()), TraceWriter)
    assert not isinstance(build_optimizer("sgd", model), TraceWriter)
    assert not isinstance(SimpleFAM(model.parameters()), TraceWriter)


def test_start_trace_then_flush_writes_the_records(tmp_path):
    model = _model()
    optimizer = build_optimizer("fam", model, **FAM_OVERRIDES)
    directory = tmp_path / "run"
    assert optimizer.start_trace(directory) == TRACE_FILE == "fam_trace.jsonl"
    assert directory.is_dir()
    path = directory / TRACE_FILE
    _steps(optimizer, model, 1, 25)
    assert not path.exists()  # records wait for flush_trace (or the interval, 1000 steps)
    optimizer.flush_trace()
    records = _read(path)
    names = _analysed(model)
    assert TRACE_EVERY == 10
    assert [r["step"] for r in records] == [10] * len(names) + [20] * len(names)
    assert sorted({r["param"] for r in records}) == sorted(names)
    for record in records:
        assert set(record) == RECORD_KEYS
        group = optimizer.param_groups[record["group"]]
        assert record["handler"] == group["handler"]
        assert len(record["band_ema"]) == group["n_bands"]
        assert 0.0 <= record["momentum"] < 1.0
    written = path.read_text()
    optimizer.flush_trace()
    assert path.read_text() == written  # nothing pending, nothing written twice
    _steps(optimizer, model, 26, 30)
    optimizer.close()  # close() flushes too
    assert path.read_text().startswith(written)
    assert [r["step"] for r in _read(path)[len(records) :]] == [30] * len(names)


def test_the_reader_reads_back_what_the_writer_wrote(tmp_path):
    model = _model()
    with build_optimizer("fam", model, **FAM_OVERRIDES) as optimizer:
        optimizer.start_trace(tmp_path)
        _steps(optimizer, model, 1, 20)
    path = tmp_path / TRACE_FILE
    with path.open("a") as handle:
        handle.write('{"step": 30, "par')  # a line cut short is skipped
    trace = read_trace(path)
    written = _read_complete(path)
    assert list(trace.columns) == TRACE_COLUMNS and len(trace) == len(written) > 0
    assert trace[TRACE_COLUMNS].to_dict("records") == [
        {key: record[key] for key in TRACE_COLUMNS} for record in written
    ]


def test_flush_without_a_started_trace_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = _model()
    optimizer = build_optimizer("fam", model, **FAM_OVERRIDES)
    _steps(optimizer, model, 1, 20)
    optimizer.flush_trace()
    optimizer.close()
    assert list(tmp_path.iterdir()) == []


def test_fam_fixed_has_nothing_to_trace_and_turns_nothing_on(tmp_path):
    model = _model()
    fixed = build_optimizer("fam-fixed", model, **FAM_OVERRIDES)
    assert isinstance(fixed, TraceWriter)
    assert fixed.start_trace(tmp_path / "run") is None
    assert not (tmp_path / "run").exists()
    # A trace already there (say, of another optimizer) is left alone.
    other = tmp_path / "other"
    other.mkdir()
    (other / TRACE_FILE).write_text('{"step": 50}\n')
    assert fixed.start_trace(other, resume_step=10) is None
    assert (other / TRACE_FILE).read_text() == '{"step": 50}\n'

    _steps(fixed, model, 1, 20)
    fixed.flush_trace()
    fixed.close()
    assert not (tmp_path / "run").exists()
    assert (other / TRACE_FILE).read_text() == '{"step": 50}\n'
    # The frequency analysis the ablation leaves out never ran.
    assert not any("band_ema" in state for state in fixed.state.values())
    assert fixed.effective_momenta() == {}


def test_resume_drops_the_records_after_the_checkpoint(tmp_path):
    # An uninterrupted run of 40 steps ...
    model = _model()
    whole = build_optimizer("fam", model, **FAM_OVERRIDES)
    whole.start_trace(tmp_path / "whole")
    _steps(whole, model, 1, 40)
    whole.flush_trace()
    expected = (tmp_path / "whole" / TRACE_FILE).read_text()

    # ... and one checkpointed at step 20, interrupted after step 35 in the middle of a write,
    model = _model()
    interrupted = build_optimizer("fam", model, **FAM_OVERRIDES)
    directory = tmp_path / "resumed"
    interrupted.start_trace(directory)
    _steps(interrupted, model, 1, 20)
    interrupted.flush_trace()
    checkpoint = copy.deepcopy((model.state_dict(), interrupted.state_dict()))
    _steps(interrupted, model, 21, 35)
    interrupted.flush_trace()
    path = directory / TRACE_FILE
    with path.open("a") as handle:
        handle.write('{"step": 40, "param": "0.we')
    assert [r["step"] for r in _read_complete(path)][-1] == 30

    # then resumed from the checkpoint: the file is cut in place to the records up to step 20.
    inode = os.stat(path).st_ino
    model = _model()
    model.load_state_dict(checkpoint[0])
    resumed = build_optimizer("fam", model, **FAM_OVERRIDES)
    resumed.load_state_dict(checkpoint[1])
    assert resumed.start_trace(directory, resume_step=20) == TRACE_FILE
    assert os.stat(path).st_ino == inode
    kept = _read(path)
    assert kept and {r["step"] for r in kept} == {10, 20}
    assert expected.startswith(path.read_text())
    _steps(resumed, model, 21, 40)
    resumed.flush_trace()
    assert path.read_text() == expected


def _read_complete(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True)[:-1]]


def _record(step: int) -> str:
    return json.dumps({"step": step, "param": "w", "momentum": 0.9}) + "\n"


@pytest.mark.parametrize(
    ("lines", "resume_step", "kept"),
    [
        ([_record(10), _record(20), _record(30)], 20, 2),
        ([_record(10), _record(20), '{"step": 30, "par'], 20, 2),  # cut short
        ([_record(10), _record(20), _record(30).rstrip("\n")], 30, 2),  # no final newline
        ([_record(10), "not json\n", _record(20)], 20, 1),
        ([_record(10), '{"param": "w"}\n', _record(20)], 20, 1),  # no step
        ([_record(10), "[10]\n", _record(20)], 20, 1),
        ([_record(10), _record(20)], 20, 2),  # nothing to drop
        ([_record(10), _record(20)], 0, 0),  # a fresh run starts from an empty trace
        ([], 5, 0),
    ],
)
def test_truncate_trace_cuts_in_place_at_the_first_line_to_drop(tmp_path, lines, resume_step, kept):
    path = tmp_path / TRACE_FILE
    path.write_text("".join(lines))
    inode = os.stat(path).st_ino
    truncate_trace(path, resume_step)
    assert path.read_text() == "".join(lines[:kept])
    assert os.stat(path).st_ino == inode  # no temporary file renamed over it


def test_truncate_trace_leaves_a_missing_file_missing_and_refuses_bad_steps(tmp_path):
    truncate_trace(tmp_path / TRACE_FILE, 10)
    assert not (tmp_path / TRACE_FILE).exists()
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="resume_step must be a non-negative integer"):
            truncate_trace(tmp_path / TRACE_FILE, bad)
