"""Does a sound's pitch reach the position that answers? (docs/toy_recipe.md, run J)

One-event 3 s held-out clips are asked "Is the {label} sound high or low?" with the
question tokens blind to the audio, as under the training's audio dropout. After each
decoder layer (and of the embeddings), linear probes read the answering position's residual: pitch given the
class (residual times the class's one-hot), pitch without it, and the class itself;
beside them, how often the model's own answer is right.

    python docs/toy_recipe/pitch_at_the_answer.py RUN   # a run, its checkpoint, or a saved model
"""

import sys

import numpy as np
import torch

from lalm_lens.data import EVENT_CLASSES, PITCHES, make_scene
from lalm_lens.zoo import diagnostics
from lalm_lens.zoo.toy import batching, drawing, evaluation, recipe

N_TRAIN, N_TEST = 480, 160


def main(run: str) -> None:
    torch.set_num_threads(1)
    model, processor, step = evaluation.load_run(run)
    model.eval()
    scenes = [make_scene(evaluation.heldout_seed(800_000 + i), n_events=1, duration_s=3.0, properties=True)
              for i in range(N_TRAIN + N_TEST)]
    pitch = np.array([PITCHES.index(s.events[0].pitch) for s in scenes])
    label = np.array([EVENT_CLASSES.index(s.events[0].label) for s in scenes])
    examples = [drawing.pitch_drill(s, np.random.default_rng(0)) for s in scenes]  # one event: always it
    collate, states, right = batching.Batches(recipe.Config(), processor, 0, 0).collate, [], 0
    with torch.no_grad():
        for i in range(0, len(examples), 32):
            batch = collate(examples[i : i + 32], audio_dropout=1.0, rng=np.random.default_rng(0))
            rows = torch.arange(len(batch["input_ids"]))
            out = batching.decoder_output(model, batch, output_hidden_states=True)
            answer = (batch["targets"] != -100).int().argmax(-1)
            states.append(torch.stack(out.hidden_states)[:, rows, answer].double().numpy())
            right += int((model.lm_head(out.last_hidden_state[rows, answer]).argmax(-1) == batch["targets"][rows, answer]).sum())
    states = np.concatenate(states, 1)
    print(f"{run} at step {step}: the model's own answer is right {right / len(scenes):.2f} of the time")
    print("residual     | pitch given the class | pitch without it | the class")
    given = np.eye(len(EVENT_CLASSES))[label][:, :, None]
    for layer, x in enumerate(states):
        where = "embeddings" if layer == 0 else f"layer {layer - 1}"
        probes = [(given * x[:, None]).reshape(len(x), -1), x, x]
        targets = [pitch, pitch, label]
        accs = [diagnostics.linear_probe(f[:N_TRAIN], y[:N_TRAIN], f[N_TRAIN:], y[N_TRAIN:])["accuracy"] for f, y in zip(probes, targets)]
        print(f"{where:12} | " + " | ".join(f"{a:.2f}" for a in accs))


if __name__ == "__main__":
    main(sys.argv[1])
