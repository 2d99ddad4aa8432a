"""Search spaces: dimensions, the JSON form, registry entries' spaces, files, plug-ins, points."""

from __future__ import annotations

import importlib
import json
import math
import textwrap

import pytest
import torch
from torch import nn

from fambench.optim import (
    Dimension,
    OptimizerConfigError,
    OptimizerSpec,
    apply_point,
    build_optimizer,
    get_optimizer_spec,
    load_search_space,
    parse_search_space,
    register_optimizer,
    resolve_search_space,
    search_space_to_json,
)
from fambench.optim import registry as registry_module
from fambench.optim.search import search_space_problem

BUILT_INS = ("fam", "fam-fixed", "simple-fam", "adamw", "sgd")


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(4, 8, 3), nn.LayerNorm(6), nn.Flatten(), nn.Linear(48, 5))


def _write(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


# ---------------------------------------------------------------------------- JSON form


EXAMPLE = {
    "lr": {"min": 1e-4, "max": 1e-2, "scaling": "log"},
    "momentum": {"min": 0.8, "max": 0.99, "scaling": "log1m", "type": "float"},
    "fam_start_step": {"min": 10, "max": 500, "scaling": "linear", "type": "int"},
    "warmup_fraction": {"min": 0.02, "max": 0.3, "scaling": "linear"},
}


def test_parse_and_round_trip():
    space = parse_search_space(EXAMPLE)
    assert space == {
        "lr": Dimension(1e-4, 1e-2, "log"),
        "momentum": Dimension(0.8, 0.99, "log1m"),
        "fam_start_step": Dimension(10, 500, "linear", integer=True),
        "warmup_fraction": Dimension(0.02, 0.3, "linear"),
    }
    assert list(space) == list(EXAMPLE)
    steps = space["fam_start_step"]
    assert (steps.low, steps.high, type(steps.low)) == (10.0, 500.0, float)
    data = search_space_to_json(space)
    assert data["fam_start_step"] == {"min": 10, "max": 500, "scaling": "linear", "type": "int"}
    assert type(data["fam_start_step"]["min"]) is int
    assert data["lr"] == {"min": 1e-4, "max": 1e-2, "scaling": "log"}
    assert data["momentum"] == {"min": 0.8, "max": 0.99, "scaling": "log1m"}
    assert parse_search_space(json.loads(json.dumps(data))) == space
    # Dimension objects may stand in for their JSON form.
    assert parse_search_space({"lr": Dimension(0.1, 1, "log")}) == {"lr": Dimension(0.1, 1, "log")}


def test_scales_place_values_as_documented():
    assert Dimension(0.0, 10.0, "linear").from_unit(0.25) == 2.5
    log = Dimension(1e-4, 1e-2, "log")
    assert log.from_unit(0.5) == pytest.approx(1e-3)
    momentum = Dimension(0.8, 0.99, "log1m")  # 1 - momentum log-uniform in [0.01, 0.2]
    assert momentum.from_unit(0.0) == pytest.approx(0.8)
    assert momentum.from_unit(1.0) == pytest.approx(0.99)
    assert momentum.from_unit(0.5) == pytest.approx(1 - math.sqrt(0.2 * 0.01))
    steps = Dimension(10, 500, "linear", integer=True)
    assert (steps.from_unit(0.0), steps.from_unit(0.5), steps.from_unit(1.0)) == (10, 255, 500)
    assert type(steps.from_unit(0.3)) is int
    with pytest.raises(OptimizerConfigError, match=r"unit position must be in \[0, 1\], got 1.5"):
        log.from_unit(1.5)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"min": 0, "max": 1, "scaling": "log"}, "log scaling needs a lower bound > 0, got 0"),
        ({"min": 1, "max": 1, "scaling": "linear"}, "lower bound 1 must be below upper bound 1"),
        ({"min": 2, "max": 1, "scaling": "linear"}, "lower bound 2 must be below upper bound 1"),
        (
            {"min": float("nan"), "max": 1, "scaling": "linear"},
            r"bounds must be finite numbers, got \[nan, 1\]",
        ),
        (
            {"min": 0, "max": float("inf"), "scaling": "linear"},
            r"bounds must be finite numbers, got \[0, inf\]",
        ),
        (
            {"min": "1e-4", "max": 1, "scaling": "log"},
            r"bounds must be finite numbers, got \['1e-4', 1\]",
        ),
        (
            {"min": False, "max": 1, "scaling": "linear"},
            r"bounds must be finite numbers, got \[False, 1\]",
        ),
        (
            {"min": 0.1, "max": 1, "scaling": "exp"},
            "scaling must be one of linear, log, log1m, got 'exp'",
        ),
        (
            {"min": 0.9, "max": 1.0, "scaling": "log1m"},
            "log1m scaling needs an upper bound < 1, got 1.0",
        ),
        (
            {"min": 0, "max": 0.5, "scaling": "log1m", "type": "int"},
            "an integer dimension needs linear or log scaling, got 'log1m'",
        ),
        (
            {"min": 0.5, "max": 10, "scaling": "linear", "type": "int"},
            r"an integer dimension needs integral bounds, got \[0.5, 10\]",
        ),
        (
            {"min": 1, "max": 10, "scaling": "linear", "type": "double"},
            "type must be 'int' or 'float', got 'double'",
        ),
        (
            {"min": 1, "max": 10, "scaling": "linear", "maxx": 3},
            "unknown key 'maxx'; valid: min, max, scaling, type",
        ),
        ({"min": 1, "max": 10}, r"missing 'scaling' \(each dimension needs min, max and scaling\)"),
        ({"feasible_points": [0.1, 0.2]}, "feasible_points .* is not supported"),
        (0.1, r'must be an object like \{"min": 0.1, "max": 1, "scaling": "log"\}, got 0.1'),
    ],
)
def test_invalid_dimensions_are_refused_naming_them(entry, message):
    with pytest.raises(OptimizerConfigError, match=f"^search space: 'lr': {message}") as info:
        parse_search_space({"lr": entry, "beta": {"min": 0.5, "max": 0.9, "scaling": "log1m"}})
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_invalid_dimension_objects_and_spaces():
    with pytest.raises(OptimizerConfigError, match="^log scaling needs a lower bound > 0, got -1$"):
        Dimension(-1, 1, "log")
    with pytest.raises(OptimizerConfigError, match="^integer must be true or false, got 'yes'$"):
        Dimension(1, 2, "linear", "yes")
    with pytest.raises(OptimizerConfigError, match="^search space: names must be non-empty"):
        parse_search_space({"": {"min": 0, "max": 1, "scaling": "linear"}})
    with pytest.raises(OptimizerConfigError, match="^search space: must be an object mapping"):
        parse_search_space([("lr", {})])


