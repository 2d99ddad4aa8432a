"""Workloads: what a run trains on and how it is scored; everything but the optimizer.

- `presets`: named settings (data, model, batch, budget, evaluation cadence, target);
- `data`: a preset's corpus, features and batches, ready for training;
- `recognition`: the model, CTC loss, greedy decoding and WER/CER evaluation;
- `tuned`: the hyperparameters tuned per preset (data files beside the package).

The target dev WER per preset, set from the best tuned baseline's seeds, is read by
`fambench.targets` (torch-free, so that `compare` can read it too).
"""

from fambench.workloads.data import (
    Split,
    WorkloadData,
    load_workload_data,
    resolve_data_root,
    synth_corpus_dir,
    synth_settings,
)
from fambench.workloads.presets import (
    DEFAULT_PRESET,
    DataSpec,
    Preset,
    ScheduleSpec,
    SpecAugmentSpec,
    get_preset,
    list_presets,
)
from fambench.workloads.tuned import TunedHyperparameters, load_tuned

__all__ = [
    "DEFAULT_PRESET",
    "DataSpec",
    "Preset",
    "ScheduleSpec",
    "SpecAugmentSpec",
    "Split",
    "TunedHyperparameters",
    "WorkloadData",
    "get_preset",
    "list_presets",
    "load_tuned",
    "load_workload_data",
    "resolve_data_root",
    "synth_corpus_dir",
    "synth_settings",
]
