"""Tap: which tensor of a module call its hook points see (``where``, ``arg``, ``index``) and which calls (``when``)."""

import pytest
import torch
from torch import nn

from lalm_lens.hook_points import Tap


class Gate(nn.Module):
    """``(x * scale + bias, x)``; ``soft`` is a keyword the forward ignores, for the points to filter on."""

    def forward(self, x, y, scale, bias=None, *, soft=None):
        return x * scale + (0 if bias is None else bias), x


def hooked(tap: Tap, hook) -> None:
    point = tap.new_point()
    point.name = "point"
    point.add_hook(hook)


def test_index_picks_the_positional_argument_the_point_sees():
    gate, seen = Gate(), []
    x, y, scale = torch.ones(2), torch.zeros(2), torch.full((2,), 3.0)

    def double(t, hook):
        seen.append(t)
        return t * 2

    hooked(Tap(gate, "input", index=2), double)
    out, _ = gate(x, y, scale)
    assert seen[0] is scale
    assert torch.equal(out, x * scale * 2), "the edited argument reaches the forward"


def test_the_keyword_arg_wins_over_the_index_when_the_call_passes_it_so():
    gate, seen = Gate(), []
    hooked(Tap(gate, "input", arg="scale", index=2), lambda t, hook: seen.append(t))
    scale = torch.full((2,), 3.0)
    gate(torch.ones(2), torch.zeros(2), scale=scale)
    assert seen == [scale]


def test_index_picks_the_output_element_the_point_sees():
    gate = Gate()
    hooked(Tap(gate, "output", index=1), lambda t, hook: t + 1)
    x = torch.ones(2)
    out, passed = gate(x, torch.zeros(2), torch.full((2,), 3.0))
    assert torch.equal(out, x * 3), "element 0 is left as computed"
    assert torch.equal(passed, x + 1)


def test_when_limits_the_points_to_the_calls_it_accepts():
    gate, seen = Gate(), []
    hooked(Tap(gate, "output", when=lambda kwargs: kwargs.get("soft") is not None), lambda t, hook: seen.append(t))
    x, y, scale = torch.ones(2), torch.zeros(2), torch.ones(2)
    gate(x, y, scale)
    assert seen == [], "a call without soft= runs unchanged"
    gate(x, y, scale, soft=True)
    assert len(seen) == 1


def test_a_call_without_the_argument_is_a_clear_error():
    gate = Gate()
    hooked(Tap(gate, "input", arg="bias", index=3), lambda t, hook: t)
    with pytest.raises(ValueError, match="positional argument 3 or keyword 'bias'"):
        gate(torch.ones(2), torch.zeros(2), torch.ones(2))


def test_a_negative_index_is_refused():
    with pytest.raises(ValueError, match="non-negative"):
        Tap(Gate(), "input", index=-1)