def test_load_search_space_errors_name_the_file_and_the_key(tmp_path):
    path = _write(tmp_path / "space.json", EXAMPLE)
    assert load_search_space(path) == parse_search_space(EXAMPLE)
    assert load_search_space(tmp_path / "space.json") == parse_search_space(EXAMPLE)
    bad = _write(tmp_path / "bad.json", {"lr": {"min": 0, "max": 1, "scaling": "log"}})
    with pytest.raises(
        OptimizerConfigError,
        match=f"^search space file '{bad}': 'lr': log scaling needs a lower bound > 0, got 0$",
    ):
        load_search_space(bad)
    broken = tmp_path / "broken.json"
    broken.write_text('{"lr": {"min": 1,')
    with pytest.raises(
        OptimizerConfigError, match=f"^search space file '{broken}': not valid JSON"
    ):
        load_search_space(broken)
    with pytest.raises(OptimizerConfigError, match="missing.json': cannot read it"):
        load_search_space(tmp_path / "missing.json")
    empty = _write(tmp_path / "empty.json", {})
    with pytest.raises(OptimizerConfigError, match=f"^search space file '{empty}': declares no"):
        load_search_space(empty)


# ----------------------------------------------------------------------------- registry


REQUIRED = {
    "fam": {"lr", "warmup_fraction", "weight_decay", "alpha", "beta", "fam_start_step"},
    "fam-fixed": {"lr", "warmup_fraction", "weight_decay", "alpha"},
    "simple-fam": {"lr", "warmup_fraction", "weight_decay", "alpha", "beta"},
    "adamw": {"lr", "warmup_fraction", "weight_decay", "betas.0", "betas.1"},
    "sgd": {"lr", "warmup_fraction", "weight_decay", "momentum"},
}


