"""Selectors on hand-made statistics where the class-selective neurons are planted and known."""

import numpy as np
import pytest
import torch

from lalm_lens.neurons import NeuronStats, random_like, scores, select
from lalm_lens.neurons.selectors import budget_count

CLASSES = ["neutral", "happy", "angry", "sad"]
FINGERPRINT = {"arch": "synthetic", "n_layers": 3, "d_mlp": 50, "site": "mlp.hook_gate"}


@pytest.fixture
def planted():
    """Background neurons fire on 10-50 % of every class's tokens (seeded) with mean 0.1; neuron (layer c % 3, 10 + c)
    fires on 90 % of class c's tokens and 10 % of the others', with mean 2 on c; neuron (2, 49) fires on 95 % of
    every class's tokens (busy, not selective)."""
    stats = NeuronStats(CLASSES, FINGERPRINT)
    n = 1000
    stats.tokens[:] = n
    stats.fires[:] = torch.randint(100, 500, stats.fires.shape, generator=torch.Generator().manual_seed(0))
    stats.sum[:] = 0.1 * n
    stats.sumsq[:] = 0.02 * n
    for c in range(4):
        stats.fires[:, c % 3, 10 + c] = 100
        stats.fires[c, c % 3, 10 + c] = 900
        stats.sum[c, c % 3, 10 + c] = 2.0 * n
        stats.sumsq[c, c % 3, 10 + c] = 4.5 * n
    stats.fires[:, 2, 49] = 950
    return stats


@pytest.mark.parametrize("selector", ["frequency", "entropy", "magnitude", "mean_deviation", "contrast"])
def test_each_selector_finds_the_planted_neurons(planted, selector):
    options = {"relative": True} if selector == "frequency" else {}
    chosen = select(planted, selector, budget=1, **options)
    for c, cls in enumerate(CLASSES):
        assert {l: v.tolist() for l, v in chosen[cls].items()} == {c % 3: [10 + c]}, cls


def test_plain_frequency_prefers_busy_neurons(planted):
    """P_c alone ranks a neuron that fires for everything first: the reason for relative=True or contrast."""
    chosen = select(planted, "frequency", budget=1)
    assert all({l: v.tolist() for l, v in chosen[cls].items()} == {2: [49]} for cls in CLASSES)


def test_smd_contrast_and_lape_quantile_filter(planted):
    smd = scores(planted, "contrast", kind="smd")
    assert smd[1, 1, 11] == smd[1].max() and smd[1, 1, 11] > 1
    lape = scores(planted, "entropy", filter_quantile=0.99, assign_quantile=0.99)
    # the 99th percentile of the 600 P values is 0.9: only the planted neurons (for their class) and the busy
    # neuron (for every class) pass, and the busy one ranks last, having the highest entropy
    assert torch.isfinite(lape).sum() == 4 + 4
    chosen = select(planted, "entropy", budget=5, filter_quantile=0.99, assign_quantile=0.99)
    assert chosen.counts().sum(1).tolist() == [2] * 4 and {l: v.tolist() for l, v in chosen["sad"].items()} == {0: [13], 2: [49]}


def test_budgets_fraction_count_global_and_per_layer(planted):
    assert budget_count(0.02, 150) == 3 and budget_count(7, 150) == 7
    assert select(planted, "contrast", 0.02).counts().sum(1).tolist() == [3] * 4
    per_layer = select(planted, "contrast", 2, per_layer=True)
    assert per_layer.counts().tolist() == [[2, 2, 2]] * 4
    for bad, error in ((0, ValueError), (1.5, ValueError), (151, ValueError), (True, TypeError), ("1", TypeError)):
        with pytest.raises(error):
            select(planted, "contrast", bad)
    with pytest.raises(ValueError, match="unknown selector 'loudest'"):
        select(planted, "loudest")


def test_random_control_keeps_layer_counts_and_avoids_the_selection(planted):
    chosen = select(planted, "contrast", 0.05)
    control = random_like(chosen, seed=3)
    assert np.array_equal(control.counts(), chosen.counts())
    assert all(control.jaccard(chosen, cls) == 0 for cls in CLASSES)
    assert control == random_like(chosen, seed=3) and control != random_like(chosen, seed=4)
