"""Hook points fed from PyTorch hooks on the HF modules, installed only while used.

A :class:`Tap` is one PyTorch hook on one HF submodule (on its input or its
output). It feeds the tensor it sees through the TransformerLens
:class:`HookPoint` s attached to it, in order, and puts back what they return.
The PyTorch hook is registered when the first user hook is added to one of its
points and removed with the last, so an un-hooked forward runs the plain HF
code with no extra Python on its path. A :class:`HookRegistry` knows which
points hold hooks, so removing them costs what is in use, not the model's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from . import names


@dataclass
class Step:
    """Which part of a run the hooks are seeing, shared by every hook point of a model as ``hook.step``.

    ``phase`` is ``"forward"`` (a plain run), ``"prefill"`` (the first pass of
    ``generate``) or ``"decode"``; ``index`` is 0 for forward and prefill and
    ``k`` for the k-th generated token; ``positions`` are the absolute sequence
    positions the position axis of a decoder tensor covers now
    (``range(0, L)``, then ``range(L + k - 1, L + k)`` at decoding step ``k``).
    :class:`~lalm_lens.HookedLALM` owns and updates it.
    """

    phase: str = "forward"
    index: int = 0
    positions: range = range(0)

    def set(self, phase: str, index: int, positions: range) -> None:
        self.phase, self.index, self.positions = phase, index, positions


def step_of(hook, n_positions: int) -> tuple[str, int, range]:
    """``(phase, index, positions)`` of the current call; outside decoding the positions are ``range(n_positions)``."""
    step = getattr(hook, "step", None)
    if step is None or step.phase != "decode":
        return ("forward" if step is None else step.phase), 0, range(n_positions)
    return step.phase, step.index, step.positions


class LazyHookPoint(HookPoint):
    """A HookPoint that tells its owner when it gains its first hook or loses its last, and its model's
    :class:`HookRegistry` (``registry``, set when the model indexes its points) when its hooks or context change."""

    registry: HookRegistry | None = None

    def __init__(self, on_change: Callable[[], None] | None = None):
        super().__init__()
        self.on_change = on_change
        self.step = Step()

    @property
    def ctx(self) -> dict:
        """State hooks keep between calls (TransformerLens's ``hook.ctx``); the registry notes every point whose
        context is read or set, so that clearing contexts visits only those."""
        if self.registry is not None:
            self.registry.touch(self)
        return self._context

    @ctx.setter
    def ctx(self, value: dict) -> None:
        if self.registry is not None:
            self.registry.touch(self)
        self._context = value

    @ctx.deleter
    def ctx(self) -> None:
        del self._context

    def layer(self) -> int:
        """The block index of this point (decoder, encoder or Kimi's MIMO blocks); raises outside blocks."""
        return names.layer_of(self.name)

    def run(self, tensor: torch.Tensor) -> torch.Tensor:
        """Pass ``tensor`` through the user hooks; what they return must be a tensor of the same shape."""
        out = self(tensor)
        if out is tensor:
            return out
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"a hook on {self.name} returned a {type(out).__name__}; return a torch.Tensor of shape "
                f"{tuple(tensor.shape)}, or None to leave the activation unchanged"
            )
        if out.shape != tensor.shape:
            raise ValueError(
                f"a hook on {self.name} returned shape {tuple(out.shape)} where the activation has shape "
                f"{tuple(tensor.shape)}; return a tensor of the same shape (broadcasting is not applied)"
            )
        if out.device != tensor.device or out.dtype != tensor.dtype:
            out = out.to(tensor.device, tensor.dtype)
        return out

    @property
    def active(self) -> bool:
        return bool(self.fwd_hooks or self.bwd_hooks)

    def add_hook(self, *args, **kwargs):
        handle = super().add_hook(*args, **kwargs)
        self._changed()
        return handle

    def remove_hooks(self, *args, **kwargs) -> None:
        super().remove_hooks(*args, **kwargs)
        self._changed()

    def _changed(self) -> None:
        if self.registry is not None:
            self.registry.update(self)
        if self.on_change is not None:
            self.on_change()


class HookRegistry:
    """The hook points of one model that hold hooks, and those whose context was touched since it was last cleared.

    Removing hooks (``reset_hooks``, the end of ``model.hooks()``,
    ``run_with_hooks`` and ``run_with_cache``) and clearing contexts visit only
    these, so they cost what is in use rather than the model's size (the
    released Qwen3-Omni thinker has 48 x 128 x 3 = 18,432 points on experts alone).
    Each :class:`LazyHookPoint` reports its changes here; a plain
    TransformerLens :class:`HookPoint` cannot, so it is always visited.
    """

    def __init__(self, points: Iterable[HookPoint]):
        self.hooked: dict[LazyHookPoint, None] = {}  # dicts as insertion-ordered sets: a deterministic visiting order
        self.touched: dict[LazyHookPoint, None] = {}
        self.unreported: list[HookPoint] = []
        for point in points:
            if not isinstance(point, LazyHookPoint):
                self.unreported.append(point)
                continue
            has_context = bool(point.ctx)
            point.registry = self
            self.update(point)
            if has_context:
                self.touch(point)

    def update(self, point: LazyHookPoint) -> None:
        """Record whether ``point`` holds hooks now."""
        if point.active:
            self.hooked[point] = None
        else:
            self.hooked.pop(point, None)

    def touch(self, point: LazyHookPoint) -> None:
        """Record that ``point``'s context may no longer be empty."""
        self.touched[point] = None

    def with_hooks(self) -> list[HookPoint]:
        """The points that hold hooks (a list: removing hooks changes the registry while it is walked)."""
        return [*self.hooked, *(p for p in self.unreported if p.fwd_hooks or p.bwd_hooks)]

    def take_contexts(self) -> list[HookPoint]:
        """The points whose context may not be empty, forgotten here: the caller clears them."""
        points = [*self.touched, *self.unreported]
        self.touched = {}
        return points


class Tap:
    """One PyTorch hook on ``module`` that runs ``points`` on a tensor it sees.

    ``where`` is ``"output"`` (the module's output, or its element ``index``
    when it returns a tuple) or ``"input"`` (the keyword argument ``arg`` when
    the call passes it so, else positional argument ``index``). With
    ``in_place`` an edit is copied into the input tensor itself, so that other
    references to it (a residual kept before a norm) see it too. ``when``, a
    predicate on the call's keyword arguments, limits the points to the calls
    it accepts; other calls run unchanged (e.g. a module that embeds both soft
    tokens, ``inputs_embeds=``, and token ids in one forward).
    """

    def __init__(
        self, module: nn.Module, where: str, arg: str | None = None, in_place: bool = False, index: int = 0,
        when: Callable[[dict], bool] | None = None,
    ):
        if where not in ("input", "output"):
            raise ValueError(f"where must be 'input' or 'output', got {where!r}")
        if index < 0:
            raise ValueError(f"index must be a non-negative position, got {index}")
        self.module, self.where, self.arg, self.in_place = module, where, arg, in_place
        self.index, self.when = index, when
        self.points: list[LazyHookPoint] = []
        self.handle = None

    def new_point(self) -> LazyHookPoint:
        point = LazyHookPoint(on_change=self.sync)
        self.points.append(point)
        return point

    def sync(self) -> None:
        """Install the PyTorch hook if any point is in use, remove it otherwise."""
        wanted = any(p.active for p in self.points)
        if wanted and self.handle is None:
            if self.where == "output":
                self.handle = self.module.register_forward_hook(self._on_output, with_kwargs=True)
            else:
                self.handle = self.module.register_forward_pre_hook(self._on_input, with_kwargs=True)
        elif not wanted and self.handle is not None:
            self.handle.remove()
            self.handle = None

    def run(self, tensor: torch.Tensor) -> torch.Tensor:
        """Run the active points on ``tensor``; returns what goes on. Subclasses that show their points another
        view of the tensor (:class:`ReadTap`, :class:`ViewTap`, a packed encoder's tap) override this."""
        for point in self.points:
            if point.active:
                tensor = point.run(tensor)
        return tensor

    def _on_output(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if self.when is not None and not self.when(kwargs):
            return None
        if isinstance(output, tuple):
            old = output[self.index]
            new = self.run(old)
            return output if new is old else (*output[: self.index], new, *output[self.index + 1 :])
        new = self.run(output)
        return None if new is output else new

    def _on_input(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if self.when is not None and not self.when(kwargs):
            return None
        if self.arg is not None and self.arg in kwargs:
            old = kwargs[self.arg]
            new = self.run(old)
            if new is old:
                return None
            return args, {**kwargs, self.arg: self._put(old, new)}
        if len(args) <= self.index:
            raise ValueError(
                f"{type(module).__name__} was called without positional argument {self.index}"
                + (f" or keyword {self.arg!r}" if self.arg is not None else "")
                + f", which its hook points {[p.name for p in self.points]} read; pass it to the module"
            )
        old = args[self.index]
        new = self.run(old)
        if new is old:
            return None
        return (*args[: self.index], self._put(old, new), *args[self.index + 1 :]), kwargs

    def _put(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        if not self.in_place:
            return new
        if new.shape != old.shape:
            raise ValueError(f"a hook returned shape {tuple(new.shape)} where {tuple(old.shape)} was expected")
        old.copy_(new)
        return old


class ReadTap(Tap):
    """A tap whose points see ``derive(tensor)``, a value computed from what the module sees (e.g. a norm's scale).

    The value is not part of the HF computation, so its points may read it but not edit it.
    """

    def __init__(self, module: nn.Module, where: str, derive: Callable[[torch.Tensor], torch.Tensor], arg: str | None = None):
        super().__init__(module, where, arg)
        self.derive = derive

    def run(self, tensor: torch.Tensor) -> torch.Tensor:
        value = self.derive(tensor)
        for point in self.points:
            if point.active and point.run(value) is not value:
                raise ValueError(f"{point.name} is read-only (derived from the activation); edit the tensor it is computed from")
        return tensor


class ViewTap(Tap):
    """A :class:`Tap` whose points see ``view(tensor)`` instead of the tensor the module sees; an edit goes back
    through ``unview(new, tensor)``.

    For HF tensors whose own layout hides the documented axes, e.g. projector
    outputs flattened to ``[clip * token, d]`` that the points see as
    ``[clip, token, d]``.
    """

    def __init__(self, module: nn.Module, where: str, view, unview, arg: str | None = None):
        super().__init__(module, where, arg)
        self.view, self.unview = view, unview

    def run(self, tensor: torch.Tensor) -> torch.Tensor:
        view = self.view(tensor)
        new = super().run(view)
        return tensor if new is view else self.unview(new, tensor)
