"""NeuronStats: per-class firing counts and moments of MLP neurons, accumulated while the model runs.

Identifying class-selective neurons needs, per class ``c``, layer ``l`` and
neuron ``n``, how often the neuron fires on ``c``'s tokens and the first two
moments of its activation. These are sums, so they are read batch by batch
during ``run_with_hooks`` (no cache is kept: memory is ``classes x layers x
neurons`` whatever the dataset size), two accumulators add, and shards
computed on several processes or GPUs are summed with :meth:`NeuronStats.all_reduce`.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file

from ..batch import LALMBatch
from .positions import check_positions, decoder_mask, encoder_mask
from .sites import Site

_FIELDS = ("fires", "sum", "sumsq", "tokens", "examples")


class NeuronStats:
    """Streaming, mergeable neuron statistics per class, at one site.

    ``fires[c, l, n]`` counts tokens of class ``c`` where neuron ``n`` of
    layer ``l`` is above ``threshold`` (0: "fires" means act(gate) > 0);
    ``sum`` / ``sumsq`` hold the activation's sum and sum of squares over the
    same tokens (float64), ``tokens[c, l]`` how many tokens were pooled and
    ``examples[c]`` how many examples. ``positions`` picks the pooled
    positions: ``"all"`` real tokens (default), ``"audio"``, ``"text"`` or
    ``"last"`` (encoder sites: the frames that feed audio tokens).

    >>> stats = NeuronStats.for_model(model, EMOTIONS)          # decoder act(gate)
    >>> for batch, labels in data:
    ...     model.run_with_hooks(batch, fwd_hooks=stats.fwd_hooks(batch, labels), return_type=None)
    >>> stats.probability   # [class, layer, neuron]
    """

    def __init__(
        self,
        classes: Sequence[str],
        fingerprint: dict,
        positions: str = "all",
        threshold: float = 0.0,
        layers: Sequence[int] | None = None,
        device: str | torch.device = "cpu",
    ):
        self.classes = tuple(str(c) for c in classes)
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ValueError(f"classes must be distinct and non-empty, got {list(classes)}")
        self.fingerprint = dict(fingerprint)
        self.site = Site.parse(self.fingerprint["site"])
        self.positions = check_positions(positions, encoder=self.site.is_encoder)
        self.threshold = float(threshold)
        n_layers, d_mlp = self.n_layers, self.d_mlp
        self.layers = list(range(n_layers)) if layers is None else sorted(int(l) for l in layers)
        bad = [l for l in self.layers if not 0 <= l < n_layers]
        if bad:
            raise ValueError(f"layers {bad} are outside 0..{n_layers - 1}")
        c = len(self.classes)
        self.fires = torch.zeros(c, n_layers, d_mlp, dtype=torch.int64, device=device)
        self.sum = torch.zeros(c, n_layers, d_mlp, dtype=torch.float64, device=device)
        self.sumsq = torch.zeros(c, n_layers, d_mlp, dtype=torch.float64, device=device)
        self.tokens = torch.zeros(c, n_layers, dtype=torch.int64, device=device)
        self.examples = torch.zeros(c, dtype=torch.int64, device=device)

    @classmethod
    def for_model(
        cls,
        model,
        classes: Sequence[str],
        site: str | Site = "mlp.hook_gate",
        positions: str = "all",
        threshold: float = 0.0,
        layers: Sequence[int] | None = None,
        device: str | torch.device = "cpu",
    ) -> "NeuronStats":
        """Empty statistics for ``model``'s neurons at ``site`` (see :class:`~lalm_lens.neurons.sites.Site`)."""
        return cls(classes, Site.parse(site).fingerprint(model.cfg), positions, threshold, layers, device)

    # -- shape ------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.fingerprint["n_layers"])

    @property
    def d_mlp(self) -> int:
        return int(self.fingerprint["d_mlp"])

    def check_model(self, model) -> None:
        """Raise if ``model``'s neurons at this site are not the ones these statistics index."""
        missing = [name for name in map(self.site.hook_name, self.layers) if name not in model.hook_dict]
        if missing:
            experts = any(".mlp.experts." in name for name in model.hook_dict)
            hint = (" its decoder MLPs are mixtures of experts (blocks.{i}.mlp.experts.{e}.*), which neuron studies do "
                    "not index; use an encoder site such as 'audio.mlp.hook_post'") if experts else ""
            raise ValueError(f"{model.cfg.arch} has no hook point {missing[0]!r}.{hint}")
        theirs = self.site.fingerprint(model.cfg)
        if theirs != self.fingerprint:
            raise ValueError(f"these neuron statistics were made for {self.fingerprint}, not for this model ({theirs})")

    # -- reading ----------------------------------------------------------
    def class_index(self, labels: Sequence[str | int]) -> list[int]:
        """Class indices of ``labels`` (names or indices; None skips an example)."""
        out = []
        for label in labels:
            if label is None:
                out.append(-1)
            elif isinstance(label, (int, np.integer)) and not isinstance(label, bool):
                if not 0 <= label < len(self.classes):
                    raise ValueError(f"class index {label} is outside 0..{len(self.classes) - 1}")
                out.append(int(label))
            elif str(label) in self.classes:
                out.append(self.classes.index(str(label)))
            else:
                raise ValueError(f"unknown class {label!r}; these statistics count {list(self.classes)}")
        return out

    def fwd_hooks(self, batch: LALMBatch, labels: Sequence[str | int]) -> list[tuple[str, "partial"]]:
        """Hooks that add one forward over ``batch`` (labels: one class per example) to the statistics."""
        if len(labels) != len(batch):
            raise ValueError(f"got {len(labels)} labels for a batch of {len(batch)} examples")
        context = {"batch": batch, "classes": self.class_index(labels), "mask": None, "counted": False}
        return [(self.site.hook_name(layer), partial(self._read, layer=layer, context=context)) for layer in self.layers]

    @torch.no_grad()
    def accumulate(self, model, batch: LALMBatch, labels: Sequence[str | int]) -> "NeuronStats":
        """Run ``model`` once over ``batch`` and add its activations; returns ``self``."""
        self.check_model(model)
        model.run_with_hooks(batch, fwd_hooks=self.fwd_hooks(batch, labels), return_type=None)
        return self

    def _read(self, tensor: Float[torch.Tensor, "row pos neuron"], hook, *, layer: int, context: dict) -> None:
        batch, classes = context["batch"], context["classes"]
        if self.site.is_encoder:
            if context["mask"] is None:
                mask, owner = encoder_mask(batch, tensor.shape[0], tensor.shape[1], tensor.device)
                context["mask"], context["rows"] = mask, [classes[b] if b >= 0 else -1 for b in owner]
            mask, row_class = context["mask"], context["rows"]
        else:
            if context["mask"] is None:
                context["mask"] = decoder_mask(batch, self.positions).to(tensor.device)
            mask, row_class = context["mask"], classes
            if tuple(tensor.shape[:2]) != tuple(mask.shape):
                raise ValueError(
                    f"{hook.name} has shape {tuple(tensor.shape)} but the batch is {tuple(mask.shape)}: NeuronStats "
                    "reads one full forward over the batch it was given (run_with_hooks, not generate)"
                )
        self.update(tensor, mask, torch.tensor(row_class, device=tensor.device), layer)
        if not context["counted"]:
            context["counted"] = True
            seen = torch.tensor([c for c in classes if c >= 0], dtype=torch.int64)
            self.examples += torch.bincount(seen, minlength=len(self.classes)).to(self.examples.device)

    @torch.no_grad()
    def update(
        self,
        acts: Float[torch.Tensor, "row pos neuron"],
        mask: torch.Tensor,
        row_class: Int[torch.Tensor, "row"],
        layer: int,
    ) -> None:
        """Add activations ``acts`` of ``layer`` at positions ``mask [row, pos]``; row ``r`` is class ``row_class[r]`` (-1: skip)."""
        if acts.shape[-1] != self.d_mlp:
            raise ValueError(f"got {acts.shape[-1]} neurons where these statistics hold {self.d_mlp}")
        keep = (row_class >= 0)[:, None] & mask.bool()
        x = acts.detach()[keep].float()  # [token, neuron]: only the pooled positions
        rows = row_class[:, None].expand_as(keep)[keep]
        onehot = torch.nn.functional.one_hot(rows, len(self.classes)).T.to(torch.float32)  # [class, token]
        device = self.sum.device
        self.sum[:, layer] += (onehot @ x).to(device, torch.float64)
        self.sumsq[:, layer] += (onehot @ (x * x)).to(device, torch.float64)
        self.fires[:, layer] += (onehot @ (x > self.threshold).to(torch.float32)).round().to(device, torch.int64)
        self.tokens[:, layer] += torch.bincount(rows, minlength=len(self.classes)).to(device)

    # -- merging ----------------------------------------------------------
    def _check_compatible(self, other: "NeuronStats") -> None:
        if not isinstance(other, NeuronStats):
            raise TypeError(f"can only add NeuronStats, not {type(other).__name__}")
        mine = (self.classes, self.fingerprint, self.positions, self.threshold)
        theirs = (other.classes, other.fingerprint, other.positions, other.threshold)
        if mine != theirs:
            raise ValueError(f"cannot merge statistics of different set-ups: {mine} vs {theirs}")

    def __iadd__(self, other: "NeuronStats") -> "NeuronStats":
        self._check_compatible(other)
        for name in _FIELDS:
            getattr(self, name).add_(getattr(other, name).to(getattr(self, name).device))
        self.layers = sorted(set(self.layers) | set(other.layers))
        return self

    def __add__(self, other: "NeuronStats") -> "NeuronStats":
        out = self.copy()
        out += other
        return out

    def __radd__(self, other):
        return self if other == 0 else self.__add__(other)

    def copy(self) -> "NeuronStats":
        out = NeuronStats(self.classes, self.fingerprint, self.positions, self.threshold, self.layers, self.sum.device)
        for name in _FIELDS:
            setattr(out, name, getattr(self, name).clone())
        return out

    def all_reduce(self, group=None) -> "NeuronStats":
        """Sum these statistics over every process of ``torch.distributed`` (in place; returns ``self``).

        Works under ``torchrun`` or ``accelerate launch``: each process
        accumulates its shard of the data, then all hold the totals. With NCCL
        the statistics must live on the process's GPU (``device=`` when made).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("torch.distributed is not initialised; call init_process_group (torchrun does) first")
        for name in _FIELDS:
            dist.all_reduce(getattr(self, name), op=dist.ReduceOp.SUM, group=group)
        return self

    # -- derived ----------------------------------------------------------
    def _per_token(self, values: torch.Tensor) -> torch.Tensor:
        empty = [c for c, n in zip(self.classes, self.tokens[:, self.layers].min(1).values.tolist()) if n == 0]
        if empty:
            raise ValueError(f"no tokens were counted for class(es) {empty}: give examples of every class")
        return values.double() / self.tokens[:, :, None].clamp(min=1)

    @property
    def probability(self) -> Float[torch.Tensor, "cls layer neuron"]:
        """Activation probability: the share of a class's tokens where the neuron fires."""
        return self._per_token(self.fires)

    @property
    def mean(self) -> Float[torch.Tensor, "cls layer neuron"]:
        """Mean activation per class."""
        return self._per_token(self.sum)

    @property
    def var(self) -> Float[torch.Tensor, "cls layer neuron"]:
        """Activation variance per class (population)."""
        return (self._per_token(self.sumsq) - self.mean**2).clamp(min=0)

    @property
    def overall_mean(self) -> Float[torch.Tensor, "layer neuron"]:
        """Mean activation over the tokens of every class (what mean-ablation sets a neuron to)."""
        self._per_token(self.sum)
        return self.sum.sum(0) / self.tokens.sum(0)[:, None].clamp(min=1)

    # -- files ------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write to a safetensors file (metadata: classes, fingerprint, positions, threshold, layers)."""
        path = Path(path)
        meta = {"classes": list(self.classes), "fingerprint": self.fingerprint, "positions": self.positions,
                "threshold": self.threshold, "layers": self.layers}
        save_file({n: getattr(self, n).cpu().contiguous() for n in _FIELDS}, str(path),
                  metadata={"neuron_stats": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "NeuronStats":
        """Read statistics written by :meth:`save`."""
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("neuron_stats", "null"))
        if meta is None:
            raise ValueError(f"{path} holds no NeuronStats (no 'neuron_stats' metadata)")
        out = cls(meta["classes"], meta["fingerprint"], meta["positions"], meta["threshold"], meta["layers"], device)
        for name, tensor in load_file(str(path), device=str(device)).items():
            setattr(out, name, tensor)
        return out

    def __repr__(self) -> str:
        counts = ", ".join(f"{c}: {int(n)}" for c, n in zip(self.classes, self.examples.tolist()))
        return f"NeuronStats({self.fingerprint['site']}, {self.n_layers}x{self.d_mlp}, positions={self.positions!r}, examples {{{counts}}})"
