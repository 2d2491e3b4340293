"""LALMConfig: the dimensions of a wrapped model, as TransformerLens users expect in ``model.cfg``."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LALMConfig:
    """Shapes and rates of a hooked audio-language model.

    ``audio_tokens_per_second`` is the rate of audio positions in the decoder;
    ``audio_frames_per_second`` that of encoder frames (50 for Whisper-style
    encoders). ``max_audio_seconds`` is the longest clip the model takes
    without truncation; ``window_seconds`` the length of independently
    encoded windows (None when a clip is encoded whole). ``n_ctx`` is the
    decoder's ``max_position_embeddings``: longer sequences are refused.
    ``device`` is where inputs go (kept current by the model).
    """

    arch: str
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_vocab: int
    audio_n_layers: int
    audio_d_model: int
    audio_d_mlp: int
    audio_n_heads: int
    audio_tokens_per_second: float
    audio_frames_per_second: float
    sampling_rate: int
    max_audio_seconds: float
    window_seconds: float | None = None
    name: str = ""
    n_ctx: int | None = None
    device: str | None = None
    # what TransformerLens's ActivationCache reads from ``model.cfg``
    normalization_type: str = "RMS"
    positional_embedding_type: str = "rotary"
    attn_only: bool = False
    final_rms: bool = True

    def to_dict(self) -> dict:
        return asdict(self)
