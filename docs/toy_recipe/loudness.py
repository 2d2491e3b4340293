"""Can loudness be heard the way it is labelled? (docs/toy_recipe.md, run N)

0. Peak against loudness, no model: for 40 unlabelled 2 s events of each class,
   the mean of peak / ``loudness`` in dB (how far a level set by the peak sample,
   as labels were until run N, is from what is heard).
1. The labels against the spectrogram, no model: for each event of held-out
   2-4-event 6 s scenes with properties (150 clips of each count), its loudest
   log-mel frame's energy in dB minus that of the clip's loudest event; the
   best single threshold on it, as a share of "loud"/"quiet" labels it gets right.
2. With RUN (a saved model), linear probes for each event's pitch and level on
   ``hook_audio_embeds`` averaged over the event's frames (160 one-, two- and
   three-event scenes each; trained on half the events, tested on the other),
   given the class (features times its one-hot) and without it.

    python docs/toy_recipe/loudness.py [RUN]
"""

import sys

import numpy as np
import torch
from transformers import WhisperFeatureExtractor

from lalm_lens import HookedLALM
from lalm_lens.data import EVENT_CLASSES, LEVELS, PITCHES, loudness, make_event, make_scene
from lalm_lens.zoo import diagnostics
from lalm_lens.zoo.toy import evaluation, recipe


def peaks_against_loudness() -> None:
    for label in EVENT_CLASSES:
        ratios = [np.abs(w).max() / loudness(w) for w in (make_event(label, 2.0, seed) for seed in range(40))]
        print(f"{label}: peak {np.mean(20 * np.log10(ratios)):.1f} dB above loudness")


def labels_against_spectrogram() -> None:
    extractor = WhisperFeatureExtractor(feature_size=80)
    relative, quiet = [], []
    for n_events in (2, 3, 4):
        for i in range(150):
            scene = make_scene(evaluation.heldout_seed(900_000 + 1000 * n_events + i), n_events=n_events, duration_s=6.0,
                               layout="random", properties=True)
            log_mel = extractor(scene.wave, sampling_rate=16000, return_tensors="np").input_features[0] * 4 - 4
            frames = [log_mel[:, int(e.start_s * 100) + 2 : int(e.stop_s * 100) - 2] for e in scene.events]
            energy = [10 * np.log10((10.0**f).sum(0)).max() for f in frames]
            relative += [v - max(energy) for v in energy]
            quiet += [e.level == "quiet" for e in scene.events]
    relative, quiet = np.array(relative), np.array(quiet)
    best = max(((relative < t) == quiet).mean() for t in np.arange(-20, 0, 0.25))
    print(f"best threshold on an event's loudest frame relative to the clip's loudest event: {best:.3f} "
          f"of {len(quiet)} labels (always 'loud': {1 - quiet.mean():.3f})")


def probes(run: str) -> None:
    model = HookedLALM.from_pretrained(run)
    rows = []
    for n_events in (1, 2, 3):
        scenes = [make_scene(evaluation.heldout_seed(900_000 + 1000 * n_events + i), n_events=n_events, duration_s=6.0,
                             properties=True) for i in range(160)]
        for i in range(0, len(scenes), 32):
            chunk = scenes[i : i + 32]
            batch = model.prepare([s.wave for s in chunk], recipe.LIST_Q, sampling_rate=recipe.SAMPLING_RATE)
            with torch.no_grad():
                _, cache = model.run_with_cache(batch, names_filter=["hook_audio_embeds"])
            for j, scene in enumerate(chunk):
                positions = batch.audio_positions(j)
                embeds = cache["hook_audio_embeds"][j, : len(positions)]
                for e in scene.events:
                    inside = torch.tensor(batch.audio_mask(j, start_s=e.start_s, stop_s=e.stop_s))
                    rows.append((n_events, embeds[inside].mean(0).double().numpy(), EVENT_CLASSES.index(e.label),
                                 PITCHES.index(e.pitch), LEVELS.index(e.level)))
    for n_events in (1, 2, 3):
        chosen = [r for r in rows if r[0] == n_events]
        x = np.stack([r[1] for r in chosen])
        given = diagnostics.given_class(x, [r[2] for r in chosen], len(EVENT_CLASSES))
        half = len(chosen) // 2
        for name, column in (("pitch", 3), ("level", 4)):
            y = np.array([r[column] for r in chosen])
            if len(set(y)) < 2:
                continue
            with_class = diagnostics.linear_probe(given[:half], y[:half], given[half:], y[half:])["accuracy"]
            without = diagnostics.linear_probe(x[:half], y[:half], x[half:], y[half:])["accuracy"]
            prior = max(y[half:].mean(), 1 - y[half:].mean())
            print(f"{n_events}-event clips, {name}: given the class {with_class:.3f}, without {without:.3f}, "
                  f"majority {prior:.3f} ({len(y) - half} test events)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    peaks_against_loudness()
    labels_against_spectrogram()
    if len(sys.argv) > 1:
        probes(sys.argv[1])
