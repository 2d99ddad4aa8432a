"""The training loop, top to bottom: budget → evaluate + checkpoint → step → log."""

from __future__ import annotations

import contextlib
import time

from fambench.errors import FambenchError
from fambench.machine import CpuInterval, load_average, sample_cpu
from fambench.rundir import train_row
from fambench.training.batches import batch_source
from fambench.training.checkpoint import save_checkpoint
from fambench.training.distributed import any_rank, gather, state_digest
from fambench.training.evaluation_weights import evaluation_weights
from fambench.training.interrupts import AgreedStop
from fambench.training.interval import Diverged
from fambench.training.state import Boundary
from fambench.training.step import RunContext, record_interval, train_step
from fambench.workloads.recognition import evaluate


class RanksDisagree(FambenchError):
    """Data-parallel ranks that should hold the same model and optimizer state do not."""


def train_loop(run: RunContext) -> tuple[str, str]:
    """Train until the step or time budget is spent; returns (status, message).

    Divergence ends the run ("diverged"); Ctrl-C ends it "interrupted", with a checkpoint at
    the last step boundary so the same command resumes it.
    """
    state, trainee, plan = run.state, run.trainee, run.plan
    trainee.model.train()
    boundary = Boundary.of(trainee, state)
    start_cpu_accounting(run)
    ranks = trainee.ranks
    agree = (lambda held: any_rank(held, ranks)) if ranks.distributed else None
    run.session.batches = batch_source(run.data, trainee, plan.prefetch)
    with run.stops.agreeing(agree), contextlib.closing(run.session.batches):
        try:
            while True:
                done = budget_spent(run)
                due = done or state.step % plan.preset.eval_every == 0
                if state.step > 0 and state.last_eval_step != state.step and due:
                    record_interval(run)  # every step before the checkpoint, read back, checked
                    with evaluation_weights(run) as evaluated:
                        if ranks.is_main:
                            evaluate_dev(run)
                    run.session.evaluation_model = evaluated.state
                    checkpoint(run)
                if done:
                    break
                # Stop signals wait for the step's end; anything else that interrupts the step
                # saves this boundary (the forward pass has drawn dropout and SpecAugment
                # randomness and moved BatchNorm statistics by then: a resumed run must do that
                # again).
                mark = time.perf_counter()
                boundary = Boundary.of(trainee, state)
                with run.stops.step():
                    ended = train_step(run, mark)
                # Bookkeeping and the progress display count as training time too.
                tail = time.perf_counter() - ended
                state.train_s += tail
                run.session.train_s += tail
        except Diverged as exc:
            return diverged(run, exc)
        except AgreedStop:
            return stopped_together(run)
        except KeyboardInterrupt:
            return interrupted(run, boundary)
    if run.data.test is not None:
        with evaluation_weights(run):
            if trainee.ranks.is_main:
                state.test, _ = timed_evaluation(run, "test")
    account_cpu(run)
    run.logger.write_metrics(state)
    return "completed", completion_message(run)


def checkpoint(run: RunContext, evaluated: bool = True) -> None:
    """Save this step boundary (rank 0 writes; on several ranks, every rank's RNG states go
    into it, and the ranks must hold bitwise-equal models and optimizer states). A collective
    on several ranks. ``evaluated``: the dev set was just evaluated at this step. Beside the
    training state goes the latest evaluation's model state where that differs (the model to
    use, as the optimizer's authors intend)."""
    trainee, state, ranks = run.trainee, run.state, run.trainee.ranks
    if evaluated:
        state.last_eval_step = state.step  # on every rank (rank 0's evaluation set it there)
    boundary = Boundary.of(trainee, state)
    run.session.checkpoint_step = state.step
    rngs = gather(boundary.rng, ranks)  # on several ranks: waits for rank 0's evaluation
    digests = (
        gather(state_digest(trainee.model, trainee.optimizer), ranks) if ranks.world > 1 else []
    )
    account_cpu(run)
    if not ranks.is_main:
        return
    if len(set(digests)) > 1:
        raise RanksDisagree(
            f"at step {state.step} the ranks' models or optimizer states differ "
            f"(sha1 per rank: {', '.join(d[:12] for d in digests)})"
        )
    state.rank_digests = digests
    save_checkpoint(
        run.files.checkpoint,
        run.plan.run_id,
        trainee,
        state,
        boundary,
        rngs,
        run.session.evaluation_model,
    )
    run.files.discard_previous()  # what --force replaced is now gone for good
    run.logger.write_metrics(state)
    run.logger.write_summary(state, "running", "training")


