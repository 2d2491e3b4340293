"""Neuron interventions: deactivate (zero or mean) and gain (multiply or add) the neurons of a NeuronSet.

Each is a small object whose :meth:`fwd_hooks` gives ``(name, hook)`` pairs
for the layers the set touches; lists from several objects concatenate, so
edits compose (``deact.fwd_hooks() + gain.fwd_hooks()``). The edit applies at
every position of every forward: the prefill and each decoding step of
``generate`` alike.
"""

from __future__ import annotations

from functools import partial
from typing import Iterable

import torch
from jaxtyping import Float

from ..neurons.neuron_set import NeuronSet
from ..neurons.stats import NeuronStats


class NeuronEdit:
    """Base of neuron edits: the chosen neurons of ``classes`` (all the set's classes when None), checked against ``model``."""

    def __init__(self, neurons: NeuronSet, model, classes: str | Iterable[str] | None = None):
        if not isinstance(neurons, NeuronSet):
            raise TypeError(f"neurons must be a NeuronSet, got {type(neurons).__name__}")
        neurons.check_model(model)
        self.neurons, self.site = neurons, neurons.site
        self.index = {layer: torch.from_numpy(idx) for layer, idx in neurons.layers(classes).items() if len(idx)}
        self._on_device: dict[tuple[int, torch.device], torch.Tensor] = {}

    def _idx(self, layer: int, device: torch.device) -> torch.Tensor:
        key = (layer, device)
        if key not in self._on_device:
            self._on_device[key] = self.index[layer].to(device)
        return self._on_device[key]

    def fwd_hooks(self) -> list[tuple[str, "partial"]]:
        """``[(hook name, hook), ...]`` for every layer with chosen neurons."""
        return [(self.site.hook_name(layer), partial(self.edit, layer=layer)) for layer in self.index]

    def edit(self, acts: Float[torch.Tensor, "... neuron"], hook, *, layer: int) -> torch.Tensor:
        raise NotImplementedError

    def __len__(self) -> int:
        return int(sum(len(v) for v in self.index.values()))


class Deactivate(NeuronEdit):
    """Set the chosen neurons to 0, or (``mean=``) to their mean activation over an identification set.

    ``mean`` is a :class:`NeuronStats` (its token-weighted mean over every
    class) or a ``[layer, neuron]`` tensor.

    >>> edit = Deactivate(neuron_set, model, classes="angry")
    >>> logits = model.run_with_hooks(batch, fwd_hooks=edit.fwd_hooks())
    """

    def __init__(self, neurons: NeuronSet, model, classes=None, mean: NeuronStats | torch.Tensor | None = None):
        super().__init__(neurons, model, classes)
        self.values: dict[int, torch.Tensor] | None = None
        if mean is not None:
            if isinstance(mean, NeuronStats):
                if mean.fingerprint != neurons.fingerprint:
                    raise ValueError(f"mean statistics of {mean.fingerprint} do not match the NeuronSet's {neurons.fingerprint}")
                mean = mean.overall_mean
            if tuple(mean.shape) != (neurons.n_layers, neurons.d_mlp):
                raise ValueError(f"mean must be [layer, neuron] = {(neurons.n_layers, neurons.d_mlp)}, got {tuple(mean.shape)}")
            self.values = {layer: mean[layer, idx].float() for layer, idx in self.index.items()}

    def edit(self, acts, hook, *, layer: int) -> torch.Tensor:
        idx = self._idx(layer, acts.device)
        out = acts.clone()
        if self.values is None:
            out[..., idx] = 0
        else:
            out[..., idx] = self.values[layer].to(acts.device, acts.dtype)
        return out


class Gain(NeuronEdit):
    """Multiply the chosen neurons by ``strength`` (``additive=True``: add ``strength`` instead).

    >>> steer = Gain(neuron_set, model, strength=3.0, classes="happy")
    >>> text = model.generate(batch, fwd_hooks=steer.fwd_hooks())
    """

    def __init__(self, neurons: NeuronSet, model, strength: float, classes=None, additive: bool = False):
        super().__init__(neurons, model, classes)
        if not isinstance(strength, (int, float)) or isinstance(strength, bool):
            raise TypeError(f"strength must be a number, got {strength!r}")
        self.strength, self.additive = float(strength), bool(additive)

    def edit(self, acts, hook, *, layer: int) -> torch.Tensor:
        idx = self._idx(layer, acts.device)
        out = acts.clone()
        if self.additive:
            out[..., idx] += self.strength
        else:
            out[..., idx] *= self.strength
        return out
