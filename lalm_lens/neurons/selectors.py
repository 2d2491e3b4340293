"""Selectors: score every neuron for every class from :class:`NeuronStats`, then keep a budget of the best.

The four selectors of emotion-neuron work (``P`` = activation probability per
class, ``mu`` = mean activation per class, both ``[class, layer, neuron]``):

- ``frequency``: ``P_c`` (``relative=True``: minus the mean ``P`` of the other classes);
- ``entropy`` (LAPE): normalise ``P`` over classes and take its entropy ``H``;
  only neurons whose largest ``P`` reaches the ``filter_quantile`` of all
  ``P`` values are candidates, a candidate belongs to every class whose ``P``
  reaches the ``assign_quantile`` of all ``P`` values, and the lowest-entropy
  ones are kept;
- ``magnitude`` (also ``mean_deviation``): ``mu_c - mean over classes of mu``;
- ``contrast``: ``P_c - max over other classes of P`` (``kind="smd"``: the
  standardised mean difference of class ``c`` against the rest).

A budget is a fraction (``0 < budget < 1``) of the neurons or a count per
class, chosen across all layers at once (``per_layer=False``, the default)
or in each layer.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from jaxtyping import Float

from .neuron_set import NeuronSet
from .stats import NeuronStats

SELECTORS = ("frequency", "entropy", "magnitude", "contrast")
ALIASES = {"mean_deviation": "magnitude", "mean-deviation": "magnitude", "lape": "entropy"}


def frequency_scores(stats: NeuronStats, relative: bool = False) -> Float[torch.Tensor, "cls layer neuron"]:
    """``P_c``, or ``P_c`` minus the mean ``P`` of the other classes with ``relative``."""
    p = stats.probability
    if not relative:
        return p
    n = p.shape[0]
    if n < 2:
        raise ValueError("relative frequency needs at least two classes")
    return p - (p.sum(0, keepdim=True) - p) / (n - 1)


def entropy_scores(
    stats: NeuronStats, filter_quantile: float = 0.95, assign_quantile: float = 0.95
) -> Float[torch.Tensor, "cls layer neuron"]:
    """Negative LAPE entropy for neurons assigned to a class (see the module docstring), ``-inf`` elsewhere."""
    for name, q in (("filter_quantile", filter_quantile), ("assign_quantile", assign_quantile)):
        if not 0.0 <= q < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {q}")
    p = stats.probability
    flat = p[:, stats.layers].flatten()
    total = p.sum(0, keepdim=True)
    q = torch.where(total > 0, p / total.clamp(min=1e-300), torch.zeros_like(p))
    entropy = -(q * torch.log(q.clamp(min=1e-300))).sum(0)
    candidate = p.max(0).values >= torch.quantile(flat, filter_quantile)
    assigned = (p >= torch.quantile(flat, assign_quantile)) & candidate & (total > 0)
    return torch.where(assigned, -entropy.expand_as(p), torch.full_like(p, -torch.inf))


def magnitude_scores(stats: NeuronStats) -> Float[torch.Tensor, "cls layer neuron"]:
    """Mean deviation: ``mu_c`` minus the mean over classes of ``mu``."""
    mu = stats.mean
    return mu - mu.mean(0, keepdim=True)


def contrast_scores(stats: NeuronStats, kind: str = "probability") -> Float[torch.Tensor, "cls layer neuron"]:
    """One class against the rest: ``P_c - max_{c' != c} P_c'`` (``"probability"``) or a standardised mean difference (``"smd"``)."""
    if len(stats.classes) < 2:
        raise ValueError("contrast needs at least two classes")
    if kind == "probability":
        p = stats.probability
        others = torch.stack([torch.cat([p[:c], p[c + 1 :]]).max(0).values for c in range(p.shape[0])])
        return p - others
    if kind == "smd":
        stats.mean  # raises for a class without tokens
        n = stats.tokens[:, :, None].double()
        rest_n = n.sum(0, keepdim=True) - n
        mu = stats.sum / n
        rest_mu = (stats.sum.sum(0, keepdim=True) - stats.sum) / rest_n.clamp(min=1)
        var = (stats.sumsq / n - mu**2).clamp(min=0)
        rest_var = ((stats.sumsq.sum(0, keepdim=True) - stats.sumsq) / rest_n.clamp(min=1) - rest_mu**2).clamp(min=0)
        pooled = torch.sqrt((n * var + rest_n * rest_var) / (n + rest_n)).clamp(min=1e-12)
        return (mu - rest_mu) / pooled
    raise ValueError(f"contrast kind must be 'probability' or 'smd', got {kind!r}")


_SCORERS: dict[str, Callable[..., torch.Tensor]] = {
    "frequency": frequency_scores, "entropy": entropy_scores, "magnitude": magnitude_scores, "contrast": contrast_scores,
}


def canonical_selector(name: str) -> str:
    """The selector's canonical name (``mean_deviation`` -> ``magnitude``); raises for an unknown one."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in _SCORERS:
        raise ValueError(f"unknown selector {name!r}; choose one of {[*SELECTORS, *ALIASES]}")
    return key


def scores(stats: NeuronStats, selector: str, **options) -> Float[torch.Tensor, "cls layer neuron"]:
    """Every neuron's score for every class under ``selector`` (higher = more selective; ``-inf`` = never chosen)."""
    return _SCORERS[canonical_selector(selector)](stats, **options)


def budget_count(budget: float | int, n_neurons: int) -> int:
    """Neurons per class for a budget: a fraction ``0 < budget < 1`` of ``n_neurons``, or a count ``>= 1``."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise TypeError(f"budget must be a fraction in (0, 1) or a count >= 1, got {budget!r}")
    if 0 < budget < 1:
        return max(1, int(round(float(budget) * n_neurons)))
    if budget >= 1 and float(budget).is_integer():
        if budget > n_neurons:
            raise ValueError(f"budget {int(budget)} is more than the {n_neurons} neurons available")
        return int(budget)
    raise ValueError(f"budget must be a fraction in (0, 1) or a whole count >= 1, got {budget!r}")


def top_k(score: Float[torch.Tensor, "cls layer neuron"], budget: float | int, classes, fingerprint: dict,
          per_layer: bool = False, layers: list[int] | None = None) -> NeuronSet:
    """Keep, per class, the ``budget`` highest-scoring neurons (ties: lower layer, then lower index, first).

    Neurons scored ``-inf`` or NaN are never kept, so a class may get fewer
    than the budget (LAPE assigns few neurons to some classes).
    """
    n_cls, n_layers, d_mlp = score.shape
    layers = list(range(n_layers)) if layers is None else list(layers)
    score = score[:, layers].double().cpu().numpy()
    chosen: dict[str, dict[int, list[int]]] = {}
    for c, cls in enumerate(classes):
        groups = [(i, score[c, i]) for i in range(len(layers))] if per_layer else [(None, score[c].reshape(-1))]
        k = budget_count(budget, d_mlp if per_layer else len(layers) * d_mlp)
        picked: dict[int, list[int]] = {}
        for i, values in groups:
            valid = np.flatnonzero(np.isfinite(values))
            order = valid[np.argsort(-values[valid], kind="stable")][:k]
            for flat in order:
                li, n = (i, int(flat)) if per_layer else divmod(int(flat), d_mlp)
                picked.setdefault(layers[li], []).append(n)
        chosen[cls] = picked
    return NeuronSet(chosen, fingerprint)


def select(
    stats: NeuronStats,
    selector: str = "entropy",
    budget: float | int = 0.01,
    per_layer: bool = False,
    classes: list[str] | None = None,
    **options,
) -> NeuronSet:
    """Choose class-selective neurons: ``scores(stats, selector, **options)`` then the ``budget`` best per class.

    ``options`` go to the selector (``relative`` for frequency;
    ``filter_quantile``, ``assign_quantile`` for entropy; ``kind`` for contrast).
    Only layers the statistics read are considered.
    """
    score = scores(stats, selector, **options)
    out = top_k(score, budget, stats.classes, stats.fingerprint, per_layer=per_layer, layers=stats.layers)
    return out if classes is None else out.select(classes)


def random_like(neurons: NeuronSet, seed: int = 0, exclude: NeuronSet | None = None) -> NeuronSet:
    """A control set: per class, as many random neurons in each layer as ``neurons`` has there.

    ``exclude`` (default: ``neurons`` itself) keeps the control disjoint from
    the selected neurons of the same class where the layer has room.
    """
    exclude = neurons if exclude is None else exclude
    rng = np.random.default_rng(seed)
    out: dict[str, dict[int, np.ndarray]] = {}
    for cls in neurons.classes:
        out[cls] = {}
        for layer, idx in sorted(neurons[cls].items()):
            banned = exclude.layers(cls).get(layer, np.zeros(0, np.int64)) if cls in exclude else np.zeros(0, np.int64)
            pool = np.setdiff1d(np.arange(neurons.d_mlp), banned)
            if len(pool) < len(idx):
                pool = np.arange(neurons.d_mlp)
            out[cls][layer] = rng.choice(pool, size=len(idx), replace=False)
    return NeuronSet(out, neurons.fingerprint)
