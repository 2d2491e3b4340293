"""The one place that builds and parses hook names.

Names follow TransformerLens: ``blocks.{layer}.{site}`` for the decoder,
``audio.blocks.{layer}.{site}`` for the audio encoder, ``mimo.blocks.{layer}.{site}``
for Kimi-Audio's audio-output branch, and layer-free names (``hook_embed``,
``audio.hook_out``, ``ln_final.hook_normalized``...) for the rest.

Every family fills the same names; where its projector merges encoder frames,
``audio.hook_out`` keeps the encoder's frame axis and ``hook_audio_embeds``
has the (shorter) token axis: Voxtral and GLM-ASR concatenate four
consecutive frames into one token (``Adapter.embed_tokens`` gives the length).
``audio.hook_out`` is always the tensor the projector path starts from after
the encoder (Music Flamingo: after its rotary time embedding).
"""

from __future__ import annotations

from typing import NamedTuple

STACKS = {"blocks": "decoder", "audio.blocks": "encoder", "mimo.blocks": "mimo"}
PREFIXES = {stack: prefix for prefix, stack in STACKS.items()}


class HookName(NamedTuple):
    """A parsed hook name: which stack of blocks (None outside blocks), which layer, and the site in the block."""

    stack: str | None
    layer: int | None
    site: str


def block(stack: str, layer: int, site: str) -> str:
    """``{prefix}.{layer}.{site}`` for ``stack`` in ``"decoder"``, ``"encoder"``, ``"mimo"``."""
    if stack not in PREFIXES:
        raise ValueError(f"unknown stack {stack!r}; one of {sorted(PREFIXES)}")
    return f"{PREFIXES[stack]}.{int(layer)}.{site}"


def decoder(layer: int, site: str) -> str:
    """``blocks.{layer}.{site}``, e.g. ``decoder(3, "mlp.hook_gate")``."""
    return block("decoder", layer, site)


def encoder(layer: int, site: str) -> str:
    """``audio.blocks.{layer}.{site}``, e.g. ``encoder(0, "mlp.hook_post")``."""
    return block("encoder", layer, site)


def parse(name: str) -> HookName:
    """Split a hook name into ``HookName(stack, layer, site)``; names outside blocks give ``(None, None, name)``."""
    for prefix, stack in sorted(STACKS.items(), key=lambda item: -len(item[0])):
        if name.startswith(prefix + "."):
            index, _, site = name[len(prefix) + 1 :].partition(".")
            if index.isdigit() and site:
                return HookName(stack, int(index), site)
    return HookName(None, None, name)


def layer_of(name: str) -> int:
    """The block index in ``name``; raises for names outside blocks."""
    layer = parse(name).layer
    if layer is None:
        raise ValueError(f"hook point {name!r} is not inside a block and has no layer")
    return layer


def is_audio(name: str) -> bool:
    """Whether ``name`` is an audio-encoder or projector hook (its batch axis is the encoded clip or window)."""
    return name.startswith("audio.") or name == "hook_audio_embeds"
