"""Audio Flamingo 3: Whisper-style encoder over independent 30 s windows, 2-layer GELU projector, Qwen2.5 decoder.

A clip longer than a window is cut into windows that are encoded as separate
rows; their tokens follow each other in the prompt. Each window is one
:class:`~lalm_lens.spans.AudioSpan` whose ``offset_s`` is the window's start,
so a 45 s clip gives 750 + 375 tokens in two spans. The batch axis of the
``audio.*`` hooks and ``hook_audio_embeds`` is therefore the window, not the
example (``AudioSpan.encoder_row`` maps them). The processor takes one clip
per prompt.
"""

from transformers import AudioFlamingo3ForConditionalGeneration

from .base import Adapter


class AudioFlamingo3Adapter(Adapter):
    hf_class = AudioFlamingo3ForConditionalGeneration
    model_types = ("audioflamingo3",)
    arch = "audioflamingo3"
    placeholder = "<sound>"
    feature_mask_key = "input_features_mask"
    clips_per_prompt_max = 1

    @property
    def max_audio_seconds(self) -> float:
        return float(self.processor.max_audio_len)

    @property
    def window_seconds(self) -> float:
        return float(self.processor.feature_extractor.chunk_length)
