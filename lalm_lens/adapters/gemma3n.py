"""Gemma-3n (E2B, E4B), audio path: USM Conformer encoder, multimodal embedder, Gemma-3n decoder with AltUp.

**Audio and spans.** The feature extractor gives 100 log-mel frames/s
(``input_features`` ``[clip, frame, 128]``, padded to the batch's longest
clip, at most 30 s). Two stride-2 convolutions leave 25 encoder frames/s; the
Conformer output keeps every fourth frame, so token ``j`` of a clip is encoder
frame ``4 j`` (mel frames from ``16 j``): **6.25 tokens/s**, 160 ms each.
The processor gives *every* clip the same **188 soft tokens** (30 s), whatever
its length: the first ``ceil(mel_frames / 16)`` carry the clip, the rest are
one padding embedding (the audio embedder's last id), computed by no encoder
frame. Each clip is one :class:`~lalm_lens.spans.AudioSpan` of all its 188
placeholders, so a 2 s clip's span lasts 30.08 s and its tokens past
:meth:`Gemma3nAdapter.real_tokens` (13 for 2 s) hold padding, with no encoder
frames behind them (``audio.*`` and ``hook_audio_embeds`` stop at the batch's
longest clip).
``frames_per_token`` is 4, but only the first of the four frames is kept (the
encoder attends causally over 12 frames of left context, so that frame has
seen the earlier ones). In the HF model the last token of a clip shorter than
the batch's longest depends on the batch: the subsampling convolutions look
two mel frames ahead, into the log-mel floor of the padding, where the
longest clip sees the convolution's zero padding.

**Encoder hooks** (``audio.*``, one row per clip). ``audio.hook_features`` is
``[clip, mel, frame]`` (the HF tensor transposed). Each Conformer block is
FFN/2, attention, light convolution, FFN/2, RMSNorm, named as
Granite-Speech's Conformer: ``hook_resid_pre`` (block input),
``ff1.hook_post`` / ``hook_ff1_out`` (first half-step FFN's neurons / its
output times 0.5, as the residual adds it), ``hook_resid_pre_attn``,
``attn.hook_pattern``, ``hook_attn_out`` (after the attention's post-norm:
what the residual adds), ``hook_resid_pre_conv`` (after padding frames are
zeroed), ``conv.hook_glu`` (the GLU output the causal depthwise convolution
reads), ``conv.hook_post`` (SiLU(RMSNorm(conv))), ``hook_conv_out``,
``hook_resid_pre_mlp``, ``mlp.hook_post`` / ``hook_mlp_out`` (the second
half-step FFN, as the first), ``hook_resid_pre_norm``, ``hook_resid_post``
(after the block's final norm). The encoder attends in chunks of 12 frames,
each over itself and the 12 frames before it, causally; ``attn.hook_pattern``
shows it as a full ``[clip, head, frame, frame]`` map, zero outside each
frame's 13-frame causal window (the frame and the 12 before it; 750 x 750 per
head for 30 s, 31 times the chunked form). Edits outside the window are
dropped: the model computes nothing there.
``audio.hook_out`` is the encoder output ``[clip, token, d_audio]`` (every
fourth frame, padding zeroed) and ``hook_audio_embeds`` the embedder's output
``[clip, token, d_model]`` before the padding tokens are appended: both have
``ceil(frames / 4)`` tokens for the batch's longest clip.

**Decoder hooks.** Gemma-3n carries four AltUp streams ``[stream, batch, pos,
d]``; each layer predicts all streams from all, runs one transformer block on
the active stream's prediction, and corrects the streams with its output.
``hook_resid_pre`` / ``hook_resid_post`` are the active stream (0) of the
layer's input / output (so ``resid_post`` of layer ``i`` is ``resid_pre`` of
``i + 1``); ``hook_altup_pre`` / ``hook_altup_post`` are all streams,
``[batch, pos, stream, d_model]``. Inside the block: ``hook_altup_predicted``
(the active stream's prediction, what the block reads), ``laurel.hook_rank`` /
``hook_laurel_out`` (Laurel's low-rank activations / its output),
``attn.hook_q/k/v/z/pattern`` (q, k, v before their RMS norms and RoPE; the
scores are not scaled by ``1/sqrt(d_head)``) and ``hook_attn_out``
(``o_proj``'s output, before the post-attention norm), ``hook_resid_mid`` (``(predicted +
norm(attn_out) + laurel_out) / sqrt 2``, the MLP's residual),
``mlp.hook_pre/gate/post``, ``mlp.hook_sparse`` (layers with activation
sparsity: the gate pre-activation after the Gaussian top-k,
``relu(pre - mean - z std)``, what ``act`` reads), ``hook_mlp_out`` (after the
post-MLP norm: ``hook_resid_mid + hook_mlp_out`` is what AltUp's correction
spreads to the streams), then the per-layer input: ``per_layer.hook_input``
(this layer's slice of the per-layer embeddings), ``per_layer.hook_gate``,
``per_layer.hook_gated`` and ``hook_per_layer_out`` (added to streams 1-3).
KV-shared layers (the last ``num_kv_shared_layers``) have no ``hook_k`` /
``hook_v``: they reuse the keys and values of :meth:`Gemma3nAdapter.kv_source`
(edit them there). Sliding-window layers' patterns are zero outside the
window; while decoding with a cache their keys, and so their patterns, are
only the last ``sliding_window`` positions.
``hook_altup_merged`` is the final norm's input (the magnitude-matched mean of
the streams), and the logits are ``30 tanh(unembed(ln_final(x)) / 30)``
(final soft-capping), so TransformerLens's residual algebra
(``decompose_resid``, the logit lens at the last layer) does not apply.

Without timm the vision tower is :class:`AudioOnlyVisionTower` (see there).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, replace

import einops
import torch
from jaxtyping import Float
from torch import nn
from torch.overrides import TorchFunctionMode
from transformers import AutoModel, Gemma3nForConditionalGeneration, Gemma3nVisionConfig, PreTrainedModel

from ..config import LALMConfig
from ..hook_points import LazyHookPoint, Tap
from .base import (
    Adapter, DecoderAttention, FinalNorm, HookBuilder, HookFrames, claim_attention, place, scaled, transposed,
)

SOFT_TOKEN_SECONDS = 0.16  # 16 mel frames of 10 ms per token
MAX_SECONDS = 30.0  # the feature extractor's max_length, 480 000 samples at 16 kHz


class AudioOnlyVisionTower(PreTrainedModel):
    """Stands in for Gemma-3n's timm MobileNet-v5 vision tower where timm is not installed: no weights, no images.

    ``Gemma3nModel`` builds its vision tower through ``AutoModel`` (a
    ``TimmWrapperModel``, which needs timm and torchvision) even for text and
    audio. lalm-lens studies the audio path only, so without timm the tower is
    this empty module: audio and text run the unchanged HF code, a real
    checkpoint's vision weights are skipped on loading, and images raise.
    """

    config_class = Gemma3nVisionConfig
    base_model_prefix = "vision_tower"
    main_input_name = "pixel_values"
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = True  # it attends to nothing: any setting is fine

    def __init__(self, config: Gemma3nVisionConfig):
        super().__init__(config)
        self.post_init()

    def forward(self, *args, **kwargs):
        raise NotImplementedError("Gemma-3n image input needs its timm vision tower: pip install timm torchvision")


if importlib.util.find_spec("timm") is None:
    AutoModel.register(Gemma3nVisionConfig, AudioOnlyVisionTower, exist_ok=True)


class SharedKVAttention(DecoderAttention):
    """``blocks.{i}.attn`` of a KV-shared layer: it has queries and an output but reuses layer ``source``'s keys
    and values, so ``W_K`` / ``W_V`` / ``b_K`` / ``b_V`` are that layer's."""

    def __init__(self, attention: nn.Module, source: nn.Module):
        super().__init__(attention)
        object.__setattr__(self, "source", DecoderAttention(source))

    W_K = property(lambda self: self.source.W_K)
    W_V = property(lambda self: self.source.W_V)
    b_K = property(lambda self: self.source.b_K)
    b_V = property(lambda self: self.source.b_V)


