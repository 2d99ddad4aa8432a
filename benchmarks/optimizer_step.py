"""Time one optimizer step on Conformer-sized models: fam vs fam-fixed vs SGD vs AdamW vs reference.

Builds the project's own model (fambench.model.ConformerCTC) at two sizes: a ~2.2M-parameter
one (d=144, 4 layers, ffn 576, 4 heads, 64 front-end channels, 256 tokens) and a ~19M one
(d=256, 12 layers, ffn 1024, 128 front-end channels), fills gradients from a fixed seed, and
times ``step()`` of each optimizer. By default each optimizer is timed on its own, one after
the other (its caches warm, as in training), in ``--rounds`` rounds of ``--repeats`` steps each,
so a slow spell of the machine falls on every optimizer rather than on one; ``--interleave``
times them round-robin step by step instead. FAM is timed after ``fam_start_step`` so its
analysis runs. "sgd" is the registry's (Nesterov); "sgd-momentum" is torch's plain foreach
SGD with momentum 0.9 (no Nesterov), the ratio the FAM goal is stated against; "reference" is
the plain per-tensor implementation of the specification (fambench.optim.reference).
``--optimizers`` adds any registry name (muon, soap, ...) and "muon-library", the library's
Muon as it is: its bf16 Newton–Schulz where fambench's muon, on a CPU without bf16 dot
products, runs fp32 GEMMs rounded to bf16 (fambench.optim.muon).

    python benchmarks/optimizer_step.py [--threads 2] [--repeats 40] [--rounds 5]
                                        [--models small,large] [--optimizers muon,muon-library]
                                        [--kernel 31] [--weight-decay 1e-4] [--interleave]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import pytorch_optimizer
import torch
from torch import nn

from fambench.model import ConformerCTC, ModelSettings, count_parameters
from fambench.optim import build_optimizer, get_parameter_groups
from fambench.optim.reference import ReferenceFAM

MODELS = {
    "small": ModelSettings(
        d_model=144, n_layers=4, n_heads=4, ffn_dim=576, frontend_channels=64, vocab_size=256
    ),
    "large": ModelSettings(
        d_model=256, n_layers=12, n_heads=4, ffn_dim=1024, frontend_channels=128, vocab_size=256
    ),
}
FAM_START = 2  # analysis from the 3rd step on, so a short warmup already measures it


DEFAULT_OPTIMIZERS = ("sgd", "sgd-momentum", "adamw", "fam", "fam-fixed", "reference")


def build_optimizers(
    model: nn.Module, weight_decay: float | None, names: tuple[str, ...] = DEFAULT_OPTIMIZERS
) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
    """Each optimizer with its registry defaults (and ``weight_decay`` when given)."""
    extra = {} if weight_decay is None else {"weight_decay": weight_decay}
    optimizers = {}
    for name in names:
        replica = copy.deepcopy(model)
        fill_gradients(replica, seed=0)
        if name == "sgd-momentum":
            optimizer = torch.optim.SGD(
                replica.parameters(), lr=0.1, momentum=0.9, nesterov=False, foreach=True,
                **extra,
            )  # fmt: skip
        elif name == "reference":
            groups = get_parameter_groups(replica, weight_decay=weight_decay or 0.0)
            optimizer = ReferenceFAM(groups, fam_start_step=FAM_START)
        elif name == "muon-library":
            muon = build_optimizer("muon", replica, **extra)
            optimizer = pytorch_optimizer.Muon(muon.param_groups)
        elif name.startswith("fam"):
            optimizer = build_optimizer(name, replica, fam_start_step=FAM_START, **extra)
        else:
            optimizer = build_optimizer(name, replica, **extra)
        optimizers[name] = (replica, optimizer)
    return optimizers


def fill_gradients(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=generator) * 1e-2


def time_steps(
    optimizers, warmup: int, repeats: int, interleave: bool = False, rounds: int = 1
) -> dict[str, list[float]]:
    """Seconds per step() of each optimizer: each on its own (default) or round-robin."""
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    if interleave:
        for _ in range(warmup):
            for _, optimizer in optimizers.values():
                optimizer.step()
        for _ in range(repeats * rounds):
            for name, (_, optimizer) in optimizers.items():
                start = time.perf_counter()
                optimizer.step()
                times[name].append(time.perf_counter() - start)
        return times
    for _ in range(rounds):
        for name, (_, optimizer) in optimizers.items():
            for _ in range(warmup):
                optimizer.step()
            for _ in range(repeats):
                start = time.perf_counter()
                optimizer.step()
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --repeats steps")
    parser.add_argument("--warmup", type=int, default=FAM_START + 3)
    parser.add_argument("--models", default="small,large", help="comma-separated: small, large")
    parser.add_argument("--kernel", type=int, default=31)
    parser.add_argument(
        "--weight-decay", type=float, default=None, help="for every optimizer (default: registry's)"
    )
    parser.add_argument("--interleave", action="store_true", help="time round-robin")
    parser.add_argument(
        "--optimizers", default="", help="comma-separated, timed after sgd and sgd-momentum"
    )
    args = parser.parse_args()
    extra = tuple(n for n in args.optimizers.split(",") if n and n not in DEFAULT_OPTIMIZERS[:2])
    names = DEFAULT_OPTIMIZERS[:2] + extra if extra else DEFAULT_OPTIMIZERS
    unknown = sorted(set(args.models.split(",")) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)} (choose from {', '.join(MODELS)})")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {platform.machine()}, "
        f"median of {args.rounds} x {args.repeats} steps, each round after {args.warmup} "
        f"warmup steps "
        f"(fam_start_step={FAM_START}, weight_decay="
        f"{'registry default' if args.weight_decay is None else args.weight_decay})"
    )
    header = (
        f"{'model':<7} {'params':>8} {'optimizer':<12} {'median ms':>10} {'p10 ms':>8} "
        f"{'p90 ms':>8} {'x sgd':>7} {'x sgd-mom':>9}"
    )
    print(header)
    print("-" * len(header))
    unstable = False
    for key in args.models.split(","):
        model = ConformerCTC(MODELS[key].replace(conv_kernel=args.kernel))
        n_params = count_parameters(model)
        optimizers = build_optimizers(model, args.weight_decay, names)
        times = time_steps(optimizers, args.warmup, args.repeats, args.interleave, args.rounds)
        base = statistics.median(times["sgd"])
        plain = statistics.median(times["sgd-momentum"])
        for name, values in times.items():
            ordered = sorted(values)
            median = statistics.median(values)
            p10 = ordered[len(ordered) // 10]
            p90 = ordered[(9 * len(ordered)) // 10]
            unstable |= p90 > 2 * p10
            print(
                f"{key:<7} {n_params / 1e6:>7.2f}M {name:<12} {median * 1e3:>10.2f} "
                f"{p10 * 1e3:>8.2f} {p90 * 1e3:>8.2f} {median / base:>7.2f} "
                f"{median / plain:>9.2f}"
            )
        del optimizers
    if unstable:
        print("warning: p90 > 2 x p10 somewhere: the machine was busy, ratios are unreliable")


if __name__ == "__main__":
    main()
