"""NeuronSet: chosen neurons per class and layer, tied to the model shape and site they index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
from jaxtyping import Int

from .sites import Site


class NeuronSet:
    """``class -> layer -> sorted neuron indices`` at one site of one model shape.

    ``fingerprint`` (arch, n_layers, d_mlp, site) says what the indices mean;
    interventions refuse a set whose fingerprint is not the model's.
    Sets of the same fingerprint combine with ``|``, ``&`` and ``-`` (class by
    class, layer by layer) and compare with :meth:`jaccard`.
    """

    def __init__(self, neurons: Mapping[str, Mapping[int, Iterable[int]]], fingerprint: dict):
        self.fingerprint = dict(fingerprint)
        self.site = Site.parse(self.fingerprint["site"])
        n_layers, d_mlp = self.n_layers, self.d_mlp
        self.neurons: dict[str, dict[int, np.ndarray]] = {}
        for cls, layers in neurons.items():
            self.neurons[str(cls)] = {}
            for layer, idx in layers.items():
                layer = int(layer)
                idx = np.unique(np.asarray(list(idx) if not isinstance(idx, (np.ndarray, torch.Tensor)) else idx, dtype=np.int64))
                if not 0 <= layer < n_layers:
                    raise ValueError(f"class {cls!r}: layer {layer} is outside 0..{n_layers - 1}")
                if idx.size and (idx.min() < 0 or idx.max() >= d_mlp):
                    raise ValueError(f"class {cls!r} layer {layer}: neuron indices must lie in 0..{d_mlp - 1}")
                if idx.size:
                    self.neurons[str(cls)][layer] = idx

    # -- shape and access ---------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.fingerprint["n_layers"])

    @property
    def d_mlp(self) -> int:
        return int(self.fingerprint["d_mlp"])

    @property
    def classes(self) -> list[str]:
        return list(self.neurons)

    def __getitem__(self, cls: str) -> dict[int, np.ndarray]:
        if cls not in self.neurons:
            raise KeyError(f"no class {cls!r} in this NeuronSet; it holds {self.classes}")
        return self.neurons[cls]

    def __contains__(self, cls: str) -> bool:
        return cls in self.neurons

    def layers(self, classes: str | Iterable[str] | None = None) -> dict[int, np.ndarray]:
        """``layer -> indices`` of the union of ``classes`` (all classes when None)."""
        chosen = self.classes if classes is None else [classes] if isinstance(classes, str) else list(classes)
        out: dict[int, np.ndarray] = {}
        for cls in chosen:
            for layer, idx in self[cls].items():
                out[layer] = np.union1d(out.get(layer, np.zeros(0, np.int64)), idx)
        return dict(sorted(out.items()))

    def counts(self) -> Int[np.ndarray, "cls layer"]:
        """How many neurons each class has in each layer."""
        return np.array([[len(self.neurons[c].get(l, ())) for l in range(self.n_layers)] for c in self.classes], dtype=np.int64)

    def size(self, cls: str | None = None) -> int:
        """Number of neurons of ``cls`` (of the union of all classes when None)."""
        return int(sum(len(v) for v in self.layers(cls).values()))

    def mask(self, cls: str | None = None) -> torch.Tensor:
        """Boolean ``[layer, neuron]`` mask of ``cls`` (the union when None)."""
        out = torch.zeros(self.n_layers, self.d_mlp, dtype=torch.bool)
        for layer, idx in self.layers(cls).items():
            out[layer, torch.from_numpy(idx)] = True
        return out

    def check_model(self, model) -> None:
        """Raise unless ``model`` has the arch, shape and site these indices were chosen on."""
        theirs = self.site.fingerprint(model.cfg)
        if theirs != self.fingerprint:
            raise ValueError(
                f"this NeuronSet was chosen on {self.fingerprint}, but the model has {theirs}: "
                "select neurons on this model (its indices mean nothing here)"
            )

    # -- set operations -----------------------------------------------------
    def _combine(self, other: "NeuronSet", op) -> "NeuronSet":
        if not isinstance(other, NeuronSet):
            raise TypeError(f"can only combine with a NeuronSet, not {type(other).__name__}")
        if other.fingerprint != self.fingerprint:
            raise ValueError(f"cannot combine NeuronSets of different models/sites: {self.fingerprint} vs {other.fingerprint}")
        out = {}
        for cls in dict.fromkeys([*self.classes, *other.classes]):
            mine, theirs = self.neurons.get(cls, {}), other.neurons.get(cls, {})
            empty = np.zeros(0, np.int64)
            out[cls] = {l: op(mine.get(l, empty), theirs.get(l, empty)) for l in set(mine) | set(theirs)}
        return NeuronSet(out, self.fingerprint)

    def __or__(self, other: "NeuronSet") -> "NeuronSet":
        return self._combine(other, np.union1d)

    def __and__(self, other: "NeuronSet") -> "NeuronSet":
        return self._combine(other, np.intersect1d)

    def __sub__(self, other: "NeuronSet") -> "NeuronSet":
        return self._combine(other, np.setdiff1d)

    def __eq__(self, other) -> bool:
        if not isinstance(other, NeuronSet) or other.fingerprint != self.fingerprint or set(self.classes) != set(other.classes):
            return False
        return all(self.layers(c).keys() == other.layers(c).keys()
                   and all(np.array_equal(v, other.layers(c)[l]) for l, v in self.layers(c).items()) for c in self.classes)

    def jaccard(self, other: "NeuronSet", cls: str | None = None, other_cls: str | None = None) -> float:
        """|A ∩ B| / |A ∪ B| of class ``cls`` here and ``other_cls`` (default: the same class) there; None: all classes pooled."""
        if other.fingerprint != self.fingerprint:
            raise ValueError(f"cannot compare NeuronSets of different models/sites: {self.fingerprint} vs {other.fingerprint}")
        a, b = self.mask(cls), other.mask(cls if other_cls is None else other_cls)
        union = int((a | b).sum())
        return float((a & b).sum()) / union if union else 1.0

    def overlap_matrix(self, other: "NeuronSet | None" = None) -> np.ndarray:
        """Jaccard of every class here (rows) with every class of ``other`` (columns; default: this set)."""
        other = self if other is None else other
        return np.array([[self.jaccard(other, a, b) for b in other.classes] for a in self.classes])

    def select(self, classes: Iterable[str]) -> "NeuronSet":
        """A set with only ``classes``."""
        return NeuronSet({c: self[c] for c in classes}, self.fingerprint)

    # -- files ------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"fingerprint": self.fingerprint,
                "neurons": {c: {str(l): v.tolist() for l, v in layers.items()} for c, layers in self.neurons.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "NeuronSet":
        if not isinstance(data, dict) or "fingerprint" not in data or "neurons" not in data:
            raise ValueError("not a NeuronSet: expected a dict with 'fingerprint' and 'neurons'")
        return cls({c: {int(l): v for l, v in layers.items()} for c, layers in data["neurons"].items()}, data["fingerprint"])

    def save(self, path: str | Path) -> Path:
        """Write as JSON (``.json``) or safetensors (``.safetensors``: one ``[layer, neuron]`` mask per class)."""
        path = Path(path)
        if path.suffix == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=1))
        elif path.suffix == ".safetensors":
            from safetensors.torch import save_file

            masks = {c: self.mask(c).to(torch.uint8) for c in self.classes}
            save_file(masks, str(path), metadata={"fingerprint": json.dumps(self.fingerprint), "classes": json.dumps(self.classes)})
        else:
            raise ValueError(f"save a NeuronSet as .json or .safetensors, not {path.suffix or 'a file without suffix'}")
        return path

    @classmethod
    def load(cls, path: str | Path, model=None) -> "NeuronSet":
        """Read a set written by :meth:`save`; with ``model``, also check that it was chosen on that model's shape."""
        path = Path(path)
        if path.suffix == ".json":
            out = cls.from_dict(json.loads(path.read_text()))
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                if "fingerprint" not in meta:
                    raise ValueError(f"{path} holds no NeuronSet (no fingerprint metadata)")
                masks = {c: f.get_tensor(c).bool() for c in json.loads(meta["classes"])}
            neurons = {c: {l: torch.nonzero(m[l]).flatten().numpy() for l in range(m.shape[0])} for c, m in masks.items()}
            out = cls(neurons, json.loads(meta["fingerprint"]))
        else:
            raise ValueError(f"load a NeuronSet from .json or .safetensors, not {path.suffix or 'a file without suffix'}")
        if model is not None:
            out.check_model(model)
        return out

    # -- display ------------------------------------------------------------
    def histogram(self, ax=None, title: str | None = None):
        """Bar chart of selected neurons per layer, one bar per class; returns the Axes (``ax.figure.savefig(...)``)."""
        if ax is None:
            from matplotlib.figure import Figure

            ax = Figure(figsize=(max(4.0, 0.5 * self.n_layers + 2), 3), layout="constrained").subplots()
        counts = self.counts()
        width = 0.8 / max(len(self.classes), 1)
        for i, cls in enumerate(self.classes):
            ax.bar(np.arange(self.n_layers) + (i - (len(self.classes) - 1) / 2) * width, counts[i], width, label=cls)
        ax.set_xlabel(f"layer ({'encoder' if self.site.is_encoder else 'decoder'})")
        ax.set_ylabel("neurons selected")
        ax.set_xticks(range(self.n_layers))
        ax.set_title(title or f"neurons per layer ({self.fingerprint['site']})", fontsize="medium")
        ax.legend(fontsize="small")
        return ax

    def __repr__(self) -> str:
        sizes = ", ".join(f"{c}: {self.size(c)}" for c in self.classes)
        return f"NeuronSet({self.fingerprint['site']} of {self.fingerprint['arch']}, {{{sizes}}})"
