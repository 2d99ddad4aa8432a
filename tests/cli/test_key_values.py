"""One key=value parser behind --opt, --variant and --grid."""

from __future__ import annotations

import pytest

from fambench.bench import parse_variant
from fambench.cli.commands_run import parse_opt_overrides
from fambench.cli.commands_tune import parse_grid
from fambench.errors import ConfigError
from fambench.key_values import split_top_level


def test_a_list_value_keeps_its_commas_in_every_option():
    assert split_top_level("lr=0.1, betas=[0.9,0.98],") == ["lr=0.1", "betas=[0.9,0.98]"]
    assert parse_opt_overrides(["betas=[0.9,0.98]"]) == {"betas": [0.9, 0.98]}
    assert parse_variant("adamw:betas=[0.9,0.98],lr=0.01") == (
        "adamw", (("betas", [0.9, 0.98]), ("lr", 0.01)),
    )  # fmt: skip
    assert parse_grid(["lr=0.1,0.2", "alpha=1"]) == {"lr": [0.1, 0.2], "alpha": [1.0]}


@pytest.mark.parametrize(
    ("parse", "bad", "message"),
    [
        (parse_opt_overrides, ["lr"], r"--opt 'lr': expected key=value, e.g. --opt lr=0.01"),
        (parse_opt_overrides, ["lr="], r"--opt 'lr=': expected key=value"),
        (parse_opt_overrides, ["lr=1", "lr=2"], r"--opt: lr given twice"),
        (parse_grid, ["lr=a,b"], r"--grid 'lr=a,b': could not convert .*e.g. --grid lr=0.1,0.2"),
        (parse_grid, ["lr=,"], r"--grid 'lr=,': no values"),
        (lambda items: parse_variant(items[0]), ["fam:lr=1,lr=2"], r"--variant .*lr given twice"),
    ],
)
def test_each_bad_item_gets_one_line_naming_the_option(parse, bad, message):
    with pytest.raises(ConfigError, match=message):
        parse(bad)
