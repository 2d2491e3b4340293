"""Neuron sites: which MLP tensor of which stack (decoder or audio encoder) a neuron study reads or edits."""

from __future__ import annotations

from dataclasses import dataclass

from .. import names

DECODER_SITES = ("mlp.hook_gate", "mlp.hook_post", "mlp.hook_pre")
ENCODER_SITES = ("mlp.hook_post",)


@dataclass(frozen=True)
class Site:
    """A neuron site: ``stack`` ("decoder" or "encoder") and the hook ``site`` inside each block.

    Build one with :meth:`parse` from ``"mlp.hook_gate"`` (decoder, the
    default: act(gate), whose positive firings emotion-neuron work counts),
    ``"mlp.hook_post"``, ``"audio.mlp.hook_post"`` or a name template such as
    ``"audio.blocks.{i}.mlp.hook_post"``.
    """

    stack: str
    site: str

    @classmethod
    def parse(cls, spec: "str | Site") -> "Site":
        if isinstance(spec, Site):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"a neuron site is a string such as 'mlp.hook_gate', got {type(spec).__name__}")
        text = spec.replace("{i}", "0").replace("{layer}", "0")
        parsed = names.parse(text)
        if parsed.stack is not None:
            stack, site = parsed.stack, parsed.site
        elif text.startswith("audio."):
            stack, site = "encoder", text.removeprefix("audio.")
        else:
            stack, site = "decoder", text
        allowed = DECODER_SITES if stack == "decoder" else ENCODER_SITES if stack == "encoder" else ()
        if site not in allowed:
            choices = [*DECODER_SITES, *(f"audio.{s}" for s in ENCODER_SITES)]
            raise ValueError(f"unknown neuron site {spec!r}; choose one of {choices}")
        return cls(stack, site)

    def hook_name(self, layer: int) -> str:
        """The hook point of this site in block ``layer``."""
        return names.block(self.stack, layer, self.site)

    @property
    def label(self) -> str:
        """``"mlp.hook_gate"`` for the decoder, ``"audio.mlp.hook_post"`` for the encoder."""
        return self.site if self.stack == "decoder" else f"audio.{self.site}"

    @property
    def is_encoder(self) -> bool:
        return self.stack == "encoder"

    def shape(self, cfg) -> tuple[int, int]:
        """``(n_layers, n_neurons)`` of this site in a model with config ``cfg``."""
        if self.is_encoder:
            return int(cfg.audio_n_layers), int(cfg.audio_d_mlp)
        return int(cfg.n_layers), int(cfg.d_mlp)

    def fingerprint(self, cfg) -> dict:
        """What a neuron index means: the architecture, the stack's shape and the site."""
        n_layers, d_mlp = self.shape(cfg)
        return {"arch": str(cfg.arch), "n_layers": n_layers, "d_mlp": d_mlp, "site": self.label}
