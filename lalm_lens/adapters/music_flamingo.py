"""Music Flamingo: Audio Flamingo 3's layout (30 s windows, Whisper-style encoder, GELU projector, Qwen2.5
decoder) plus a rotary time embedding (RoTE) between the encoder and the projector.

Windows, spans and hooks are AF3's (:mod:`.audio_flamingo3`): one
:class:`~lalm_lens.spans.AudioSpan` per 30 s window at 25 tokens/s, ``offset_s``
the window's start; up to 20 minutes per clip and one clip per prompt. Each
clip's placeholders sit between ``<|sound_bos|>`` and ``<|sound_eos|>``.

The time embedding rotates the encoder output by angles that depend on each
token's absolute time, which the model reads from the placeholder runs of
``input_ids``. ``audio.hook_out`` is therefore the projector's input *after*
the rotation (the encoder's own output is ``audio.blocks.{last}.hook_resid_post``
followed by the encoder's final LayerNorm), and ``hook_audio_embeds`` is the
projector's output, as in AF3.
"""

from transformers import MusicFlamingoForConditionalGeneration

from .audio_flamingo3 import AudioFlamingo3Adapter


class MusicFlamingoAdapter(AudioFlamingo3Adapter):
    hf_class = MusicFlamingoForConditionalGeneration
    model_types = ("musicflamingo",)
    arch = "musicflamingo"
