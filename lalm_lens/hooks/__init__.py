"""Hook functions: small objects that expand to ``fwd_hooks`` lists."""

from .audio_attention import AudioAttention

__all__ = ["AudioAttention"]