def start_cpu_accounting(run: RunContext) -> None:
    """Mark the CPU clocks where this session's measured span begins (see fambench.machine)."""
    run.session.cpu_mark = sample_cpu()
    if run.state.load_start is None:
        run.state.load_start = load_average()


def account_cpu(run: RunContext) -> None:
    """Add the CPU time since the last mark (ours and others') to the run's accounting."""
    if run.session.cpu_mark is None:
        return
    now = sample_cpu()
    run.state.add_cpu(CpuInterval.between(run.session.cpu_mark, now))
    run.session.cpu_mark = now


def diverged(run: RunContext, exc: Diverged) -> tuple[str, str]:
    account_cpu(run)
    state = run.state
    state.rows.append(train_row(exc.step, state.train_s, exc.loss, exc.lr, exc.grad_norm))
    run.logger.write_metrics(state)
    return "diverged", str(exc)


def budget_spent(run: RunContext) -> bool:
    budget = run.plan.request.time_budget_s
    state = run.state
    return state.step >= run.plan.total_steps or (budget is not None and state.train_s >= budget)


def timed_evaluation(run: RunContext, split: str) -> tuple[dict[str, float], float]:
    """Evaluate on the dev or test split: (wer, cer, loss), seconds (counted as eval time)."""
    started = time.perf_counter()
    rates = evaluate(
        run.trainee.model,
        getattr(run.data, split),
        run.data,
        run.plan.precision,
        run.trainee.device,
    )
    seconds = time.perf_counter() - started
    run.state.eval_s += seconds
    return rates, seconds


def evaluate_dev(run: RunContext) -> None:
    rates, seconds = timed_evaluation(run, "dev")
    run.state.record_eval(rates)
    run.logger.evaluation(run.state, rates, seconds)


def stopped_together(run: RunContext) -> tuple[str, str]:
    """Every rank stopped after the same step (a stop they agreed on): save it together."""
    try:
        record_interval(run)
    except Diverged as exc:
        return diverged(run, exc)
    checkpoint(run, evaluated=False)
    return "interrupted", f"interrupted at step {run.state.step}; run the same command to resume"


def interrupted(run: RunContext, boundary: Boundary) -> tuple[str, str]:
    """Save what an interruption allows and say how to resume."""
    state = run.state
    account_cpu(run)
    if run.trainee.ranks.distributed:  # a rank stopped alone: the others may be anywhere
        saved = run.session.checkpoint_step
        run.state.rows = [r for r in state.rows if r["step"] <= saved]
        return "interrupted", (
            f"interrupted at step {state.step}; run the same command to resume from the last "
            f"checkpoint (step {saved})"
        )
    try:
        record_interval(run)  # the steps done so far belong to the checkpoint's sums
    except Diverged as exc:
        return diverged(run, exc)
    if run.session.in_update:
        message = (
            "interrupted during an update; run the same command to resume from the last checkpoint"
        )
    else:
        if boundary.step != state.step:  # the step had finished: its end is the boundary
            boundary = Boundary.of(run.trainee, state)
        save_checkpoint(
            run.files.checkpoint,
            run.plan.run_id,
            run.trainee,
            state,
            boundary,
            evaluation_model=run.session.evaluation_model,
        )
        message = f"interrupted at step {state.step}; run the same command to resume"
    run.logger.write_metrics(state)
    return "interrupted", message


def completion_message(run: RunContext) -> str:
    budget, steps = run.plan.request.time_budget_s, run.state.step
    message = f"completed {steps} steps"
    if budget is not None and steps < run.plan.total_steps:
        message += f" (time budget of {budget:g} s reached)"
    return message
