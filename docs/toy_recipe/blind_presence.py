"""Can the answering position look a named sound up by itself? (docs/toy_recipe.md, run T)

Held-out equal-layout clips of 1-4 events are asked "Is there a {label} sound?" once, "yes" as
often as "no", with the question tokens blind to the audio (the training's audio dropout: only
the position that answers may attend to it), blind in the decoder's first half only
(``Config.late_lookup``'s dropout) and, for comparison, sighted. Prints the share of first
answer tokens right by answer and number of events (teacher forced, as in training).

    python docs/toy_recipe/blind_presence.py RUN   # a run, its checkpoint, or a saved model
"""

import sys

import numpy as np
import torch

from lalm_lens.data import EVENT_CLASSES, make_scene
from lalm_lens.zoo.toy import batching, drawing, evaluation, recipe

N_CLIPS = 64  # per number of events, half asked of a present sound


def questions(n_events: int) -> list[drawing.Example]:
    examples = []
    for i in range(N_CLIPS):
        scene = make_scene(evaluation.heldout_seed(700_000 + 1000 * n_events + i), n_events=n_events, duration_s=5.0,
                           layout="equal")
        answer = ("yes", "no")[i % 2]
        label = scene.labels[0] if answer == "yes" else next(c for c in EVENT_CLASSES if c not in scene.labels)
        turns = [(recipe.PRESENCE_Q.format(label=label), answer)]
        examples.append(drawing.Example(scene.wave, turns, "questions", tuple(scene.events)))
    return examples


def main(run: str) -> None:
    torch.set_num_threads(1)
    model, processor, step = evaluation.load_run(run)
    model.eval()
    collate = batching.Batches(recipe.Config(), processor, 0, 0).collate
    print(f"{run} at step {step}: the share of presence questions answered right, {N_CLIPS} clips per number of events")
    print("question tokens  events   yes    no")
    clips = {n_events: questions(n_events) for n_events in range(1, 5)}
    for mode in ("blind", "first half blind", "sighted"):
        for n_events, examples in clips.items():
            right = {"yes": [], "no": []}
            for i in range(0, N_CLIPS, 16):
                chunk = examples[i : i + 16]
                batch = collate(chunk, audio_dropout=float(mode != "sighted"), rng=np.random.default_rng(0),
                                blind_early_only=mode == "first half blind")
                with torch.no_grad():
                    logits = batching.forward_logits(model, batch)
                rows, first = torch.arange(len(chunk)), (batch["targets"] != -100).int().argmax(-1)
                hits = logits[rows, first].argmax(-1) == batch["targets"][rows, first]
                for example, hit in zip(chunk, hits.tolist()):
                    right[example.turns[0][1]].append(hit)
            print(f"{mode:16} {n_events:6d}  {np.mean(right['yes']):.2f}  {np.mean(right['no']):.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: blind_presence.py RUN")
    main(sys.argv[1])