@pytest.mark.parametrize("name", BUILT_INS)
def test_built_in_spaces_are_valid_and_cover_the_knobs(name):
    spec = get_optimizer_spec(name)
    space = resolve_search_space(name)
    assert space == dict(spec.search_space) and space is not spec.search_space
    assert set(space) == REQUIRED[name]
    assert search_space_problem(space, spec.defaults) == ""
    assert space["warmup_fraction"] == Dimension(0.02, 0.3, "linear")
    # Every corner and the middle of the space builds: the optimizer accepts its ranges.
    for u in (0.0, 0.5, 1.0):
        point = {key: dim.from_unit(u) for key, dim in space.items()}
        overrides = apply_point(spec.defaults, point, space=space)
        assert overrides.pop("warmup_fraction") == point["warmup_fraction"]
        optimizer = build_optimizer(name, _model(), **overrides)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(point["lr"])


def test_built_in_ranges():
    fam = resolve_search_space("fam")
    assert fam["lr"] == Dimension(0.05, 5, "log")
    assert fam["alpha"] == Dimension(0.5, 0.99, "log1m")
    assert fam["beta"] == Dimension(0.9, 0.999, "log1m")
    assert fam["weight_decay"] == Dimension(1e-6, 1e-2, "log")
    assert fam["fam_start_step"] == Dimension(10, 500, "linear", integer=True)
    fixed = resolve_search_space("fam-fixed")
    assert fixed == {k: fam[k] for k in ("lr", "alpha", "weight_decay", "warmup_fraction")}
    simple = resolve_search_space("simple-fam")
    assert simple == {k: v for k, v in fam.items() if k != "fam_start_step"}
    adamw = resolve_search_space("adamw")
    assert adamw["lr"] == Dimension(1e-4, 1e-2, "log")
    assert adamw["betas.0"] == Dimension(0.8, 0.99, "log1m")
    assert adamw["betas.1"] == Dimension(0.9, 0.9999, "log1m")
    assert adamw["weight_decay"] == Dimension(1e-4, 0.5, "log")
    sgd = resolve_search_space("sgd")
    assert sgd["lr"] == Dimension(0.01, 1, "log")
    assert sgd["momentum"] == Dimension(0.8, 0.99, "log1m")
    assert sgd["weight_decay"] == Dimension(1e-6, 1e-3, "log")


def test_apply_point_on_adamw_betas():
    defaults = get_optimizer_spec("adamw").defaults
    assert apply_point(defaults, {"betas.1": 0.98}) == {"betas": (0.9, 0.98)}
    assert apply_point(defaults, {"betas.1": 0.98, "betas.0": 0.85, "lr": 3e-3}) == {
        "betas": (0.85, 0.98),
        "lr": 3e-3,
    }
    assert apply_point(defaults, {"warmup_fraction": 0.125}) == {"warmup_fraction": 0.125}
    assert defaults["betas"] == (0.9, 0.999)  # untouched
    assert apply_point({"betas": [0.9, 0.999]}, {"betas.0": 0.8}) == {"betas": [0.8, 0.999]}
    optimizer = build_optimizer("adamw", _model(), **apply_point(defaults, {"betas.1": 0.98}))
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.98)
    with pytest.raises(OptimizerConfigError, match=r"^point 'betas.2': betas has no element 2"):
        apply_point(defaults, {"betas.2": 0.5})
    with pytest.raises(OptimizerConfigError, match=r"^point 'lr.0': lr has no element 0"):
        apply_point(defaults, {"lr.0": 0.5})


def test_apply_point_rounds_integer_dimensions_of_the_space():
    space = resolve_search_space("fam")
    defaults = get_optimizer_spec("fam").defaults
    overrides = apply_point(defaults, {"fam_start_step": 123.6, "lr": 0.5}, space=space)
    assert overrides == {"fam_start_step": 124, "lr": 0.5}
    assert type(overrides["fam_start_step"]) is int
    # Without the space a value is copied as given.
    assert apply_point(defaults, {"fam_start_step": 123.6}) == {"fam_start_step": 123.6}


