"""Qwen2-Audio (7B, 7B-Instruct): Whisper-large encoder, AvgPool(2), linear projector, Qwen2 decoder.

Every clip is padded to 30 s (3000 mel frames) and encoded as one row; the
``feature_attention_mask`` says how many frames are real. ``audio.*`` hooks
therefore always see 1500 encoder frames per clip, and ``audio.hook_out`` and
``hook_audio_embeds`` 750 tokens, of which only the real ones reach the
decoder. Their batch axis is the clip (several per prompt are allowed), in
prompt order; ``AudioSpan.encoder_row`` says which row is which clip.
"""

from transformers import Qwen2AudioForConditionalGeneration

from .base import Adapter


class Qwen2AudioAdapter(Adapter):
    hf_class = Qwen2AudioForConditionalGeneration
    model_types = ("qwen2_audio",)
    arch = "qwen2_audio"
    placeholder = "<|AUDIO|>"
    feature_mask_key = "feature_attention_mask"

    @property
    def audio_token_id(self) -> int:
        return self.hf_model.config.audio_token_index

    @property
    def max_audio_seconds(self) -> float:
        return float(self.processor.feature_extractor.chunk_length)
