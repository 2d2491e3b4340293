"""Class-selective neurons: streaming statistics, selectors and the chosen sets."""

from .neuron_set import NeuronSet
from .positions import POSITIONS
from .selectors import SELECTORS, canonical_selector, random_like, scores, select
from .sites import Site
from .stats import NeuronStats

__all__ = ["NeuronSet", "NeuronStats", "POSITIONS", "SELECTORS", "Site", "canonical_selector", "random_like", "scores", "select"]