def test_a_search_space_file_overrides_the_registry(tmp_path):
    data = {
        "lr": {"min": 0.1, "max": 0.5, "scaling": "linear"},
        "momentum": {"min": 0.9, "max": 0.95, "scaling": "log1m"},
    }
    path = _write(tmp_path / "sgd.json", data)
    assert resolve_search_space("sgd", path) == {
        "lr": Dimension(0.1, 0.5, "linear"),
        "momentum": Dimension(0.9, 0.95, "log1m"),
    }
    assert resolve_search_space("sgd", tmp_path / "sgd.json") == parse_search_space(data)
    assert set(resolve_search_space("sgd")) == REQUIRED["sgd"]  # the registry's is unchanged


@pytest.mark.parametrize(
    ("name", "key", "message"),
    [
        (
            "sgd",
            "alpha",
            "unknown hyperparameter 'alpha'; valid: lr, momentum, nesterov, weight_decay, "
            "warmup_fraction",
        ),
        (
            "adamw",
            "betas",
            "'betas' is a tuple hyperparameter; tune its elements: betas.0, betas.1",
        ),
        ("adamw", "betas.2", "'betas.2': betas has indices 0 to 1"),
        ("adamw", "betas.x", "'betas.x': betas has indices 0 to 1"),
        ("adamw", "lr.0", "'lr.0': lr is no tuple hyperparameter (default 0.001)"),
        (
            "adamw",
            "gamma.0",
            "unknown hyperparameter 'gamma.0'; valid: amsgrad, betas, eps, lr, weight_decay, "
            "warmup_fraction",
        ),
        ("fam", "layer_boost", "'layer_boost' is not numeric (default True)"),
        ("fam", "sampling", "'sampling' is not numeric (default 'ordered')"),
    ],
)
def test_a_file_naming_a_bad_hyperparameter_is_refused_naming_it(tmp_path, name, key, message):
    path = _write(tmp_path / "space.json", {key: {"min": 0.1, "max": 0.5, "scaling": "linear"}})
    with pytest.raises(OptimizerConfigError) as info:
        resolve_search_space(name, path)
    assert str(info.value) == f"optimizer {name!r}: search space file '{path}': {message}"


def test_an_optimizer_without_a_space_needs_a_file(clean_registry, tmp_path):
    register_optimizer(
        "bare-sgd",
        lambda model, lr=0.1: torch.optim.SGD(model.parameters(), lr=lr),
        defaults={"lr": 0.1},
        description="",
    )
    assert get_optimizer_spec("bare-sgd").search_space == {}
    with pytest.raises(OptimizerConfigError) as info:
        resolve_search_space("bare-sgd")
    assert str(info.value) == (
        "optimizer 'bare-sgd' declares no search space; pass --search-space FILE"
    )
    path = _write(tmp_path / "s.json", {"lr": {"min": 0.01, "max": 1, "scaling": "log"}})
    assert resolve_search_space("bare-sgd", path) == {"lr": Dimension(0.01, 1, "log")}


def test_register_optimizer_takes_dimensions_or_json_and_checks_names(clean_registry):
    def factory(model, lr=0.1, betas=(0.9, 0.99)):
        return torch.optim.Adam(model.parameters(), lr=lr, betas=betas)

    spec = register_optimizer(
        "my-adam",
        factory,
        defaults={"lr": 0.1, "betas": (0.9, 0.99)},
        description="",
        search_space={
            "lr": Dimension(0.01, 1, "log"),
            "betas.1": {"min": 0.9, "max": 0.999, "scaling": "log1m"},
        },
    )
    assert spec.search_space == {
        "lr": Dimension(0.01, 1, "log"),
        "betas.1": Dimension(0.9, 0.999, "log1m"),
    }
    with pytest.raises(OptimizerConfigError) as info:
        register_optimizer(
            "my-adam-2",
            factory,
            defaults={"lr": 0.1},
            description="",
            search_space={"momentum": Dimension(0.5, 0.9, "log1m")},
        )
    assert str(info.value) == (
        "optimizer 'my-adam-2': search space: unknown hyperparameter 'momentum'; "
        "valid: lr, warmup_fraction"
    )
    with pytest.raises(OptimizerConfigError, match="^optimizer 'my-adam-3': search space: 'lr': "):
        register_optimizer(
            "my-adam-3",
            factory,
            defaults={"lr": 0.1},
            description="",
            search_space={"lr": {"min": 0, "max": 1, "scaling": "log"}},
        )
    assert "my-adam-2" not in registry_module._REGISTRY