class GemmaFinalNorm(FinalNorm):
    """``model.ln_final`` on Gemma-3n's RMSNorm (its epsilon is ``variance_epsilon`` from transformers 5.25 on,
    ``eps`` before)."""

    @property
    def eps(self) -> float:
        return self.norm.variance_epsilon if hasattr(self.norm, "variance_epsilon") else self.norm.eps


@dataclass
class WindowLayout:
    """Where each entry of the chunked ``[batch, head, chunk, query, context]`` softmax sits in a ``frame x frame`` map."""

    block: torch.Tensor  # flat indices into [chunk * query * context]
    full: torch.Tensor  # flat indices into [frame * frame]

    @classmethod
    def of(cls, chunks: int, window: torch.Tensor, past: int, frames: int) -> "WindowLayout":
        """``window`` is the attention's ``[query, context]`` causal mask: entries outside it are left out."""
        chunk, context = window.shape
        u, w, c = torch.meshgrid(torch.arange(chunks), torch.arange(chunk), torch.arange(context), indexing="ij")
        query, key = u * chunk + w, u * chunk - past + c
        inside = (query < frames) & (key >= 0) & (key < frames) & window.cpu()[w, c]
        return cls(torch.arange(chunks * chunk * context).view_as(u)[inside], (query * frames + key)[inside])


