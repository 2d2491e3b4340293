"""Where is a named sound's pitch, when only picking that sound out tells it? (docs/toy_recipe.md, run T)

Held-out two-event clips, one sound high and one low (and one loud, one quiet), are asked
"Is the {label} sound high or low?" about one of them (every token sees the audio, as at
evaluation): the clip's average says nothing about the answer. Per decoder layer, a linear
probe reads the named sound's pitch from the residual stream at the class word and at the
answering position (trained on half the clips, tested on the other half; chance 50 %),
beside how often the model's answer is right.

    python docs/toy_recipe/named_pitch.py RUN   # a run, its checkpoint, or a saved model
"""

import sys

import numpy as np
import torch

from lalm_lens.data import LEVELS, PITCHES, make_scene
from lalm_lens.zoo import diagnostics
from lalm_lens.zoo.toy import evaluation, recipe

N_CLIPS, BATCH = 320, 32


def balanced_pairs(n: int) -> tuple[list, list]:
    """``n`` held-out two-event clips holding both answers of each property, and the event asked about in each."""
    rng = np.random.default_rng(5)
    scenes, asked = [], []
    for i in range(n):
        pitches, levels = (list(rng.permutation(list(pair))) for pair in (PITCHES, LEVELS))
        scene = make_scene(evaluation.heldout_seed(500_000 + i), n_events=2, duration_s=5.0, properties=True, layout="equal",
                           pitches=pitches, levels=levels)
        scenes.append(scene)
        asked.append(scene.events[int(rng.integers(2))])
    return scenes, asked


def main(run: str) -> None:
    torch.set_num_threads(1)
    model = evaluation.load_hooked(run)
    names = ["blocks.0.hook_resid_pre", *(f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers))]
    at_word: dict[str, list[np.ndarray]] = {name: [] for name in names}
    at_answer: dict[str, list[np.ndarray]] = {name: [] for name in names}
    options = [model.to_single_token(p) for p in PITCHES]
    scenes, asked = balanced_pairs(N_CLIPS)
    right = []
    for i in range(0, N_CLIPS, BATCH):
        events = asked[i : i + BATCH]
        batch = model.prepare([s.wave for s in scenes[i : i + BATCH]], [recipe.PITCH_Q.format(label=e.label) for e in events],
                              sampling_rate=recipe.SAMPLING_RATE)
        with torch.no_grad():
            logits, cache = model.run_with_cache(batch, names_filter=lambda name: name in at_word)
        right += [PITCHES[k] == e.pitch for k, e in zip(logits[:, -1, options].argmax(-1).tolist(), events)]
        words = [int((batch.input_ids[b] == model.to_single_token(e.label)).nonzero()[-1]) for b, e in enumerate(events)]
        for name in names:
            at_word[name].append(cache[name][torch.arange(len(events)), words].numpy())
            at_answer[name].append(cache[name][:, -1].numpy())
    pitch = np.array([PITCHES.index(e.pitch) for e in asked])
    half = N_CLIPS // 2
    print(f"{run}: {N_CLIPS} two-event clips, one sound high and one low; answers right "
          f"{100 * np.mean(right):.1f} %; linear probes for the named sound's pitch ({half} clips to train, "
          f"{N_CLIPS - half} to test)")
    for name in names:
        shares = []
        for rows in (at_word, at_answer):
            x = np.concatenate(rows[name])
            shares.append(100 * diagnostics.linear_probe(x[:half], pitch[:half], x[half:], pitch[half:])["accuracy"])
        where = "embedding" if name.endswith("resid_pre") else f"layer {name.split('.')[1]}"
        print(f"{where:10} at the class word {shares[0]:3.0f} %   at the answering position {shares[1]:3.0f} %")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: named_pitch.py RUN")
    main(sys.argv[1])