# ------------------------------------------------------------------------------ plug-ins


PLUGIN_SOURCE = '''
import torch

from fambench.optim import OptimizerSpec


class Lion(torch.optim.SGD):
    """A plug-in optimizer class (SGD underneath, for the test)."""

    fambench_search_space = {
        "lr": {"min": 1e-3, "max": 0.3, "scaling": "log"},
        "momentum": {"min": 0.5, "max": 0.99, "scaling": "log1m"},
    }

    def __init__(self, params, lr=0.02, momentum=0.5):
        super().__init__(params, lr=lr, momentum=momentum)


def make_sgd(model, lr=0.05, **extra):
    """A factory taking **kwargs."""
    return torch.optim.SGD(model.parameters(), lr=lr)


make_sgd.fambench_search_space = {
    "lr": {"min": 0.01, "max": 0.1, "scaling": "log"},
    "dampening": {"min": 0, "max": 0.5, "scaling": "linear"},
}


class Typo(torch.optim.SGD):
    """Declares a hyperparameter it does not have."""

    fambench_search_space = {"lrr": {"min": 0.01, "max": 0.1, "scaling": "log"}}

    def __init__(self, params, lr=0.02):
        super().__init__(params, lr=lr)


SPEC = OptimizerSpec(
    "ignored",
    "an entry-point spec",
    {"lr": 0.1, "betas": (0.9, 0.99)},
    lambda model, **hp: torch.optim.Adam(model.parameters(), **hp),
    search_space={"betas.0": {"min": 0.5, "max": 0.95, "scaling": "log1m"}},
)
'''


def _plugin_module(tmp_path, monkeypatch, name: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()


def test_a_dotted_path_plugin_brings_its_space(tmp_path, monkeypatch):
    _plugin_module(tmp_path, monkeypatch, "fb_search_plugin")
    expected = {
        "lr": Dimension(1e-3, 0.3, "log"),
        "momentum": Dimension(0.5, 0.99, "log1m"),
    }
    assert get_optimizer_spec("fb_search_plugin:Lion").search_space == expected
    assert resolve_search_space("fb_search_plugin:Lion") == expected
    # A factory may carry it too; taking **kwargs, any plain name is accepted.
    assert resolve_search_space("fb_search_plugin:make_sgd") == {
        "lr": Dimension(0.01, 0.1, "log"),
        "dampening": Dimension(0, 0.5, "linear"),
    }
    with pytest.raises(OptimizerConfigError) as info:
        get_optimizer_spec("fb_search_plugin:Typo")
    assert str(info.value) == (
        "optimizer 'fb_search_plugin:Typo': search space: unknown hyperparameter 'lrr'; "
        "valid: lr, warmup_fraction"
    )
    # A plug-in without one gets none.
    assert get_optimizer_spec("torch.optim:RAdam").search_space == {}
    with pytest.raises(OptimizerConfigError, match="'torch.optim:RAdam' declares no search space"):
        resolve_search_space("torch.optim:RAdam")


def test_an_entry_point_spec_carries_its_own_space(tmp_path, monkeypatch):
    _plugin_module(tmp_path, monkeypatch, "fb_search_ep")
    dist_info = tmp_path / "fb_search_ep-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fb-search-ep\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[fambench.optimizers]\nsearch-adam = fb_search_ep:SPEC\n"
    )
    spec = get_optimizer_spec("search-adam")
    assert isinstance(spec, OptimizerSpec) and spec.name == "search-adam"
    assert spec.search_space == {"betas.0": Dimension(0.5, 0.95, "log1m")}
    space = resolve_search_space("search-adam")
    overrides = apply_point(spec.defaults, {"betas.0": space["betas.0"].from_unit(1.0)})
    assert overrides == {"betas": (pytest.approx(0.95), 0.99)}