class LocalPattern:
    """``audio.blocks.{i}.attn.hook_pattern`` of a Gemma-3n Conformer attention, as ``[clip, head, frame, frame]``.

    The HF attention computes its chunked softmax inline (no attention
    function to hook), so while the point is in use the module's ``forward``
    runs under a :class:`TorchFunctionMode` that passes that one softmax
    through the point; an unused point leaves the HF forward untouched.
    """

    def __init__(self, attention: nn.Module):
        claim_attention(attention)
        attention.__dict__["_lalm_pattern"] = self
        self.attention = attention
        self.point = LazyHookPoint(on_change=self.sync)
        self.frames = 0
        self.wrapped = self.previous = None

    def sync(self) -> None:
        """Wrap the module's ``forward`` while the point has hooks; then restore what was there (the class's
        method, or an instance-level wrapper such as accelerate's)."""
        if self.point.active and self.wrapped is None:
            self.previous = self.attention.__dict__.get("forward")
            inner = self.attention.forward

            def forward(hidden_states, mask):
                self.frames = hidden_states.shape[1]
                with SoftmaxThrough(self):
                    return inner(hidden_states, mask)

            self.attention.forward = self.wrapped = forward
        elif not self.point.active and self.wrapped is not None:
            if self.previous is None:
                del self.attention.forward
            else:
                self.attention.forward = self.previous
            self.wrapped = self.previous = None

    def run(
        self, probs: Float[torch.Tensor, "batch head chunk query context"], dtype: torch.dtype
    ) -> Float[torch.Tensor, "batch head chunk query context"]:
        """Pass the chunked softmax through the point as ``[batch, head, frame, frame]`` (in ``dtype``); return
        ``probs`` itself when no hook replaced it, else the edited entries gathered back into the chunked layout."""
        a = self.attention
        batch, heads, chunks, chunk, context = probs.shape
        layout = WindowLayout.of(chunks, a.local_causal_valid_mask, a.max_past_horizon, self.frames)
        block, full = layout.block.to(probs.device), layout.full.to(probs.device)
        flat = probs.flatten(2)
        pattern = flat.new_zeros(batch, heads, self.frames * self.frames, dtype=dtype)
        pattern[..., full] = flat[..., block].to(dtype)
        pattern = pattern.view(batch, heads, self.frames, self.frames)
        new = self.point.run(pattern)
        if new is pattern:
            return probs
        edited = flat.clone()
        edited[..., block] = new.flatten(2)[..., full].to(probs.dtype)
        return edited.view_as(probs)


class SoftmaxThrough(TorchFunctionMode):
    """Passes the softmax of a :class:`LocalPattern`'s attention through its hook point; other calls run unchanged."""

    def __init__(self, pattern: LocalPattern):
        super().__init__()
        self.pattern = pattern

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is nn.functional.softmax:
            out = self.pattern.run(out, args[0].dtype)
        return out


def subsampled(frames: int, strides: list[int]) -> int:
    """Encoder frames from ``frames`` mel frames: each convolution pads ``kernel - 1`` frames at the end, so its
    output length, ``(frames + kernel - 1 - kernel) // stride + 1``, does not depend on the kernel."""
    for stride in strides:
        frames = (frames - 1) // stride + 1
    return frames


