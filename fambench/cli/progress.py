"""Progress on the terminal while runs train: a bar per run, and a header per run of a grid."""

from __future__ import annotations

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fambench.cli import console


def fmt_value(value: object, spec: str = ".4f") -> str:
    """``value`` formatted by ``spec``; "-" for None."""
    return "-" if value is None else format(value, spec)


class ProgressView:
    """A rich progress bar fed by the trainer's ProgressEvents."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("dev WER {task.fields[wer]}"),
            TextColumn("{task.fields[rate]} steps/s"),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task: int | None = None
        self.stopped = False

    def __call__(self, event) -> None:  # fambench.training.ProgressEvent
        if event.phase == "setup":
            console.print(f"[dim]{event.message}[/]", highlight=False)
            return
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=event.total_steps, loss="-", wer="-", rate="-", eta="-"
            )
        fields = {"completed": event.step}
        if event.train_loss is not None:
            fields["loss"] = fmt_value(event.train_loss, ".3f")
        if event.dev_wer is not None:
            fields["wer"] = fmt_value(event.dev_wer, ".3f")
        if event.steps_per_s is not None:
            fields["rate"] = fmt_value(event.steps_per_s, ".2f")
        if event.eta_s is not None:
            minutes, seconds = divmod(int(event.eta_s), 60)
            fields["eta"] = f"{minutes}:{seconds:02d}"
        if event.phase == "eval":
            fields["description"] = "train"
        self.progress.update(self.task, **fields)
        if event.phase == "done":
            self.stop()

    def stop(self) -> None:
        if self.task is not None and not self.stopped:
            self.progress.stop()
            self.stopped = True


class RunViews:
    """One progress display per run of a grid or a study."""

    def __init__(self) -> None:
        self.view: ProgressView | None = None

    def next_run(self, index: int, total: int, label: str) -> None:
        self.stop()
        console.print(f"[bold]run {index}/{total}[/]: {label}", highlight=False)
        self.view = ProgressView()

    def waiting(self, text: str) -> None:
        console.print(f"[yellow]{escape(text)}[/]", highlight=False)

    def __call__(self, event) -> None:  # fambench.training.ProgressEvent
        if self.view is not None:
            self.view(event)

    def stop(self) -> None:
        if self.view is not None:
            self.view.stop()
            self.view = None
