"""Layer selection for run.watch: defaults, names and globs, types, predicates, clear errors."""

from __future__ import annotations

import pytest
from torch import nn

from tracker.capture.layers import select_layers
from tracker.errors import InvalidArgumentError


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Sequential(nn.Linear(2, 2), nn.Tanh()))


def test_default_is_every_leaf_in_order() -> None:
    specs = select_layers(_model())
    assert [s.name for s in specs] == ["0", "1", "2.0", "2.1"]
    assert [s.kind for s in specs] == [None, "relu", None, "tanh"]
    assert [n for n, _ in specs[0].params] == ["weight", "bias"]


def test_modules_owning_parameters_are_included() -> None:
    attention = nn.MultiheadAttention(4, 2)
    names = [s.name for s in select_layers(nn.Sequential(attention))]
    assert names == ["0", "0.out_proj"]


def test_a_leaf_model_is_called_model() -> None:
    assert [s.name for s in select_layers(nn.Linear(2, 2))] == ["model"]


def test_names_globs_types_and_predicates() -> None:
    model = _model()
    assert [s.name for s in select_layers(model, "2.*")] == ["2.0", "2.1"]
    assert [s.name for s in select_layers(model, ["0", "2"])] == ["0", "2"]
    assert [s.name for s in select_layers(model, nn.Linear)] == ["2.0"]
    assert [s.name for s in select_layers(model, (nn.Conv2d, nn.Tanh))] == ["0", "2.1"]
    assert [s.name for s in select_layers(model, lambda n, m: n == "1")] == ["1"]
    assert select_layers(model, prefix="gen.")[0].name == "gen.0"


def test_unknown_name_lists_the_layers() -> None:
    with pytest.raises(InvalidArgumentError, match=r"layers are: 0, 1, 2, 2\.0, 2\.1"):
        select_layers(_model(), ["conv9"])


@pytest.mark.parametrize("bad", [42, [3], object()])
def test_bad_selectors_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        select_layers(_model(), bad)  # type: ignore[arg-type]


def test_empty_selection_is_an_error() -> None:
    with pytest.raises(InvalidArgumentError, match="matched no module"):
        select_layers(_model(), lambda n, m: False)
