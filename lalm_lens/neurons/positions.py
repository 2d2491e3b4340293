"""Which positions of a batch a neuron statistic pools over: all, audio, text or the last prompt token."""

from __future__ import annotations

import torch
from jaxtyping import Bool

from ..batch import LALMBatch

POSITIONS = ("all", "audio", "text", "last")


def check_positions(positions: str, encoder: bool = False) -> str:
    """``positions`` if valid for the stack (the encoder has audio frames only: "all" or "audio")."""
    allowed = ("all", "audio") if encoder else POSITIONS
    if positions not in allowed:
        where = "encoder neurons see only audio frames" if encoder else "decoder positions"
        raise ValueError(f"positions={positions!r} is not one of {allowed} ({where})")
    return positions


def decoder_mask(batch: LALMBatch, positions: str = "all") -> Bool[torch.Tensor, "batch pos"]:
    """Decoder positions to pool over; padding is never included (``attention_mask`` is 0 there)."""
    check_positions(positions)
    real = batch.inputs["attention_mask"].bool()
    if positions == "all":
        return real
    if positions == "last":
        last = torch.zeros_like(real)
        index = real.shape[1] - 1 - real.flip(1).int().argmax(1)
        last[torch.arange(real.shape[0], device=real.device), index] = True
        return last & real
    audio = torch.zeros_like(real)
    for b, spans in enumerate(batch.audio_spans):
        for span in spans:
            audio[b, span.start : span.stop] = True
    return real & (audio if positions == "audio" else ~audio)


def encoder_mask(batch: LALMBatch, n_rows: int, n_frames: int, device=None) -> tuple[Bool[torch.Tensor, "row frame"], list[int]]:
    """``(mask, example_of_row)`` for an encoder tensor ``[row, frame, ...]``.

    A frame counts when it feeds an audio token the decoder sees (so padding
    frames of fixed 30 s windows are left out); ``example_of_row[r]`` is the
    example that encoder row ``r`` belongs to (-1 for rows of no example).
    """
    mask = torch.zeros(n_rows, n_frames, dtype=torch.bool, device=device)
    owner = [-1] * n_rows
    for b, spans in enumerate(batch.audio_spans):
        for span in spans:
            if span.encoder_row >= n_rows:
                raise ValueError(
                    f"example {b} has audio in encoder row {span.encoder_row}, but the encoder tensor has {n_rows} rows: "
                    "was it computed from this batch?"
                )
            owner[span.encoder_row] = b
            mask[span.encoder_row, : min(len(span) * span.frames_per_token, n_frames)] = True
    return mask, owner
