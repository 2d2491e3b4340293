"""Does the position that answers a pitch question hold which sound it was asked about? (docs/toy_recipe.md, run S)

Held-out equal-layout three-event clips are asked "Is the {label} sound high or low?" about one of
their events. Per decoder layer, a linear probe on the answering position's residual stream
(``hook_resid_post``; "embedding" is the input of layer 0) reads the class asked about and, given
that class, the asked event's pitch; trained on half the clips, tested on the other half. The
embedding row is the chance level (the same template token every time: the commonest class).

    python docs/toy_recipe/asked_class.py RUN   # a run, its checkpoint, or a saved model
"""

import sys

import numpy as np
import torch

from lalm_lens.data import EVENT_CLASSES, PITCHES
from lalm_lens.zoo import diagnostics
from lalm_lens.zoo.toy import evaluation

N_CLIPS, BATCH = 320, 32


def main(run: str) -> None:
    torch.set_num_threads(1)
    model = evaluation.load_hooked(run)
    names = ["blocks.0.hook_resid_pre", *(f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers))]
    rows: dict[str, list[np.ndarray]] = {name: [] for name in names}
    asked = []
    for batch, _, events in evaluation.pitch_questions(model, N_CLIPS, BATCH):
        with torch.no_grad():
            _, cache = model.run_with_cache(batch, names_filter=lambda name: name in rows)
        for name in names:
            rows[name].append(cache[name][:, -1].numpy())
        asked += events
    classes = np.array([EVENT_CLASSES.index(e.label) for e in asked])
    pitch = np.array([PITCHES.index(e.pitch) for e in asked])
    half = N_CLIPS // 2
    print(f"{run}: linear probes on the answering position, {half} clips to train, {N_CLIPS - half} to test")
    for name in names:
        x = np.concatenate(rows[name])
        asked_class = diagnostics.linear_probe(x[:half], classes[:half], x[half:], classes[half:])
        given = diagnostics.given_class(x, classes, len(EVENT_CLASSES))
        asked_pitch = diagnostics.linear_probe(given[:half], pitch[:half], given[half:], pitch[half:])
        where = "embedding" if name.endswith("resid_pre") else f"layer {name.split('.')[1]}"
        print(f"{where:10} class asked about {100 * asked_class['accuracy']:3.0f} %   "
              f"its pitch, given the class {100 * asked_pitch['accuracy']:3.0f} %")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: asked_class.py RUN")
    main(sys.argv[1])
