"""Training one run: a plan, a loop that reads top to bottom, and the small parts it calls.

- `plan`: request → validated plan; the run id from what decides the result;
- `setup`: model, optimizer, schedule and data order built from the plan;
- `state`: what a step changes and a checkpoint holds; `checkpoint`: save and load it;
- `step`: one optimisation step; `loop`: budget → evaluate + checkpoint → step → log;
- `logger`: metric rows, TensorBoard, progress events; `record`: config.json and the summary;
- `runner`: skip / resume / force, the directory lock, and the outcome.
"""

from fambench.training.logger import ProgressCallback, ProgressEvent
from fambench.training.plan import RunPlan, RunRequest, default_threads, plan_run
from fambench.training.runner import RunOutcome, run_training

__all__ = [
    "ProgressCallback",
    "ProgressEvent",
    "RunOutcome",
    "RunPlan",
    "RunRequest",
    "default_threads",
    "plan_run",
    "run_training",
]
