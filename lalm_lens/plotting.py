"""Plots a person would rather look at than read: attention to audio over time, above the spectrogram."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from jaxtyping import Float
from scipy.signal import spectrogram


def plot_audio_attention(
    seconds: Float[np.ndarray, "audio_token"],
    attention: Float[np.ndarray, "layer audio_token"],
    wave: Float[np.ndarray, "time"],
    sampling_rate: int,
    *,
    layers: Sequence[int] | None = None,
    events: Sequence | None = None,
    title: str = "",
):
    """Heat map of attention (layers × time) with the clip's spectrogram below, on one time axis.

    ``events`` are objects with ``label``, ``start_s`` and ``stop_s`` (e.g.
    :class:`lalm_lens.data.EventInterval`), drawn as labelled bands. Returns
    the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    attention = np.atleast_2d(attention)
    layers = list(range(len(attention))) if layers is None else list(layers)
    duration = len(wave) / sampling_rate
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 5), sharex=True, height_ratios=[max(2, len(layers) / 3), 2], layout="constrained"
    )
    step = seconds[1] - seconds[0] if len(seconds) > 1 else duration
    image = top.imshow(
        attention, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
        extent=(seconds[0] - step / 2, seconds[-1] + step / 2, -0.5, len(layers) - 0.5),
    )
    top.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    top.set_ylabel("decoder layer")
    fig.colorbar(image, ax=[top, bottom], label="attention to audio token", pad=0.01, shrink=0.6, anchor=(0, 1))
    freqs, times, power = spectrogram(wave, fs=sampling_rate, nperseg=512, noverlap=384)
    bottom.imshow(
        10 * np.log10(power + 1e-10), aspect="auto", origin="lower", cmap="viridis",
        extent=(times[0], times[-1], freqs[0], freqs[-1]),
    )
    bottom.set_ylabel("Hz")
    bottom.set_xlabel("seconds")
    bottom.set_xlim(0, duration)
    for event in events or []:
        for axis in (top, bottom):
            axis.axvspan(event.start_s, event.stop_s, fill=False, edgecolor="white", linestyle="--", linewidth=1)
        bottom.text((event.start_s + event.stop_s) / 2, bottom.get_ylim()[1] * 0.9, event.label,
                    color="white", ha="center", va="top", fontsize=9)
    if title:
        top.set_title(title)
    return fig
