"""Which named sounds' pitch and level does a run answer, and does the encoder hand them over? (docs/toy_recipe.md, Z16)

Held-out equal-layout three-event clips are asked the pitch, then the level, of one of their events (as
``--evaluate`` asks them, all tokens seeing the audio). The answers are split by the class asked about, and by
how many of the clip's other sounds share the asked answer: a model that answers from the clip as a whole
scores by that count (near 0 % at none, near 100 % at two), one that picks the named sound out does not; and by
how many of the clip's sounds are quiet (training's pick-out drills always hold a quiet one, these clips need
not). Beside them, per class and for all classes at once, a linear probe reads each event's pitch and level from
the encoder's output (``hook_audio_embeds``) averaged over the event's own frames (all three events of the
first half of the clips to train, of the second half to test; 50 % is chance): what the decoder is handed.

    python docs/toy_recipe/property_by_class.py RUN   # a run, its checkpoint, or a saved model
"""

import sys
from collections import defaultdict

import numpy as np
import torch

from lalm_lens.data import EVENT_CLASSES, LEVELS, PITCHES
from lalm_lens.zoo import diagnostics
from lalm_lens.zoo.toy import evaluation, recipe

N_CLIPS, BATCH = 480, 32
KINDS = (("pitch", recipe.PITCH_Q, PITCHES), ("level", recipe.LEVEL_Q, LEVELS))


def answers(model, scenes, asked, kind: str, question: str, options) -> list[bool]:
    ids = [model.to_single_token(o) for o in options]
    right = []
    for i in range(0, len(scenes), BATCH):
        events = asked[i : i + BATCH]
        batch = model.prepare([s.wave for s in scenes[i : i + BATCH]], [question.format(label=e.label) for e in events],
                              sampling_rate=recipe.SAMPLING_RATE)
        with torch.no_grad():
            chosen = model(batch)[:, -1, ids].argmax(-1).tolist()
        right += [options[k] == getattr(e, kind) for k, e in zip(chosen, events)]
    return right


def event_embeds(model, scenes) -> np.ndarray:
    """``[clip, event, d_model]``: the projector output averaged over each event's frames."""
    rows = []
    for i in range(0, len(scenes), BATCH):
        chunk = scenes[i : i + BATCH]
        batch = model.prepare([s.wave for s in chunk], recipe.LIST_Q, sampling_rate=recipe.SAMPLING_RATE)
        with torch.no_grad():
            _, cache = model.run_with_cache(batch, names_filter=["hook_audio_embeds"])
        for j, scene in enumerate(chunk):
            frames = cache["hook_audio_embeds"][j, : len(batch.audio_positions(j))]
            rows.append([frames[torch.as_tensor(batch.audio_mask(j, start_s=e.start_s, stop_s=e.stop_s))].mean(0).double().numpy()
                         for e in scene.events])
    return np.array(rows)


def main(run: str) -> None:
    torch.set_num_threads(1)
    model = evaluation.load_hooked(run)
    scenes = evaluation.heldout_scenes(N_CLIPS, "equal", 700_000, properties=True)
    rng = np.random.default_rng(11)
    asked = [s.events[int(rng.integers(len(s.events)))] for s in scenes]
    x = event_embeds(model, scenes)
    half = N_CLIPS // 2
    classes = np.array([[EVENT_CLASSES.index(e.label) for e in s.events] for s in scenes])
    print(f"{run}: {N_CLIPS} three-event clips; answers right, % (n), and an encoder probe per class")
    for kind, question, options in KINDS:
        right = answers(model, scenes, asked, kind, question, options)
        groups = defaultdict(list)
        for r, s, e in zip(right, scenes, asked):
            groups[sum(getattr(o, kind) == getattr(e, kind) for o in s.events if o is not e)].append(r)
            groups[e.label].append(r)
            groups[f"quiet {sum(o.level == 'quiet' for o in s.events)}"].append(r)
        y = np.array([[options.index(getattr(e, kind)) for e in s.events] for s in scenes])
        print(f"\n{kind}: {100 * np.mean(right):.1f} % right; by the other sounds sharing the answer: "
              + ", ".join(f"{k} {100 * np.mean(groups[k]):.0f} ({len(groups[k])})" for k in range(3) if groups[k])
              + "; by the clip's quiet sounds: "
              + ", ".join(f"{k} {100 * np.mean(groups[f'quiet {k}']):.0f} ({len(groups[f'quiet {k}'])})" for k in range(3) if groups[f"quiet {k}"]))
        print(f"| {kind} | " + " | ".join(EVENT_CLASSES) + " |\n|---|" + "---|" * len(EVENT_CLASSES))
        print("| answers | " + " | ".join(f"{100 * np.mean(groups[c]):.0f} ({len(groups[c])})" if groups[c] else "–" for c in EVENT_CLASSES) + " |")
        probes = []
        for k in range(len(EVENT_CLASSES)):
            train, test = classes[:half] == k, classes[half:] == k
            fit = train.any() and test.any()
            probes.append(f"{100 * diagnostics.linear_probe(x[:half][train], y[:half][train], x[half:][test], y[half:][test])['accuracy']:.0f}"
                          if fit else "–")
        print("| encoder probe | " + " | ".join(probes) + " |")
        d = x.shape[-1]
        blind = diagnostics.linear_probe(x[:half].reshape(-1, d), y[:half].reshape(-1), x[half:].reshape(-1, d), y[half:].reshape(-1))
        print(f"encoder probe, all classes at once: {100 * blind['accuracy']:.1f} %")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: property_by_class.py RUN")
    main(sys.argv[1])
