"""Qwen3-ASR (0.6B, 1.7B): Qwen3-Omni's audio encoder (three stride-2 2-D convolutions per 1 s chunk, packed
hidden states, attention inside windows), 2-layer GELU projector, Qwen3 decoder.

Token rate. The encoder cuts each clip's log-mel into 1 s chunks
(``2 * n_window`` = 100 mel frames) and downsamples each by 8 with padded
convolutions: **13 tokens per full second** (100 -> 50 -> 25 -> 13), token
``j`` of a chunk covering mel frames ``8j .. 8j + 7`` (80 ms), so the 13th
token of a chunk holds its last 40 ms. Spans are therefore one
:class:`~lalm_lens.spans.AudioSpan` per 1 s chunk (``offset_s`` = the
chunk's start, 0.08 s per token, ``encoder_row`` = the clip): exact times,
where a single 1/13 s grid would drift by up to 40 ms inside each second.
The encoder's frames are its tokens (no pooling), so ``frames_per_token`` is 1.

Packed encoder. As in Qwen2.5-Omni (:mod:`.qwen2_5_omni`, whose packed taps
and windowed pattern this adapter reuses), the encoder keeps only each clip's
real tokens, packed as ``[total_tokens, d]``; the ``audio.*`` hooks show them
as ``[clip, token, d]`` zero-padded to the longest clip, and edits are packed
back. Attention runs inside windows of ``n_window_infer`` mel frames (8 s,
104 tokens): ``audio.blocks.{i}.attn.hook_pattern`` is
``[clip, window, head, q, k]``. ``audio.hook_features`` is the padded
``[clip, mel, frames]`` input (frames a multiple of 100). ``audio.hook_out``
is the encoder output after ``ln_post``; ``hook_audio_embeds`` the
projector's output, both ``[clip, token, ...]``.

One clip per prompt (the processor pairs one audio with one text); the
placeholder is ``<|audio_pad|>`` between ``<|audio_start|>`` and ``<|audio_end|>``.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from transformers import Qwen3ASRForConditionalGeneration
from transformers.models.qwen3_asr.modeling_qwen3_asr import _get_feat_extract_output_lengths, get_audio_cu_seqlens

from ..spans import AudioSpan
from .base import Adapter, HookBuilder, HookFrames, place
from .qwen2_5_omni import ChunkedPattern, PackedTap, Packing

CHUNK_TOKENS = 13  # tokens of a full 1 s chunk after three stride-2 convolutions of 100 mel frames


class Qwen3ASRPacking(Packing):
    """Per-clip lengths of the encoder's packed tensors in the running forward, read from ``input_features_mask``.

    The interface :class:`~lalm_lens.adapters.qwen2_5_omni.PackedTap` and
    ``ChunkedPattern`` read: ``use(on)`` and the lists ``mel``, ``frames``,
    ``tokens`` (one entry per clip; frames and tokens are the same here).
    """

    def record(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs["input_features_mask"] if "input_features_mask" in kwargs else args[1]
        self.mel = [int(n) for n in mask.sum(-1).tolist()]
        self.frames = self.tokens = [int(_get_feat_extract_output_lengths(n, self.tower.n_window)) for n in self.mel]


class Qwen3ASRAdapter(Adapter):
    hf_class = Qwen3ASRForConditionalGeneration
    model_types = ("qwen3_asr",)
    arch = "qwen3_asr"
    placeholder = "<|audio_pad|>"
    feature_mask_key = "input_features_mask"
    tokens_per_second = float(CHUNK_TOKENS)
    frames_per_token = 1
    clips_per_prompt_max = 1

    @property
    def max_audio_seconds(self) -> float:
        """The processor does not cap clips; the decoder's positions do (13 tokens per second)."""
        return self.language_model.config.max_position_embeddings / CHUNK_TOKENS

    @property
    def chunk_frames(self) -> int:
        """Mel frames per convolution chunk (100: 1 s)."""
        return 2 * self.audio_tower.n_window

    def config(self, name: str = ""):
        return replace(super().config(name), audio_frames_per_second=float(CHUNK_TOKENS))

    # -- hook points ------------------------------------------------------
    def build_hooks(self, root: nn.Module) -> None:
        hooks = HookBuilder(root)
        self.encoder_hooks(hooks, Qwen3ASRPacking(self.audio_tower))
        hooks.point("hook_embed", self.language_model, "input", arg="inputs_embeds")
        self.decoder_block_hooks(hooks, self.language_model.layers)
        hooks.final_norm(self.language_model.norm)

    def encoder_hooks(self, hooks: HookBuilder, packing: Packing, packed_features: bool = False) -> None:
        """``audio.*`` and ``hook_audio_embeds`` on the Qwen3-Omni audio encoder (shared by Qwen3-ASR and the
        Qwen3-Omni thinker): its packed tensors seen as ``[clip, token, ...]`` through ``packing`` (kept as
        ``self.packing``), which records each forward's clip lengths. ``audio.hook_features`` is the tower's
        ``input_features`` as given (``[clip, mel, frame]``), or, with ``packed_features``, the ``[mel, frame]``
        features of all clips concatenated, seen as ``[clip, mel, frame]``."""
        tower, root = self.audio_tower, hooks.root
        self.packing = packing

        def packed(name: str, module: nn.Module, where: str, lengths: str = "tokens", dim: int = 0, arg: str | None = None) -> None:
            place(root, name, PackedTap(module, where, packing, lengths, dim, arg).new_point())

        if packed_features:
            packed("audio.hook_features", tower, "input", "mel", dim=1, arg="input_features")
        else:
            hooks.point("audio.hook_features", tower, "input", arg="input_features")
        for i, layer in enumerate(tower.layers):
            p = f"audio.blocks.{i}"
            packed(f"{p}.hook_resid_pre", layer, "input", arg="hidden_states")
            place(root, f"{p}.attn.hook_pattern", ChunkedPattern(layer.self_attn, packing).point)
            packed(f"{p}.hook_attn_out", layer.self_attn, "output")
            packed(f"{p}.mlp.hook_post", layer.fc2, "input")
            packed(f"{p}.hook_mlp_out", layer.fc2, "output")
            packed(f"{p}.hook_resid_post", layer, "output")
        packed("audio.hook_out", tower.ln_post, "output")
        packed("hook_audio_embeds", self.projector, "output")

    # -- inputs -----------------------------------------------------------
    def encoder_rows(self, inputs: dict) -> list[tuple[int, int]]:
        frames = inputs[self.feature_mask_key].sum(-1).tolist()
        return [(int(n), int(_get_feat_extract_output_lengths(int(n), self.audio_tower.n_window))) for n in frames]

    def attention_windows(self, inputs: dict) -> list[list[int]]:
        """Token lengths of each clip's attention windows, as the encoder computes its ``cu_seqlens`` (from each clip's
        real mel frames, cut into chunks of :attr:`chunk_frames`)."""
        rows, size, tower = self.encoder_rows(inputs), self.chunk_frames, self.audio_tower
        mel = [n for n, _ in rows]
        chunks = torch.tensor([c for n in mel for c in [size] * (n // size) + ([n % size] if n % size else [])])
        bounds = get_audio_cu_seqlens(chunks, torch.tensor(mel), tower.n_window_infer, tower.n_window).tolist()
        sizes = iter(b - a for a, b in zip(bounds[:-1], bounds[1:]))
        windows = []
        for _, n in rows:
            clip = []
            while sum(clip) < n:
                clip.append(next(sizes))
            windows.append(clip)
        return windows

    def audio_hook_frames(self, inputs: dict) -> HookFrames:
        tokens = max(n for _, n in self.encoder_rows(inputs))
        windows = self.attention_windows(inputs)
        size = max(max(w) for w in windows)
        return HookFrames(inputs["input_features"].shape[-1], tokens, size, tokens, chunks=max(map(len, windows)))

    def audio_spans(self, inputs: dict, clip_samples=None) -> list[list[AudioSpan]]:
        """One span per 1 s convolution chunk of each clip (13 tokens, 0.08 s each; fewer in a last partial chunk)."""
        rows = self.encoder_rows(inputs)
        ids = inputs["input_ids"]
        if len(rows) != ids.shape[0]:
            raise ValueError(f"{len(rows)} encoded clips for {ids.shape[0]} examples; Qwen3-ASR takes one clip per example")
        spans = []
        for example, (_, n_tokens) in enumerate(rows):
            positions = (ids[example] == self.audio_token_id).nonzero().flatten().tolist()
            run, example_spans, cursor = positions[:n_tokens], [], n_tokens
            if len(run) != n_tokens or run != list(range(run[0], run[0] + n_tokens)):
                raise ValueError(
                    f"example {example}: the audio placeholders do not line up with its clip "
                    f"({n_tokens} tokens expected at consecutive positions)"
                )
            for second, start in enumerate(range(0, n_tokens, CHUNK_TOKENS)):
                stop = min(start + CHUNK_TOKENS, n_tokens)
                example_spans.append(AudioSpan(run[start], run[stop - 1] + 1, 8 / 100, float(second), 0, example, 1))
            if cursor != len(positions):
                raise ValueError(f"example {example}: {len(positions)} audio placeholder tokens but the audio gives {cursor}")
            spans.append(example_spans)
        return spans
