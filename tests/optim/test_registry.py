"""Optimizer registry: built-ins, overrides, dotted paths, entry points, errors, CLI listing."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from fambench.optim import (
    FAMOptimizer,
    OptimizerConfigError,
    SimpleFAM,
    build_optimizer,
    get_optimizer_spec,
    list_optimizers,
    parse_override_value,
    register_optimizer,
    resolve_hyperparameters,
)
from fambench.optim import registry as registry_module


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(4, 8, 3), nn.LayerNorm(6), nn.Flatten(), nn.Linear(48, 5))


def test_built_ins_build_the_promised_optimizers():
    model = _model()
    sgd = build_optimizer("sgd", model)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["foreach"]) == (0.9, True, True)
    adamw = build_optimizer("adamw", model)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["foreach"] is True
    assert isinstance(build_optimizer("simple-fam", model), SimpleFAM)
    fam = build_optimizer("fam", model)
    assert isinstance(fam, FAMOptimizer)
    assert [g["handler"] for g in fam.param_groups] == ["conv", "default", "default"]
    assert [g["alpha"] for g in fam.param_groups] == [0.9, 0.9, 0.9]
    assert [g["n_bands"] for g in fam.param_groups] == [10, 4, 8]
    assert all(g["adaptive"] for g in fam.param_groups)
    fixed = build_optimizer("fam-fixed", model)
    assert isinstance(fixed, FAMOptimizer)
    assert not any(g["adaptive"] for g in fixed.param_groups)
    assert get_optimizer_spec("fam-fixed").ablation_of == "fam"
    for name in ("fam", "simple-fam", "adamw", "sgd"):
        assert get_optimizer_spec(name).ablation_of is None


def test_fam_defaults_are_the_specifications():
    defaults = get_optimizer_spec("fam").defaults
    assert defaults["lr"] == 1e-3 and defaults["beta"] == 0.99 and defaults["eps"] == 1e-8
    assert defaults["fam_start_step"] == 100 and defaults["min_size"] == 256
    assert {"sampling", "seed", "layer_boost"} <= set(defaults)
    # The trace is a capability (TraceWriter), not a hyperparameter.
    assert not {"debug", "debug_dir", "debug_interval"} & set(defaults)
    assert get_optimizer_spec("fam-fixed").defaults == defaults


def test_overrides_reach_the_optimizer():
    fam = build_optimizer(
        "fam",
        _model(),
        lr=0.3,
        alpha=0.8,
        n_bands=6,
        beta=0.9,
        sampling="random",
        seed=4,
        layer_boost=False,
        weight_decay=0.01,
    )
    assert {g["alpha"] for g in fam.param_groups} == {0.8}
    assert {g["n_bands"] for g in fam.param_groups} == {6}
    assert {g["lr"] for g in fam.param_groups} == {0.3}
    norm_group = fam.param_groups[1]
    assert norm_group["weight_decay"] == 0.0  # the norm group keeps its own rule
    assert fam.param_groups[0]["weight_decay"] == 0.01
    assert fam.defaults["sampling"] == "random" and fam.defaults["seed"] == 4
    assert not fam.param_groups[0]["layer_boost"]
    sgd = build_optimizer("sgd", _model(), lr=0.2, momentum=0.5, nesterov=False)
    assert (sgd.param_groups[0]["lr"], sgd.param_groups[0]["momentum"]) == (0.2, 0.5)
    resolved = resolve_hyperparameters("adamw", lr=0.01)
    assert resolved["lr"] == 0.01 and resolved["weight_decay"] == 0.01


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("fam", {"lrr": 0.1}, "unknown hyperparameter 'lrr'; valid: alpha, beta,"),
        ("sgd", {"alpha": 0.9}, "valid: lr, momentum, nesterov, weight_decay"),
        # Generic checks (the registry): a value must fit its default's type.
        ("fam", {"lr": "fast"}, "lr must be a number, got 'fast'"),
        ("fam", {"lr": float("nan")}, "lr must be a number, got nan"),
        ("sgd", {"lr": True}, "lr must be a number, got True"),
        ("fam", {"sampling": 3}, "sampling must be a string, got 3"),
        ("fam", {"layer_boost": "yes"}, "layer_boost must be true or false"),
        ("adamw", {"betas": [0.9]}, r"betas must be a list of 2 values like \[0.9, 0.999\]"),
        ("adamw", {"betas": ["a", 0.9]}, "betas must be a list of 2 values"),
        ("fam", {"debug": True}, "unknown hyperparameter 'debug'"),
        # Ranges (the optimizer's own checks, reported by build_optimizer).
        ("fam", {"lr": -1.0}, r"param group 0: lr must be >= 0.0, got -1.0"),
        ("fam", {"alpha": 1.0}, r"param group 0: alpha must be \[0.0, 1.0\), got 1.0"),
        ("fam-fixed", {"alpha": -0.1}, r"alpha must be \[0.0, 1.0\)"),
        ("fam", {"beta": 1}, r"beta must be \[0.0, 1.0\)"),
        ("fam", {"n_bands": 0}, "n_bands must be an integer >= 1"),
        ("fam", {"fam_start_step": 2.5}, "fam_start_step must be an integer >= 0"),
        ("fam", {"sampling": "shuffled"}, "sampling must be one of ordered, random"),
        ("fam", {"weight_decay": -1}, "weight_decay must be >= 0"),
        ("simple-fam", {"alpha": 1.5}, r"SimpleFAM: alpha must be in \[0, 1.0\), got 1.5"),
        ("simple-fam", {"lr": -0.1}, r"SimpleFAM: lr must be >= 0"),
        ("adamw", {"lr": -1e-3}, "Invalid learning rate: -0.001"),
        ("adamw", {"betas": [0.9, 1.5]}, "Invalid beta parameter at index 1: 1.5"),
        ("sgd", {"lr": -0.1}, "Invalid learning rate: -0.1"),
        ("sgd", {"momentum": -0.5}, "Invalid momentum value: -0.5"),
    ],
)
def test_bad_hyperparameters_are_refused_with_a_clear_message(name, overrides, message):
    with pytest.raises(OptimizerConfigError, match=message) as info:
        build_optimizer(name, _model(), **overrides)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"optimizer {name!r}: ")


def test_ranges_are_checked_once_by_the_optimizer_itself(clean_registry):
    # The registry only checks types: resolve_hyperparameters returns out-of-range values ...
    resolved = resolve_hyperparameters("fam", lr=-1.0, alpha=1.5)
    assert resolved["lr"] == -1.0 and resolved["alpha"] == 1.5
    assert set(resolved) == set(get_optimizer_spec("fam").defaults)
    # ... and FAM's own rule (lr >= 0, as in torch) decides: lr = 0 is accepted.
    assert {g["lr"] for g in build_optimizer("fam", _model(), lr=0).param_groups} == {0}
    # No key has a rule of its own: "alpha" of another optimizer may be anything it accepts.
    register_optimizer(
        "wide-alpha",
        lambda model, alpha=5.0, betas=(1, "x"): torch.optim.SGD(model.parameters(), lr=alpha),
        defaults={"alpha": 5.0, "betas": (1, "x")},
        description="",
    )
    optimizer = build_optimizer("wide-alpha", _model(), alpha=3, betas=[2.5, None])
    assert optimizer.param_groups[0]["lr"] == 3
    with pytest.raises(OptimizerConfigError, match="betas must be a list of 2 values"):
        build_optimizer("wide-alpha", _model(), betas=[None, "x"])


def test_unknown_names_list_the_choices():
    with pytest.raises(OptimizerConfigError) as info:
        build_optimizer("adam", _model())
    message = str(info.value)
    assert (
        "unknown optimizer 'adam'; choose one of: adamw, fam, fam-fixed, lion, muon, nadamw, "
        "sfadamw, sgd, simple-fam, soap," in message
    )
    assert "package.module:Name" in message and "fambench.optimizers" in message


def test_dotted_path_to_an_optimizer_class():
    spec = get_optimizer_spec("torch.optim:RAdam")
    assert spec.defaults["lr"] == 1e-3 and spec.defaults["betas"] == (0.9, 0.999)
    assert "params" not in spec.defaults and spec.ablation_of is None
    model = _model()
    optimizer = build_optimizer("torch.optim:RAdam", model, lr=0.01)
    assert isinstance(optimizer, torch.optim.RAdam)
    assert optimizer.param_groups[0]["lr"] == 0.01
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    with pytest.raises(OptimizerConfigError, match="unknown hyperparameter 'momentum'"):
        build_optimizer("torch.optim:RAdam", model, momentum=0.9)
    assert isinstance(build_optimizer("fambench.optim:FAMOptimizer", model), FAMOptimizer)


def _factory_module(tmp_path, monkeypatch, name: str) -> None:
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent('''
        import torch

        def make_sgd(model, lr=0.05, split=True):
            """Two groups: weights and biases."""
            weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
            biases = [p for n, p in model.named_parameters() if not n.endswith("weight")]
            groups = [{"params": weights}, {"params": biases, "lr": lr / 10}] if split else weights
            return torch.optim.SGD(groups, lr=lr)

        class Lion(torch.optim.SGD):
            """A plug-in optimizer class (SGD underneath, for the test)."""

            def __init__(self, params, lr=0.02, momentum=0.5):
                super().__init__(params, lr=lr, momentum=momentum)

        NOT_AN_OPTIMIZER = 3
    ''')
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()


def test_dotted_path_to_a_factory_receives_the_model(tmp_path, monkeypatch):
    _factory_module(tmp_path, monkeypatch, "fb_plugin_factory")
    spec = get_optimizer_spec("fb_plugin_factory:make_sgd")
    assert spec.defaults == {"lr": 0.05, "split": True}
    assert spec.description == "Two groups: weights and biases."
    optimizer = build_optimizer("fb_plugin_factory:make_sgd", _model(), lr=0.1)
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, pytest.approx(0.01)]


def test_bad_dotted_paths(tmp_path, monkeypatch):
    _factory_module(tmp_path, monkeypatch, "fb_plugin_bad")
    with pytest.raises(
        OptimizerConfigError, match="cannot import module 'no_such_pkg.mod' \\(No module named"
    ):
        get_optimizer_spec("no_such_pkg.mod:Opt")
    with pytest.raises(OptimizerConfigError, match="has no attribute 'Missing'"):
        get_optimizer_spec("fb_plugin_bad:Missing")
    with pytest.raises(OptimizerConfigError, match="points at a int"):
        get_optimizer_spec("fb_plugin_bad:NOT_AN_OPTIMIZER")
    with pytest.raises(OptimizerConfigError, match="must look like package.module:Name"):
        get_optimizer_spec("torch.optim:")


def test_entry_point_plugin_from_an_installed_distribution(tmp_path, monkeypatch):
    _factory_module(tmp_path, monkeypatch, "fb_plugin_ep")
    dist_info = tmp_path / "fb_plugin_ep-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fb-plugin-ep\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[fambench.optimizers]\nmy-lion = fb_plugin_ep:Lion\nsplit-sgd = fb_plugin_ep:make_sgd\n"
        "broken = fb_plugin_ep:DOES_NOT_EXIST\n"
    )
    names = [spec.name for spec in list_optimizers()]
    assert "my-lion" in names and "split-sgd" in names and "broken" not in names
    optimizer = build_optimizer("my-lion", _model(), momentum=0.7)
    assert type(optimizer).__name__ == "Lion"
    assert optimizer.param_groups[0]["momentum"] == 0.7
    assert optimizer.param_groups[0]["lr"] == 0.02
    assert len(build_optimizer("split-sgd", _model()).param_groups) == 2
    with pytest.raises(OptimizerConfigError, match="plug-in 'broken'.*failed to load"):
        build_optimizer("broken", _model())
    with pytest.raises(
        OptimizerConfigError, match="choose one of: adamw, .*, my-lion, .*split-sgd"
    ):
        build_optimizer("nope", _model())


def test_register_optimizer(clean_registry):
    spec = register_optimizer(
        "plain-sgd",
        lambda model, lr: torch.optim.SGD(model.parameters(), lr=lr),
        defaults={"lr": 0.1},
        description="SGD without momentum",
    )
    assert get_optimizer_spec("plain-sgd") is spec
    assert build_optimizer("plain-sgd", _model()).param_groups[0]["lr"] == 0.1
    with pytest.raises(OptimizerConfigError, match="already registered"):
        register_optimizer("plain-sgd", spec.factory, defaults={}, description="")
    with pytest.raises(OptimizerConfigError, match="invalid optimizer name"):
        register_optimizer("a:b", spec.factory, defaults={}, description="")
    assert spec.ablation_of is None
    ablation = register_optimizer(
        "plain-sgd-small",
        spec.factory,
        defaults={"lr": 0.01},
        description="",
        ablation_of="plain-sgd",
    )
    assert get_optimizer_spec("plain-sgd-small").ablation_of == "plain-sgd" == ablation.ablation_of
    for bad in ("", "a-self", 3):
        with pytest.raises(OptimizerConfigError, match="ablation_of must name another optimizer"):
            register_optimizer("a-self", spec.factory, defaults={}, description="", ablation_of=bad)
    register_optimizer("not-an-optimizer", lambda model: 3, defaults={}, description="")
    with pytest.raises(
        OptimizerConfigError, match="returned int, expected a torch.optim.Optimizer"
    ):
        build_optimizer("not-an-optimizer", _model())


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.1", 0.1),
        ("1e-3", 1e-3),
        ("10", 10),
        ("-2", -2),
        ("true", True),
        ("False", False),
        ("none", None),
        ("null", None),
        ("[0.9, 0.98]", [0.9, 0.98]),
        ("(0.9, 0.98)", (0.9, 0.98)),
        ("ordered", "ordered"),
        ("'quoted'", "quoted"),
        ("./fam_debug", "./fam_debug"),
    ],
)
def test_parse_override_value(text, value):
    parsed = parse_override_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_cli_lists_the_registry():
    from fambench import cli

    cli._register_commands()
    result = CliRunner().invoke(cli.app, ["optimizers"])
    assert result.exit_code == 0, result.output
    for name in ("fam", "fam-fixed", "simple-fam", "adamw", "sgd"):
        assert f"│ {name} " in result.output
    assert "fam_start_step=100" in result.output
    assert "momentum=0.9" in result.output and "nesterov=true" in result.output
    assert "torch.optim:RAdam" in result.output


@pytest.mark.subprocess
def test_optim_imports_nothing_else_of_fambench():
    code = (
        "import sys, fambench.optim; "
        "bad = [m for m in sys.modules if m.startswith('fambench.') "
        "and not m.startswith('fambench.optim')]; print(bad)"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
