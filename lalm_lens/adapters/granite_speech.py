"""Granite-Speech (3.3 2B / 8B): Conformer CTC encoder, windowed Q-Former projector, Granite decoder.

Token rate. The feature extractor stacks pairs of 10 ms log-mel frames (80
mels) into one 20 ms encoder frame of 160 values, so ``input_features`` is
time-major, ``[clip, frame, 160]`` (50 frames/s; ``audio.hook_features`` is
that tensor). The projector cuts the encoder output into windows of
``window_size`` = 15 frames (0.3 s, the last one zero-padded) and a Q-Former
turns each window into ``window_size // downsample_rate`` = 3 learned-query
tokens: **10 tokens/s**, but a token is not a 0.1 s slice of the clip. All 3
queries of a window cross-attend to all of its 15 frames, so each token covers
the window's 0.3 s. Spans say so: :class:`QueryWindowSpan` (one per clip)
gives every token its window's start as its time, and an interval selects
all the queries of the windows it overlaps. ``frames_per_token`` is 5
(15 frames / 3 queries), so a span still covers its clip's encoder frames.

Encoder hooks. Each Conformer block is a macaron: half-step feed-forward
(``ff1``), self-attention, convolution module, half-step feed-forward
(``ff2``, named ``mlp`` as the block's last MLP), then a LayerNorm. Names
(all ``[clip, frame, ...]``; ``hook_*_out`` are what the part adds to the
residual stream, so the two feed-forward outputs include their 0.5):
``hook_resid_pre`` -> ``ff1.hook_post``, ``hook_ff1_out`` ->
``hook_resid_pre_attn`` -> ``attn.hook_pattern``, ``hook_attn_out`` ->
``hook_resid_pre_conv`` -> ``conv.hook_glu``, ``conv.hook_post``,
``hook_conv_out`` -> ``hook_resid_pre_mlp`` -> ``mlp.hook_post``,
``hook_mlp_out`` -> ``hook_resid_pre_norm`` -> ``hook_resid_post`` (after
the block's LayerNorm). Attention runs in blocks of ``context_size`` = 200
frames (4 s) with Shaw relative positions, through
``F.scaled_dot_product_attention`` rather than a registered attention
function, so ``attn.hook_pattern`` (``[clip, block, head, q, k]``, q = k =
min(200, frames); rows and keys past the clip's padded length are zero) is
computed beside the kernel from the same projections (:class:`RecomputedPattern`):
read-only hooks leave the output untouched, an edited pattern is multiplied
with the values. After the middle block the encoder adds a CTC feedback:
``audio.hook_ctc_logits`` (the mid-encoder CTC head, ``[clip, frame,
ctc_vocab]``) and ``audio.hook_ctc_out`` (its softmax projected back and
added in place to that block's output; ``hook_resid_post`` of that block is
a copy taken before the addition). ``audio.hook_out`` is the encoder output.

Q-Former hooks (``audio.qformer.blocks.{i}.*``, BERT-style post-LayerNorm
layers). Its batch axis is the window, clip-major (row ``c * n_windows + w``);
the learned queries and the first layer's self-attention are computed once
for all windows and have a batch of 1. ``hook_resid_pre`` (layer 0: the
normalised learned queries, ``[1, query, d_q]``), ``attn.hook_pattern``
(queries over queries), ``hook_attn_out`` (self-attention output projection),
``hook_resid_mid`` (after its add & LayerNorm), ``cross_attn.hook_pattern``
(``[window, head, query, 15]``: queries over the window's encoder frames),
``hook_cross_attn_out``, ``hook_resid_mid_cross``, ``mlp.hook_post``,
``hook_mlp_out``, ``hook_resid_post``. ``hook_audio_embeds`` is the
projector's output, ``[clip, window * 3, d_model]``.

Decoder (Granite). Its multipliers are part of the residual stream:
``hook_embed`` is the token embedding times ``embedding_multiplier`` (what
``blocks.0.hook_resid_pre`` receives), ``hook_attn_out`` / ``hook_mlp_out``
are the sublayer outputs times ``residual_multiplier`` (what is added), and
``blocks.{i}.attn.W_O`` / ``b_O`` include that multiplier, so TransformerLens's
algebra (``decompose_resid``, head results through ``W_O``) holds. Edits to
those three points are divided back by the multiplier. Attention scores use
``attention_multiplier`` as their scale. HF's Granite-Speech applies no
``logits_scaling`` (its ``lm_head`` output is the logits), and neither does
this wrapper.

Clips in a batch are zero-padded to the longest and the encoder has no
padding mask, so a clip's last frames (the convolution and attention reach
past its end) depend on what it is batched with, exactly as in HF;
``input_features_mask`` keeps each clip's own tokens. Without torchaudio,
the processor's feature extractor is replaced by :class:`GraniteSpeechFeatures`
(the same log-mel computed with ``torch.stft``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import einops
import numpy as np
import torch
from jaxtyping import Float
from torch import nn
from transformers import BatchFeature, GraniteSpeechForConditionalGeneration, GraniteSpeechProcessor
from transformers.audio_utils import mel_filter_bank
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.models.granite_speech.feature_extraction_granite_speech import GraniteSpeechFeatureExtractor
from transformers.utils import is_torchaudio_available

from ..attention import shared_query_rows
from ..hook_points import LazyHookPoint
from ..spans import AudioSpan
from .base import Adapter, DecoderAttention, HookBuilder, HookFrames, place, scaled, transposed

# -- features without torchaudio -------------------------------------------------------------------


class TorchMelSpectrogram(nn.Module):
    """``torchaudio.transforms.MelSpectrogram`` at its defaults in plain torch: periodic Hann window, centred
    reflect-padded STFT, power 2, HTK mel filters without normalisation (``transformers.audio_utils``)."""

    def __init__(self, sample_rate: int, n_fft: int, win_length: int, hop_length: int, n_mels: int):
        super().__init__()
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        bank = mel_filter_bank(n_fft // 2 + 1, n_mels, 0.0, sample_rate / 2, sample_rate, norm=None, mel_scale="htk")
        self.register_buffer("bank", torch.from_numpy(bank).float(), persistent=False)

    def forward(self, wave: Float[torch.Tensor, "batch time"]) -> Float[torch.Tensor, "batch mel frame"]:
        spec = torch.stft(
            wave, self.n_fft, self.hop_length, self.win_length, self.window, center=True, pad_mode="reflect",
            return_complex=True,
        ).abs().pow(2)
        return torch.matmul(spec.transpose(-1, -2), self.bank).transpose(-1, -2)


class GraniteSpeechFeatures(GraniteSpeechFeatureExtractor):
    """``GraniteSpeechFeatureExtractor`` where torchaudio is missing: the same features (log-mel clipped 8 decades
    below the clip's peak, pairs of frames stacked), the mel spectrogram from :class:`TorchMelSpectrogram`
    (torchaudio's defaults; its test checks it against a NumPy STFT through the same filters, not against
    torchaudio itself)."""

    def __init__(
        self, sampling_rate: int = 16000, n_fft: int = 512, win_length: int = 400, hop_length: int = 160,
        n_mels: int = 80, projector_window_size: int = 15, projector_downsample_rate: int = 5,
        padding_value: float = 0.0, **kwargs,
    ):
        feature_size = n_mels if kwargs.get("feature_size") is None else kwargs.pop("feature_size")
        SequenceFeatureExtractor.__init__(
            self, feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs
        )
        self.melspec_kwargs = dict(
            sample_rate=sampling_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels
        )
        self.mel_filters = TorchMelSpectrogram(**self.melspec_kwargs)
        self.projector_window_size = projector_window_size
        self.projector_downsample_rate = projector_downsample_rate

    def __call__(self, audios, device: str | None = "cpu") -> BatchFeature:
        batched, lengths = self._get_audios_and_audio_lengths(audios)
        sizes = self._get_num_audio_features(lengths)
        return BatchFeature(data={
            "input_features": self._extract_mel_spectrograms(batched, device=device),
            "audio_embed_sizes": sizes,
            "input_features_mask": torch.arange(max(sizes))[None, :] < torch.tensor(sizes)[:, None],
        })

    def _extract_mel_spectrograms(self, audio: torch.Tensor, device: str | None = "cpu") -> torch.Tensor:
        melspec = self.mel_filters.to(device) if device is not None else self.mel_filters
        with torch.no_grad():
            logmel = melspec(audio.to(melspec.window.device).float()).transpose(-1, -2).clip_(min=1e-10).log10_()
            peak = logmel.amax(dim=(-2, -1), keepdim=True)
            logmel = torch.maximum(logmel, peak - 8.0).div_(4).add_(1)
            if logmel.shape[1] % 2 == 1:
                logmel = logmel[:, :-1]
            return einops.rearrange(logmel, "b (t two) m -> b t (two m)", two=2)


# -- spans -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryWindowSpan(AudioSpan):
    """The audio tokens of one clip when each token is one of ``queries_per_window`` Q-Former queries that all
    read the same window of ``queries_per_window * seconds_per_token`` seconds.

    ``seconds_per_token`` is the token rate's step (0.1 s for Granite-Speech);
    a token's time is its window's start (or centre), and
    :meth:`positions_between` / :meth:`position_at` select every query of the
    windows an interval overlaps.
    """

    queries_per_window: int = 3

    @property
    def window_s(self) -> float:
        return self.queries_per_window * self.seconds_per_token

    def times(self, centre: bool = False) -> Float[np.ndarray, "token"]:
        window = np.arange(len(self)) // self.queries_per_window
        return self.offset_s + (window + (0.5 if centre else 0.0)) * self.window_s

    def position_at(self, seconds: float) -> int:
        """The first query of the window holding ``seconds`` (clip time); raises outside the span."""
        window = int(np.floor((seconds - self.offset_s) / self.window_s + 1e-6))
        if not 0 <= window * self.queries_per_window < len(self):
            raise ValueError(f"{seconds:.3f} s is outside this span ({self.offset_s:.3f}–{self.offset_s + self.duration_s:.3f} s)")
        return self.start + window * self.queries_per_window

    def positions_between(self, start_s: float, stop_s: float) -> range:
        """Positions of every query of the windows overlapping ``[start_s, stop_s)`` (clip time)."""
        lo = int(np.floor((start_s - self.offset_s) / self.window_s + 1e-6))
        hi = int(np.ceil((stop_s - self.offset_s) / self.window_s - 1e-6))
        q = self.queries_per_window
        return range(self.start + min(max(lo, 0) * q, len(self)), self.start + min(max(hi, 0) * q, len(self)))


# -- patterns of attention modules without a registered attention function --------------------------


class RecomputedPattern:
    """The ``hook_pattern`` point of an attention module whose kernel returns no probabilities.

    While the point is in use, a pre-hook keeps the module's inputs and a
    forward hook computes the probabilities from them with the module's own
    projections (``compute(module, args, kwargs) -> (pattern, state)``). If
    every hook only reads (``query_rows``), the module's output is left as the
    kernel made it (bit-identical); otherwise the output is rebuilt from the
    pattern the hooks return (``apply(module, state, pattern, output)``).
    """

    def __init__(self, module: nn.Module, compute: Callable, apply: Callable):
        self.module, self.compute, self.apply = module, compute, apply
        self.point = LazyHookPoint(on_change=self.sync)
        self.handles: list = []
        self.inputs: tuple | None = None

    def sync(self) -> None:
        if self.point.active and not self.handles:
            self.handles = [
                self.module.register_forward_pre_hook(self._before, with_kwargs=True),
                self.module.register_forward_hook(self._after, prepend=True),
            ]
        elif not self.point.active and self.handles:
            for handle in self.handles:
                handle.remove()
            self.handles, self.inputs = [], None

    def _before(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.inputs = (args, kwargs)

    def _after(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if self.inputs is None:  # the point gained its hook while this module was running
            return None
        (args, kwargs), self.inputs = self.inputs, None
        pattern, state = self.compute(module, args, kwargs)
        self.point.ctx["query_rows"] = None  # the whole pattern is passed: readers cut their rows themselves
        if shared_query_rows(self.point) is not None:
            self.point(pattern)
            return None
        return self.apply(module, state, self.point.run(pattern), output)


def _arg(args: tuple, kwargs: dict, name: str, index: int) -> Any:
    return kwargs[name] if name in kwargs else args[index]


def conformer_pattern(attn: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, tuple]:
    """Probabilities of a Granite Conformer attention, ``[clip, block, head, q, k]``, as its forward computes them."""
    hidden = attn.pre_norm(_arg(args, kwargs, "hidden_states", 0))
    dists = _arg(args, kwargs, "attention_dists", 1)
    clips, n, _ = hidden.shape
    size = attn.context_size
    blocks, rem = -(-n // size), n % size
    if rem:
        hidden = nn.functional.pad(hidden, (0, 0, 0, size - rem))
    split = lambda t: einops.rearrange(t, "b (k c) (h d) -> (b k) h c d", c=size, h=attn.num_heads)
    q = split(attn.to_q(hidden))
    k, v = (split(t) for t in attn.to_kv(hidden).chunk(2, dim=-1))
    bias = torch.einsum("b h c d, c r d -> b h c r", q, attn.rel_pos_emb(dists)) * attn.scale
    if rem:
        mask = torch.ones(size, size, dtype=torch.bool, device=bias.device)
        mask[:rem, :rem] = False
        bias[blocks - 1 :: blocks].masked_fill_(mask, -torch.finfo(bias.dtype).max)
    probs = (torch.matmul(q, k.transpose(-1, -2)) * attn.scale + bias).softmax(-1)
    pattern = einops.rearrange(probs, "(b k) h q r -> b k h q r", b=clips)
    if rem and blocks == 1:
        pattern = pattern[..., :rem, :rem]
    elif rem:
        real = torch.ones(blocks, 1, size, 1, dtype=pattern.dtype, device=pattern.device)
        real[-1, :, rem:] = 0
        pattern = pattern * real
    return pattern, (v, n, size)


def conformer_apply(
    attn: nn.Module, state: tuple, pattern: Float[torch.Tensor, "clip block head q k"], output: torch.Tensor
) -> Float[torch.Tensor, "clip frame d_audio"]:
    """The attention's output rebuilt from an edited ``pattern``: ``pattern @ v`` per block, then ``to_out``."""
    v, n, size = state
    pattern = nn.functional.pad(pattern, (0, size - pattern.shape[-1], 0, size - pattern.shape[-2]))
    out = torch.matmul(einops.rearrange(pattern, "b k h q r -> (b k) h q r").to(v.dtype), v)
    out = einops.rearrange(out, "(b k) h c d -> b (k c) (h d)", b=pattern.shape[0])[:, :n]
    return attn.dropout(attn.to_out(out))


def qformer_pattern(attn: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities of a Q-Former attention (self or cross), ``[batch, head, query, key]`` (no mask: Granite has none)."""
    hidden = kwargs["hidden_states"]
    context = kwargs.get("encoder_hidden_states")
    mask = kwargs.get("encoder_attention_mask") if context is not None else kwargs.get("attention_mask")
    if mask is not None:
        raise NotImplementedError("Q-Former patterns are computed without attention masks; Granite-Speech passes none")
    context = hidden if context is None else context
    heads = lambda t: t.unflatten(-1, (-1, attn.attention_head_size)).transpose(1, 2)
    q, k, v = heads(attn.query(hidden)), heads(attn.key(context)), heads(attn.value(context))
    return (torch.matmul(q, k.transpose(-1, -2)) * attn.scaling).softmax(-1), v


def qformer_apply(attn: nn.Module, v: torch.Tensor, pattern: Float[torch.Tensor, "batch head query key"], output: tuple) -> tuple:
    """The attention module's output tuple with its context ``[batch, query, d_q]`` rebuilt as ``pattern @ v``."""
    out = torch.matmul(pattern.to(v.dtype), v).transpose(1, 2)
    return (out.reshape(*out.shape[:2], -1).contiguous(), *output[1:])


# -- decoder -----------------------------------------------------------------------------------------


class GraniteDecoderAttention(DecoderAttention):
    """``blocks.{i}.attn`` of a Granite layer: ``W_O`` / ``b_O`` include ``residual_multiplier``, so
    ``z @ W_O + b_O`` is ``hook_attn_out`` (what the layer adds); they are scaled copies, not views."""

    @property
    def output_scale(self) -> float:
        """The factor between ``o_proj``'s output and ``hook_attn_out``: Granite's ``residual_multiplier``."""
        return float(self.attention.config.residual_multiplier)

    W_O = property(lambda self: DecoderAttention.W_O.fget(self) * self.output_scale)
    b_O = property(lambda self: DecoderAttention.b_O.fget(self) * self.output_scale)


class GraniteSpeechAdapter(Adapter):
    hf_class = GraniteSpeechForConditionalGeneration
    model_types = ("granite_speech",)
    arch = "granite_speech"
    placeholder = "<|audio|>"
    feature_mask_key = "input_features_mask"
    tokens_per_second = 10.0
    frames_per_token = 5

    @classmethod
    def load_processor(cls, path, **kwargs) -> GraniteSpeechProcessor:
        """The checkpoint's ``GraniteSpeechProcessor``; without torchaudio, with :class:`GraniteSpeechFeatures`.

        Its feature extractor (HF: ``processor.audio_processor``) is also reachable as
        ``processor.feature_extractor``, as in the other families' processors.
        """
        processor = super().load_processor(path, **kwargs) if is_torchaudio_available() else cls._processor_without_torchaudio(path, **kwargs)
        processor.feature_extractor = processor.audio_processor
        return processor

    @staticmethod
    def _processor_without_torchaudio(path, **kwargs) -> GraniteSpeechProcessor:
        from transformers import AutoTokenizer
        from transformers.utils import cached_file

        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        features = GraniteSpeechFeatures.from_pretrained(path, **kwargs)
        local = {k: v for k, v in kwargs.items() if k == "local_files_only"}
        template = cached_file(path, "chat_template.jinja", _raise_exceptions_for_missing_entries=False, **local)
        chat_template = Path(template).read_text() if template else getattr(tokenizer, "chat_template", None)
        return GraniteSpeechProcessor(features, tokenizer, chat_template=chat_template)

    def __init__(self, hf_model, processor):
        super().__init__(hf_model, processor)
        config = hf_model.config
        self.window_frames = config.window_size
        self.queries = config.window_size // config.downsample_rate
        self.frames_per_token = self.window_frames // self.queries
        self.tokens_per_second = 50 / self.frames_per_token  # 20 ms encoder frames

    # -- where things are -------------------------------------------------
    @property
    def audio_tower(self) -> nn.Module:
        return self.hf_model.model.encoder

    @property
    def projector(self) -> nn.Module:
        return self.hf_model.model.projector

    @property
    def attention_configs(self) -> list:
        """Only the decoder calls a registered attention function (see :class:`RecomputedPattern` for the rest)."""
        return [self.language_model.config]

    @property
    def sampling_rate(self) -> int:
        return self.processor.audio_processor.sampling_rate

    @property
    def max_audio_seconds(self) -> float:
        """The processor does not cap clips; the decoder's positions do (10 tokens per second)."""
        return self.language_model.config.max_position_embeddings / self.tokens_per_second

    def config(self, name: str = ""):
        audio = self.audio_tower.config
        cfg = self.make_config(name, self.language_model.config, None, audio.num_layers)
        return replace(
            cfg, audio_d_model=audio.hidden_dim, audio_d_mlp=audio.hidden_dim * audio.feedforward_mult,
            audio_n_heads=audio.num_heads,
        )

    # -- hook points ------------------------------------------------------
    def build_hooks(self, root: nn.Module) -> None:
        hooks, tower = HookBuilder(root), self.audio_tower
        hooks.point("audio.hook_features", tower, "input", arg="hidden_states")
        middle = tower.num_layers // 2 - 1  # the CTC feedback is added after this block, in place
        for i, layer in enumerate(tower.layers):
            self.conformer_block_hooks(hooks, layer, f"audio.blocks.{i}", copy_output=i == middle)
        if middle >= 0:
            hooks.point("audio.hook_ctc_logits", tower.out, "output")
            hooks.point("audio.hook_ctc_out", tower.out_mid, "output")
        hooks.point("audio.hook_out", self.projector, "input")
        for i, layer in enumerate(self.projector.qformer.encoder.layer):
            self.qformer_block_hooks(hooks, layer, f"audio.qformer.blocks.{i}")
        hooks.point("hook_audio_embeds", self.projector, "output")
        text = self.language_model
        hooks.view_point("hook_embed", text, "input", arg="inputs_embeds", **scaled(text.config.embedding_multiplier))
        self.granite_block_hooks(hooks, text.layers, text.config.residual_multiplier)
        hooks.final_norm(text.norm)

    @staticmethod
    def conformer_block_hooks(hooks: HookBuilder, layer: nn.Module, p: str, copy_output: bool = False) -> None:
        """``{p}.*`` on one Conformer block (see the module docstring for the names)."""
        hooks.point(f"{p}.hook_resid_pre", layer, "input", arg="hidden_states")
        for name, ff in (("ff1", layer.ff1), ("mlp", layer.ff2)):
            hooks.point(f"{p}.{name}.hook_post", ff.down_proj, "input")
            hooks.view_point(f"{p}.hook_{name}_out", ff, "output", **scaled(0.5))
        hooks.point(f"{p}.hook_resid_pre_attn", layer.attn, "input", arg="hidden_states", in_place=True)
        place(hooks.root, f"{p}.attn.hook_pattern", RecomputedPattern(layer.attn, conformer_pattern, conformer_apply).point)
        hooks.point(f"{p}.hook_attn_out", layer.attn, "output")
        hooks.point(f"{p}.hook_resid_pre_conv", layer.conv, "input", in_place=True)
        hooks.view_point(f"{p}.conv.hook_glu", layer.conv.glu, "output", **transposed())
        hooks.view_point(f"{p}.conv.hook_post", layer.conv.down_conv, "input", **transposed())
        hooks.point(f"{p}.hook_conv_out", layer.conv, "output")
        hooks.point(f"{p}.hook_resid_pre_mlp", layer.ff2, "input", in_place=True)
        hooks.point(f"{p}.hook_resid_pre_norm", layer.post_norm, "input")
        if copy_output:
            hooks.view_point(f"{p}.hook_resid_post", layer, "output", view=torch.clone, unview=lambda new, t: new.clone())
        else:
            hooks.point(f"{p}.hook_resid_post", layer, "output")

    @staticmethod
    def qformer_block_hooks(hooks: HookBuilder, layer: nn.Module, p: str) -> None:
        """``{p}.*`` on one Q-Former layer (see the module docstring for the names)."""
        hooks.point(f"{p}.hook_resid_pre", layer, "input")
        attention = layer.attention
        place(hooks.root, f"{p}.attn.hook_pattern", RecomputedPattern(attention.attention, qformer_pattern, qformer_apply).point)
        hooks.point(f"{p}.hook_attn_out", attention.output.dense, "output")
        hooks.point(f"{p}.hook_resid_mid", attention, "output")
        if layer.has_cross_attention:
            cross = layer.crossattention
            place(hooks.root, f"{p}.cross_attn.hook_pattern", RecomputedPattern(cross.attention, qformer_pattern, qformer_apply).point)
            hooks.point(f"{p}.hook_cross_attn_out", cross.output.dense, "output")
            hooks.point(f"{p}.hook_resid_mid_cross", cross, "output")
        hooks.point(f"{p}.mlp.hook_post", layer.output_query.dense, "input")
        hooks.point(f"{p}.hook_mlp_out", layer.output_query.dense, "output")
        hooks.point(f"{p}.hook_resid_post", layer, "output")

    @staticmethod
    def granite_block_hooks(hooks: HookBuilder, layers, multiplier: float, prefix: str = "blocks") -> None:
        """``{prefix}.{i}.*`` on Granite decoder layers: Qwen2-style, with ``hook_attn_out`` / ``hook_mlp_out``
        times ``residual_multiplier``."""
        for i, layer in enumerate(layers):
            p, attention = f"{prefix}.{i}", layer.self_attn
            hooks.point(f"{p}.hook_resid_pre", layer, "input", arg="hidden_states")
            hooks.attention(p, attention, GraniteDecoderAttention(attention))
            hooks.view_point(f"{p}.hook_attn_out", attention, "output", **scaled(multiplier))
            hooks.point(f"{p}.hook_resid_mid", layer.post_attention_layernorm, "input", in_place=True)
            hooks.gated_mlp(p, layer.mlp)
            hooks.view_point(f"{p}.hook_mlp_out", layer.mlp, "output", **scaled(multiplier))
            hooks.point(f"{p}.hook_resid_post", layer, "output")

    # -- shapes -----------------------------------------------------------
    def n_windows(self, n_frames: int) -> int:
        """Q-Former windows over ``n_frames`` encoder frames (the last one zero-padded)."""
        return -(-n_frames // self.window_frames)

    def audio_hook_frames(self, inputs: dict) -> HookFrames:
        """``features`` is the width of Granite's time-major features (160: two stacked mel frames), not a time axis."""
        features = inputs["input_features"]
        frames, size = features.shape[1], self.audio_tower.config.context_size
        return HookFrames(features.shape[-1], frames, min(size, frames), frames, chunks=-(-frames // size))

    def embed_tokens(self, inputs: dict) -> int:
        return self.n_windows(inputs["input_features"].shape[1]) * self.queries

    def family_hook_shapes(self, inputs: dict) -> dict[str, tuple[int, ...]]:
        """Shapes of the names this family adds to the vocabulary (Conformer parts, CTC feedback, Q-Former), and of
        ``audio.hook_features``, which is time-major here (``[clip, frame, 2 * n_mels]``)."""
        cfg, features = self.config(), inputs["input_features"]
        clips, frames = features.shape[:2]
        windows = clips * self.n_windows(frames)
        qformer = self.projector.qformer.config
        d_q, heads = qformer.hidden_size, qformer.num_attention_heads
        shapes = {"audio.hook_features": tuple(features.shape)}
        if cfg.audio_n_layers >= 2:  # the CTC feedback follows block audio_n_layers // 2 - 1
            shapes["audio.hook_ctc_logits"] = (clips, frames, self.audio_tower.config.output_dim)
            shapes["audio.hook_ctc_out"] = (clips, frames, cfg.audio_d_model)
        inner = self.audio_tower.config.hidden_dim * self.audio_tower.config.conv_expansion_factor
        for i in range(cfg.audio_n_layers):
            p = f"audio.blocks.{i}"
            for name in ("hook_ff1_out", "hook_resid_pre_attn", "hook_resid_pre_conv", "hook_conv_out",
                         "hook_resid_pre_mlp", "hook_resid_pre_norm"):
                shapes[f"{p}.{name}"] = (clips, frames, cfg.audio_d_model)
            shapes[f"{p}.ff1.hook_post"] = (clips, frames, cfg.audio_d_mlp)
            shapes[f"{p}.conv.hook_glu"] = shapes[f"{p}.conv.hook_post"] = (clips, frames, inner)
        for i, layer in enumerate(self.projector.qformer.encoder.layer):
            p, rows = f"audio.qformer.blocks.{i}", 1 if i == 0 else windows
            for name in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid"):
                shapes[f"{p}.{name}"] = (rows, self.queries, d_q)
            shapes[f"{p}.attn.hook_pattern"] = (rows, heads, self.queries, self.queries)
            if layer.has_cross_attention:
                shapes[f"{p}.cross_attn.hook_pattern"] = (windows, heads, self.queries, self.window_frames)
                shapes[f"{p}.hook_cross_attn_out"] = shapes[f"{p}.hook_resid_mid_cross"] = (windows, self.queries, d_q)
            shapes[f"{p}.mlp.hook_post"] = (windows, self.queries, qformer.intermediate_size)
            shapes[f"{p}.hook_mlp_out"] = shapes[f"{p}.hook_resid_post"] = (windows, self.queries, d_q)
        return shapes

    # -- inputs -----------------------------------------------------------
    def decoder_inputs(self, inputs: dict, audio_embeds: Float[torch.Tensor, "audio_token d_model"]) -> dict:
        """As :meth:`Adapter.decoder_inputs`, without ``input_ids`` and the token mask: Granite-Speech's forward
        refuses ``input_ids`` beside ``inputs_embeds`` (its decoder computes positions from the attention mask)."""
        decoder = super().decoder_inputs(inputs, audio_embeds)
        return {k: v for k, v in decoder.items() if k not in ("input_ids", self.feature_mask_key)}

    def encoder_rows(self, inputs: dict) -> list[tuple[int, int]]:
        """``(mel frames of its whole windows, tokens)`` per clip, from ``input_features_mask`` (one row per clip)."""
        tokens = inputs[self.feature_mask_key].sum(-1).tolist()
        return [(2 * self.window_frames * (int(n) // self.queries), int(n)) for n in tokens]

    def check_inputs(self, inputs: dict) -> None:
        """Raise unless features, token mask and placeholders agree (per example, per run of placeholders)."""
        if "input_features" not in inputs or "input_ids" not in inputs:
            return
        features, mask = inputs["input_features"], inputs.get(self.feature_mask_key)
        width = self.audio_tower.config.input_dim
        if features.dim() != 3 or features.shape[-1] != width:
            raise ValueError(
                f"Granite-Speech's input_features must be [clip, frame, {width}] (pairs of mel frames), got "
                f"{tuple(features.shape)}; build inputs with model.prepare(...)"
            )
        if mask is None:
            raise ValueError(f"input_features come without {self.feature_mask_key!r}; build inputs with model.prepare(...)")
        expected = (features.shape[0], self.n_windows(features.shape[1]) * self.queries)
        if tuple(mask.shape) != expected:
            raise ValueError(
                f"{self.feature_mask_key} must be [clip, token] = {expected} for these features, got {tuple(mask.shape)}"
            )
        counts = mask.sum(-1)
        prefix = torch.arange(mask.shape[-1], device=mask.device)[None, :] < counts[:, None]
        if not torch.equal(mask.bool(), prefix) or bool((counts % self.queries).any()):
            raise ValueError(
                f"each row of {self.feature_mask_key} must keep the first whole windows of {self.queries} tokens; "
                "build inputs with model.prepare(...)"
            )
        self.check_placeholder_runs(inputs)

    def audio_spans(self, inputs: dict, clip_samples: list[list[int]]) -> list[list[QueryWindowSpan]]:
        """One :class:`QueryWindowSpan` per clip (clips are encoder rows, in prompt order)."""
        return [
            [
                QueryWindowSpan(run[0], run[-1] + 1, 1 / self.tokens_per_second, 0.0, clip, row, self.frames_per_token, self.queries)
                for clip, (row, run) in enumerate(clips)
            ]
            for clips in self.clip_placeholders(inputs, clip_samples)
        ]
