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


def plot_layer_time(
    values: Float[np.ndarray, "row column"],
    columns: Sequence,
    row_labels: Sequence[str],
    *,
    colorbar_label: str = "",
    events: Sequence | None = None,
    title: str = "",
    diverging: bool = False,
    cmap: str | None = None,
    ylabel: str = "layer",
):
    """Heat map of layers (rows) × positions, audio columns on a time axis in seconds and text columns by token.

    ``columns`` are objects with ``label``, ``clip`` (None for text),
    ``start_s`` and ``stop_s`` (e.g. :class:`lalm_lens.patching.PositionGroup`),
    one per column of ``values``, in sequence order. Each clip gets a panel
    whose x axis is the clip's time (``events`` of clip 0, objects with
    ``label``/``start_s``/``stop_s``, are outlined there); text positions share
    a panel labelled by token. ``diverging`` centres a red-blue scale at 0.
    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize, TwoSlopeNorm

    values = np.atleast_2d(np.asarray(values, dtype=float))
    if values.shape[1] != len(columns):
        raise ValueError(f"values has {values.shape[1]} columns but {len(columns)} column descriptions were given")
    if values.shape[0] != len(row_labels):
        raise ValueError(f"values has {values.shape[0]} rows but {len(row_labels)} row labels were given")
    clips = sorted({c.clip for c in columns if c.clip is not None})
    text = [i for i, c in enumerate(columns) if c.clip is None]
    panels = [("audio", clip, [i for i, c in enumerate(columns) if c.clip == clip]) for clip in clips]
    if text:
        panels.append(("text", None, text))
    finite = values[np.isfinite(values)]
    if diverging:
        bound = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
        norm, cmap = TwoSlopeNorm(0.0, -bound, bound), cmap or "RdBu_r"
    else:
        norm = Normalize(*(float(finite.min()), float(finite.max())) if finite.size else (0, 1))
        cmap = cmap or "viridis"
    widths = [8.0 if kind == "audio" else max(2.0, 0.3 * len(cols)) for kind, _, cols in panels]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(min(18, 2 + sum(widths)), 1.5 + 0.35 * len(row_labels)),
        width_ratios=widths, sharey=True, layout="constrained", squeeze=False,
    )
    rows = np.arange(len(row_labels) + 1) - 0.5
    image = None
    for axis, (kind, clip, cols) in zip(axes[0], panels):
        if kind == "audio":
            cols = sorted(cols, key=lambda i: columns[i].start_s)
            edges, blocks = [columns[cols[0]].start_s], []
            for i in cols:
                if columns[i].start_s > edges[-1] + 1e-9:  # a stretch of time with no column: left blank
                    edges.append(columns[i].start_s)
                    blocks.append(np.full(len(row_labels), np.nan))
                edges.append(columns[i].stop_s)
                blocks.append(values[:, i])
            image = axis.pcolormesh(np.array(edges), rows, np.stack(blocks, 1), cmap=cmap, norm=norm)
            axis.set_xlabel(f"clip {clip} time (s)" if len(clips) > 1 else "time in the clip (s)")
            for event in events or [] if clip == 0 else []:
                axis.axvspan(event.start_s, event.stop_s, fill=False, edgecolor="grey", linestyle="--", linewidth=1)
                axis.text((event.start_s + event.stop_s) / 2, rows[-1], event.label, ha="center", va="bottom", fontsize=8)
        else:
            image = axis.pcolormesh(np.arange(len(cols) + 1) - 0.5, rows, values[:, cols], cmap=cmap, norm=norm)
            axis.set_xticks(range(len(cols)), [columns[i].label for i in cols], rotation=90, fontsize=8)
            axis.set_xlabel("text position")
    axes[0][0].set_yticks(range(len(row_labels)), list(row_labels), fontsize=8 if len(row_labels) > 12 else 10)
    axes[0][0].set_ylabel(ylabel)
    fig.colorbar(image, ax=axes[0].tolist(), label=colorbar_label, shrink=0.9)
    if title:
        fig.suptitle(title)
    return fig