class Gemma3nAdapter(Adapter):
    hf_class = Gemma3nForConditionalGeneration
    model_types = ("gemma3n",)
    arch = "gemma3n"
    placeholder = "<audio_soft_token>"
    feature_mask_key = "input_features_mask"
    generates_from_embeds = False
    tokens_per_second = 1 / SOFT_TOKEN_SECONDS
    frames_per_token = 4

    @property
    def projector(self) -> nn.Module:
        return self.hf_model.model.embed_audio

    @property
    def attention_configs(self) -> list:
        """Only the decoder goes through the attention interface (the Conformer computes its chunked softmax inline)."""
        return [self.language_model.config]

    @property
    def max_audio_seconds(self) -> float:
        return MAX_SECONDS

    @property
    def soft_tokens(self) -> int:
        """Placeholder tokens per clip, whatever its length (188 in the released models: 30 s)."""
        return int(self.hf_model.config.audio_soft_tokens_per_image)

    def kv_source(self, layer: int) -> int:
        """The layer whose keys and values a KV-shared ``layer`` reuses (the layer itself when it computes its own)."""
        text = self.language_model.config
        if text.kv_sharing_modes[layer] != "reuse":
            return layer
        kind = text.layer_types[layer]
        return max(i for i, mode in enumerate(text.kv_sharing_modes) if mode == "store" and text.layer_types[i] == kind)

    def config(self, name: str = "") -> LALMConfig:
        text, audio = self.language_model.config, self.audio_tower.config
        widths = set(text.intermediate_size)
        if len(widths) != 1:
            raise ValueError(f"Gemma-3n decoders with MLP widths varying by layer ({sorted(widths)}) are not supported")
        return replace(
            self.make_config(name, text, None, audio.conf_num_hidden_layers), d_mlp=widths.pop(),
            audio_d_model=audio.hidden_size, audio_d_mlp=4 * audio.hidden_size, audio_n_heads=audio.conf_num_attention_heads,
        )

    # -- hook points ------------------------------------------------------
    def build_hooks(self, root: nn.Module) -> None:
        hooks, tower = HookBuilder(root), self.audio_tower
        hooks.view_point("audio.hook_features", tower, "input", arg="audio_mel", **transposed())
        for i, block in enumerate(tower.conformer):
            self.conformer_block_hooks(hooks, block, f"audio.blocks.{i}")
        hooks.point("audio.hook_out", self.projector.soft_embedding_norm, "input")
        # the embedder also embeds hard audio ids and the padding token (input_ids=) in every forward
        soft = Tap(self.projector, "output", when=lambda kwargs: kwargs.get("inputs_embeds") is not None)
        place(root, "hook_audio_embeds", soft.new_point())
        language = self.language_model
        hooks.point("hook_embed", language, "input", arg="inputs_embeds")
        for i, layer in enumerate(language.layers):
            self.gemma3n_layer_hooks(hooks, f"blocks.{i}", layer)
        hooks.point("hook_altup_merged", language.norm, "input")
        hooks.final_norm(language.norm, kind=GemmaFinalNorm)

    @staticmethod
    def conformer_block_hooks(hooks: HookBuilder, block: nn.Module, p: str) -> None:
        """``{p}.*`` on one Conformer block (FFN/2, attention, light convolution, FFN/2, norm)."""
        half = scaled(block.ffw_layer_start.post_layer_scale)  # 0.5: each feed-forward adds half its output
        hooks.point(f"{p}.hook_resid_pre", block, "input", arg="audio_encodings")
        hooks.point(f"{p}.ff1.hook_post", block.ffw_layer_start.ffw_layer_2, "input")
        hooks.view_point(f"{p}.hook_ff1_out", block.ffw_layer_start.post_layer_norm, "output", **half)
        hooks.point(f"{p}.hook_resid_pre_attn", block.attention, "input", arg="audio_encodings")
        pattern = LocalPattern(block.attention.attn)
        place(hooks.root, f"{p}.attn.hook_pattern", pattern.point)
        hooks.point(f"{p}.hook_attn_out", block.attention.post_norm, "output")
        hooks.point(f"{p}.hook_resid_pre_conv", block.lconv1d, "input", arg="audio_encodings")
        pad = block.lconv1d.causal_padding  # the depthwise convolution reads [clip, d, pad + frame]
        hooks.view_point(
            f"{p}.conv.hook_glu", block.lconv1d.depthwise_conv1d, "input",
            view=lambda t: einops.rearrange(t[..., pad:], "clip d frame -> clip frame d"),
            unview=lambda new, t: torch.cat([t[..., :pad], einops.rearrange(new, "clip frame d -> clip d frame")], dim=-1),
        )
        hooks.point(f"{p}.conv.hook_post", block.lconv1d.linear_end, "input")
        hooks.point(f"{p}.hook_conv_out", block.lconv1d.linear_end, "output")
        hooks.point(f"{p}.hook_resid_pre_mlp", block.ffw_layer_end, "input", arg="audio_encodings")
        hooks.point(f"{p}.mlp.hook_post", block.ffw_layer_end.ffw_layer_2, "input")
        hooks.view_point(f"{p}.hook_mlp_out", block.ffw_layer_end.post_layer_norm, "output", **half)
        hooks.point(f"{p}.hook_resid_pre_norm", block.norm, "input")
        hooks.point(f"{p}.hook_resid_post", block, "output")

    def gemma3n_layer_hooks(self, hooks: HookBuilder, p: str, layer: nn.Module) -> None:
        """``{p}.*`` on one Gemma-3n decoder layer (AltUp streams, Laurel, attention, MLP, per-layer input)."""
        active = layer.config.altup_active_idx
        streams = lambda t: einops.rearrange(t, "stream batch pos d -> batch pos stream d")
        unstream = lambda new, t: einops.rearrange(new, "batch pos stream d -> stream batch pos d").contiguous()

        def one_stream(new: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = t.clone()
            out[active] = new
            return out

        hooks.view_point(f"{p}.hook_altup_pre", layer, "input", streams, unstream, arg="hidden_states")
        hooks.view_point(f"{p}.hook_resid_pre", layer, "input", lambda t: t[active], one_stream, arg="hidden_states")
        hooks.point(f"{p}.hook_altup_predicted", layer.input_layernorm, "input", in_place=True)
        hooks.point(f"{p}.laurel.hook_rank", layer.laurel.linear_left, "output")
        hooks.point(f"{p}.hook_laurel_out", layer.laurel, "output")
        attention = layer.self_attn
        if attention.is_kv_shared_layer:
            source = self.language_model.layers[self.kv_source(attention.layer_idx)].self_attn
            hooks.attention(p, attention, SharedKVAttention(attention, source), sites=("q",))
        else:
            hooks.attention(p, attention)
        hooks.point(f"{p}.hook_attn_out", attention, "output")
        hooks.point(f"{p}.hook_resid_mid", layer.pre_feedforward_layernorm, "input", in_place=True)
        hooks.gated_mlp(p, layer.mlp)
        if layer.mlp.activation_sparsity > 0:
            hooks.point(f"{p}.mlp.hook_sparse", layer.mlp.act_fn, "input")
        hooks.point(f"{p}.hook_mlp_out", layer.post_feedforward_layernorm, "output")
        place(hooks.root, f"{p}.per_layer.hook_input", Tap(layer, "input", arg="per_layer_input", index=2).new_point())
        hooks.point(f"{p}.per_layer.hook_gate", layer.act_fn, "output")
        hooks.point(f"{p}.per_layer.hook_gated", layer.per_layer_projection, "input")
        hooks.point(f"{p}.hook_per_layer_out", layer.post_per_layer_input_norm, "output")
        hooks.view_point(f"{p}.hook_altup_post", layer, "output", streams, unstream)
        hooks.view_point(f"{p}.hook_resid_post", layer, "output", lambda t: t[active], one_stream)

    def family_hook_shapes(self, inputs: dict) -> dict[str, tuple[int, ...] | None]:
        """Shapes of the names Gemma-3n adds to the vocabulary (None: a vocabulary name it lacks), for these inputs."""
        text, audio = self.language_model.config, self.audio_tower.config
        batch, pos = inputs["input_ids"].shape
        clips, frames = inputs["input_features"].shape[0], self.audio_hook_frames(inputs).encoder
        d, streams = text.hidden_size, text.altup_num_inputs
        shapes: dict[str, tuple[int, ...] | None] = {}
        for i in range(audio.conf_num_hidden_layers):
            p = f"audio.blocks.{i}"
            shapes[f"{p}.ff1.hook_post"] = (clips, frames, 4 * audio.hidden_size)
            sites = ("hook_ff1_out", "conv.hook_glu", "conv.hook_post", "hook_conv_out", "hook_resid_pre_attn",
                     "hook_resid_pre_conv", "hook_resid_pre_mlp", "hook_resid_pre_norm")
            shapes |= {f"{p}.{site}": (clips, frames, audio.hidden_size) for site in sites}
        shapes["hook_altup_merged"] = (batch, pos, d)
        for i in range(text.num_hidden_layers):
            p = f"blocks.{i}"
            shapes |= {f"{p}.hook_altup_pre": (batch, pos, streams, d), f"{p}.hook_altup_post": (batch, pos, streams, d)}
            shapes |= {f"{p}.{n}": (batch, pos, d) for n in ("hook_altup_predicted", "hook_laurel_out", "hook_per_layer_out")}
            shapes[f"{p}.laurel.hook_rank"] = (batch, pos, text.laurel_rank)
            shapes |= {f"{p}.per_layer.{n}": (batch, pos, text.hidden_size_per_layer_input) for n in ("hook_input", "hook_gate", "hook_gated")}
            if text.activation_sparsity_pattern[i] > 0:
                shapes[f"{p}.mlp.hook_sparse"] = (batch, pos, text.intermediate_size[i])
            if text.kv_sharing_modes[i] == "reuse":
                shapes[f"{p}.attn.hook_k"] = shapes[f"{p}.attn.hook_v"] = None
        return shapes

    # -- inputs -----------------------------------------------------------
    def decoder_inputs(self, inputs: dict, audio_embeds: Float[torch.Tensor, "audio_token d_model"]) -> dict:
        """HF inputs that run the decoder on ``audio_embeds`` (see :meth:`Adapter.decoder_inputs`).

        ``audio_embeds`` are what the decoder receives at every placeholder
        (188 per clip, padding included). Gemma-3n's decoder also takes
        per-layer embeddings looked up from the token ids and embeds audio
        control tokens with the audio embedder, so the HF forward itself is
        run without audio up to the decoder's input (``inputs_embeds``,
        ``per_layer_inputs``), and the audio is written over the placeholders.
        """
        text = {k: v for k, v in inputs.items() if k not in ("input_features", self.feature_mask_key)}
        captured = self.decoder_call(lambda: self.hf_model.model(**text, use_cache=False))
        embeds = self.scatter_audio(captured["inputs_embeds"], inputs["input_ids"], audio_embeds)
        rest = {k: v for k, v in text.items() if k != "input_ids"}
        return {**rest, "inputs_embeds": embeds, "per_layer_inputs": captured["per_layer_inputs"]}

    def encoded_tokens(self, mel_frames: int) -> int:
        """Tokens the encoder gives for ``mel_frames`` (before the padding to :attr:`soft_tokens`)."""
        return math.ceil(self.audio_hook_frames_of(mel_frames) / self.audio_tower.config.conf_reduction_factor)

    def audio_hook_frames_of(self, mel_frames: int) -> int:
        """Encoder frames (the length of the ``audio.blocks.*`` hooks) for ``mel_frames`` mel frames."""
        return subsampled(mel_frames, [s[0] for s in self.audio_tower.config.sscp_conv_stride_size])

    def audio_hook_frames(self, inputs: dict) -> HookFrames:
        mel = inputs["input_features"].shape[1]
        frames = self.audio_hook_frames_of(mel)
        return HookFrames(features=mel, encoder=frames, pattern=frames, out=self.encoded_tokens(mel))

    def encoder_rows(self, inputs: dict) -> list[tuple[int, int]]:
        """Every clip is one row of :attr:`soft_tokens` placeholders, however long it is."""
        return [(int(n), self.soft_tokens) for n in inputs[self.feature_mask_key].sum(-1).tolist()]

    def real_tokens(self, mel_frames: int) -> int:
        """Tokens that encode a clip of ``mel_frames`` real mel frames: token ``j`` is real while mel frame ``16 j`` is
        (16: the two convolutions' time strides times the encoder's reduction)."""
        audio = self.audio_tower.config
        per_token = math.prod(s[0] for s in audio.sscp_conv_stride_size) * audio.conf_reduction_factor
        return math.ceil(mel_frames / per_token)

    def check_inputs(self, inputs: dict) -> None:
        """Raise unless the features are ``[clip, frame, mel]`` of at most 30 s and each run of placeholders is whole clips."""
        if "input_features" not in inputs or "input_ids" not in inputs:
            return
        features, n_mels = inputs["input_features"], self.processor.feature_extractor.feature_size
        if features.dim() != 3 or features.shape[-1] != n_mels:
            raise ValueError(
                f"Gemma-3n's input_features must be [clip, frame, {n_mels}], got {tuple(features.shape)}; "
                "build inputs with model.prepare(...)"
            )
        if self.encoded_tokens(features.shape[1]) > self.soft_tokens:
            raise ValueError(
                f"{features.shape[1]} mel frames give more than the {self.soft_tokens} audio tokens a clip has "
                f"({MAX_SECONDS:g} s at most); build inputs with model.prepare(...)"
            )
        super().check_inputs(inputs)
