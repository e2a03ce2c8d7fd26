"""Output parts: stable names for the tensors inside whatever a module returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from tracker.capture.outputs import MAX_PARTS, output_parts


def _names(output: object) -> list[str]:
    return [name for name, _ in output_parts(output)]


def test_plain_tensor_is_output() -> None:
    assert _names(torch.zeros(2)) == ["output"]
    assert _names(torch.zeros(2, dtype=torch.long)) == []  # only floating tensors


def test_lstm_tuple_output() -> None:
    out = nn.LSTM(3, 4, batch_first=True)(torch.randn(2, 5, 3))
    assert _names(out) == ["output.0", "output.1.0", "output.1.1"]


def test_packed_sequence_uses_field_names() -> None:
    packed = pack_padded_sequence(torch.randn(2, 5, 3), [5, 3], batch_first=True)
    out, _ = nn.GRU(3, 4)(packed)
    assert _names((out, None)) == ["output.0.data"]


def test_dict_and_dataclass() -> None:
    @dataclass
    class Out:
        logits: torch.Tensor
        hidden: torch.Tensor

    assert _names({"a": torch.zeros(1), "b": [torch.zeros(1)]}) == ["output.a", "output.b.0"]
    assert _names(Out(torch.zeros(1), torch.zeros(1))) == ["output.logits", "output.hidden"]


def test_non_tensor_outputs_and_limits() -> None:
    assert _names(None) == []
    assert _names("text") == []
    assert len(_names([torch.zeros(1)] * 100)) == MAX_PARTS
