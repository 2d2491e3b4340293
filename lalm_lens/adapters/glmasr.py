"""GLM-ASR (Nano): pre-LayerNorm rotary Whisper-style encoder over independent 30 s windows, 4-frame stacking,
2-layer GELU projector, Llama decoder.

Windows as in Audio Flamingo 3: a clip is cut into 30 s windows (at most
655 s), each encoded as one row of 3000 mel frames, 1500 encoder frames.
Unlike Whisper, the encoder takes no padding mask: every window attends over
all its 1500 frames, padding included, so ``audio.blocks.{i}.attn.hook_pattern``
is ``[window, head, 1500, 1500]``. The encoder output is cut into groups of
four consecutive frames, concatenated (``[4 * d_audio]``) and projected: 375
tokens per full window, **12.5 tokens/s**, of which only a window's real ones
(``(ceil(n_mel / 2) - 4) // 4 + 1``) reach the decoder. Each window is one
:class:`~lalm_lens.spans.AudioSpan` (``frames_per_token`` = 4, ``offset_s``
the window's start).

Hooks: ``audio.blocks.{i}.*`` on the pre-norm encoder layers (``hook_attn_out``
is ``self_attn``'s output, ``mlp.hook_post`` the input of ``mlp.fc2``,
``hook_mlp_out`` the MLP's output, all before the residual additions);
``audio.hook_out`` is the encoder's output after its final LayerNorm,
``[window, 1500, d_audio]`` (frames, before the stacking);
``hook_audio_embeds`` is the projector's output ``[window, 375, d_model]``.
The placeholder is ``<|pad|>``; one clip per prompt, as the processor takes.
"""

from __future__ import annotations

from dataclasses import replace

from transformers import GlmAsrForConditionalGeneration

from .audio_flamingo3 import AudioFlamingo3Adapter
from .base import HookBuilder, HookFrames

MERGE = 4  # encoder frames stacked into one token (fixed in the HF model)


def glmasr_tokens(n_mel: int) -> int:
    """Audio tokens of a window with ``n_mel`` real mel frames (conv stride 2, then groups of four frames)."""
    return (((n_mel - 1) // 2 + 1) - MERGE) // MERGE + 1


class GlmAsrAdapter(AudioFlamingo3Adapter):
    """AF3's windowing (30 s windows, one clip per prompt, ``max_audio_len``); four encoder frames per token."""

    hf_class = GlmAsrForConditionalGeneration
    model_types = ("glmasr",)
    arch = "glmasr"
    placeholder = "<|pad|>"
    feature_mask_key = "input_features_mask"
    tokens_per_second = 12.5
    frames_per_token = MERGE

    def config(self, name: str = ""):
        audio = self.audio_tower.config
        config = self.make_config(name, self.language_model.config, None, len(self.audio_tower.layers))
        return replace(config, audio_d_model=audio.hidden_size, audio_d_mlp=audio.intermediate_size,
                       audio_n_heads=audio.num_attention_heads)

    def build_hooks(self, root) -> None:
        hooks = HookBuilder(root)
        hooks.point("audio.hook_features", self.audio_tower, "input", arg="input_features")
        self.prenorm_encoder_block_hooks(hooks, self.audio_tower.layers)
        hooks.point("audio.hook_out", self.audio_tower.norm, "output")
        hooks.point("hook_audio_embeds", self.projector, "output")
        hooks.point("hook_embed", self.language_model, "input", arg="inputs_embeds")
        self.decoder_block_hooks(hooks, self.language_model.layers)
        hooks.final_norm(self.language_model.norm)

    @staticmethod
    def prenorm_encoder_block_hooks(hooks: HookBuilder, layers, prefix: str = "audio.blocks") -> None:
        """``{prefix}.{i}.*`` on pre-norm encoder layers with ``self_attn`` and an ``mlp`` of ``fc1``/``fc2``."""
        for i, layer in enumerate(layers):
            p = f"{prefix}.{i}"
            hooks.point(f"{p}.hook_resid_pre", layer, "input", arg="hidden_states")
            hooks.pattern(f"{p}.attn.hook_pattern", layer.self_attn)
            hooks.point(f"{p}.hook_attn_out", layer.self_attn, "output")
            hooks.point(f"{p}.mlp.hook_post", layer.mlp.fc2, "input")
            hooks.point(f"{p}.hook_mlp_out", layer.mlp, "output")
            hooks.point(f"{p}.hook_resid_post", layer, "output")

    def encoder_rows(self, inputs: dict) -> list[tuple[int, int]]:
        frames = inputs[self.feature_mask_key].sum(-1).tolist()
        return [(int(n), glmasr_tokens(int(n))) for n in frames]

    def audio_hook_frames(self, inputs: dict) -> HookFrames:
        mel = inputs["input_features"].shape[-1]
        return HookFrames(features=mel, encoder=mel // 2, pattern=mel // 2, out=mel // 2)

    def embed_tokens(self, inputs: dict) -> int:
        return inputs["input_features"].shape[-1] // 2 // MERGE
