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

Names added where a family has parts the common names do not cover (their
shapes: README "Hook points"); each is one HF tensor:

Conformer encoder blocks (Granite-Speech, Gemma-3n), ``audio.blocks.{layer}.``:
``ff1.hook_post`` - neurons of the first half-step feed-forward (``mlp.*`` is the second);
``hook_ff1_out`` - that feed-forward's output times 0.5, as added to the residual;
``hook_resid_pre_attn`` / ``hook_resid_pre_conv`` / ``hook_resid_pre_mlp`` / ``hook_resid_pre_norm`` -
the residual stream entering attention / the convolution module / the second feed-forward / the final LayerNorm;
``conv.hook_glu`` - the gated channels entering the depthwise convolution;
``conv.hook_post`` - SiLU(BatchNorm(depthwise conv)) (Gemma-3n: RMSNorm), the convolution module's neurons;
``hook_conv_out`` - the convolution module's output.
Mid-encoder CTC feedback: ``audio.hook_ctc_logits`` - the CTC head's logits;
``audio.hook_ctc_out`` - their softmax projected back and added after the middle block.
Q-Former projector, ``audio.qformer.blocks.{layer}.`` (stack ``"qformer"``; batch = window):
``hook_resid_pre`` / ``hook_resid_post`` - layer input (layer 0: the normalised learned queries) / output;
``attn.hook_pattern`` / ``hook_attn_out`` / ``hook_resid_mid`` - query self-attention, its output
projection, the stream after its add & LayerNorm; ``cross_attn.hook_pattern`` / ``hook_cross_attn_out`` /
``hook_resid_mid_cross`` - the same for the queries' attention to the window's encoder frames;
``mlp.hook_post`` / ``hook_mlp_out`` - MLP neurons / output.
Mixture-of-experts decoder blocks (Qwen3-Omni), ``blocks.{layer}.mlp.`` (replacing ``hook_pre/gate/post``):
``hook_router_logits`` - the router's logits, one per expert (an edit re-routes);
``hook_router_weights`` - each expert's weight in the block's sum (top-k, renormalised; 0 for experts not chosen);
``experts.{e}.hook_pre`` / ``hook_gate`` / ``hook_post`` - expert ``e``'s gate pre-activation / act(gate) /
act(gate)·up, its neurons (zero at positions not routed to it).
AltUp decoder blocks (Gemma-3n), ``blocks.{layer}.`` (``hook_resid_pre`` / ``hook_resid_post`` are the active stream):
``hook_altup_pre`` / ``hook_altup_post`` - every AltUp stream entering / leaving the layer, ``[batch, pos, stream, d]``;
``hook_altup_predicted`` - the active stream's prediction, what the block reads;
``laurel.hook_rank`` / ``hook_laurel_out`` - the Laurel block's low-rank activations / its output;
``mlp.hook_sparse`` - the gate pre-activation after the Gaussian top-k (layers with activation sparsity);
``per_layer.hook_input`` / ``per_layer.hook_gate`` / ``per_layer.hook_gated`` / ``hook_per_layer_out`` - the layer's
per-layer embedding / its gate / their product / its normed projection, added to the other streams;
``hook_altup_merged`` (no layer) - the mean of the streams after the last layer, the final norm's input.
"""

from __future__ import annotations

from typing import NamedTuple

STACKS = {"blocks": "decoder", "audio.blocks": "encoder", "mimo.blocks": "mimo", "audio.qformer.blocks": "qformer"}
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
