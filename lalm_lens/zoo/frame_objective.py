"""The audio encoder's generic objective in ``lalm-toy``'s recipe: sound-event detection, frame by frame.

Real audio-language models take an encoder pretrained for a generic objective
(speech recognition, sound-event tagging) and leave the task to the decoder.
The toy's encoder learns, besides what the answers teach it, to say at every
audio token which event class sounds there (or none) and, where the clip's
events carry them, that event's pitch (high / low for its class) and level
(loud / quiet in the clip). The heads that read this off the projector output
(``hook_audio_embeds``) are thrown away after training; nothing about emotion
is among the targets. Whether a named sound's pitch or level is then answered
is still the decoder's work: it must find the sound and read it out.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from lalm_lens.data import EVENT_CLASSES, LEVELS, PITCHES
from lalm_lens.data.scenes import EventInterval

NONE = len(EVENT_CLASSES)
"""The class target of a token where no event sounds."""
KINDS = ("frame_class", "frame_pitch", "frame_level")
"""The three targets, as the training log names their windows."""


class FrameHeads(torch.nn.Module):
    """Linear read-outs of every audio token: class (or none), pitch and level logits."""

    def __init__(self, d_model: int):
        super().__init__()
        self.linear = torch.nn.Linear(d_model, NONE + 1 + len(PITCHES) + len(LEVELS))

    def forward(self, audio: Float[torch.Tensor, "token d_model"]) -> list[Float[torch.Tensor, "token _"]]:
        return list(self.linear(audio).split([NONE + 1, len(PITCHES), len(LEVELS)], dim=-1))


def frame_targets(
    clips: Sequence[Sequence[EventInterval]], n_tokens: Sequence[int], seconds_per_token: float
) -> Int[torch.Tensor, "token 3"]:
    """Class, pitch and level targets of every audio token of ``clips`` (each clip's events), concatenated in
    clip order as the projector output is. A token belongs to the event sounding at its centre; -100 (ignored)
    for a clip without events (speech) and for a property its event does not carry or where none sounds."""
    rows = []
    for events, n in zip(clips, n_tokens):
        target = np.full((n, 3), -100, dtype=np.int64)
        if events:
            centre = (np.arange(n) + 0.5) * seconds_per_token
            target[:, 0] = NONE
            for event in events:
                inside = (centre >= event.start_s) & (centre < event.stop_s)
                target[inside, 0] = EVENT_CLASSES.index(event.label)
                target[inside, 1] = PITCHES.index(event.pitch) if event.pitch else -100
                target[inside, 2] = LEVELS.index(event.level) if event.level else -100
        rows.append(target)
    return torch.from_numpy(np.concatenate(rows)) if rows else torch.zeros((0, 3), dtype=torch.long)


def frame_loss(
    heads: FrameHeads, audio: Float[torch.Tensor, "token d_model"], targets: Int[torch.Tensor, "token 3"]
) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """The mean of the three targets' cross-entropies over the tokens that carry them, and per target
    ``[loss sum, 1, tokens right, tokens]`` as the training windows count them."""
    loss, stats = audio.new_zeros(()), {}
    for kind, logits, target in zip(KINDS, heads(audio), targets.unbind(-1)):
        kept = target != -100
        if not kept.any():
            continue
        ce = F.cross_entropy(logits[kept], target[kept])
        loss = loss + ce / len(KINDS)
        right = (logits[kept].argmax(-1) == target[kept]).sum()
        stats[kind] = np.array([float(ce.detach()), 1, float(right), float(kept.sum())])
    return loss, stats
