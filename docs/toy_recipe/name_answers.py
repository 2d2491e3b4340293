"""Asked "What is the {label} sound?", does a run answer the sound it was asked about? (docs/toy_recipe.md, run Z15)

Held-out two-event 3 s clips are asked ``NAME_Q`` about their first sound, then about their second (the
sound named by its class word, every token seeing the audio). The question is answered by the text
alone; a model that answers it from the audio instead gives a sound of the clip, often the first, as
the list question's first answer is. Counts of the first answer token (teacher forced): the sound
asked about, the clip's other sound, or anything else.

    python docs/toy_recipe/name_answers.py RUN   # a run, its checkpoint, or a saved model
"""

import sys

import torch

from lalm_lens.data import make_scene
from lalm_lens.zoo.toy import batching, drawing, evaluation, recipe

N_CLIPS = 48


def main(run: str) -> None:
    torch.set_num_threads(1)
    model, processor, step = evaluation.load_run(run)
    model.eval()
    collate = batching.Batches(recipe.Config(), processor, 0, 0).collate
    scenes = [make_scene(evaluation.heldout_seed(900_000 + i), n_events=2, duration_s=3.0, properties=True) for i in range(N_CLIPS)]
    print(f"{run}" + (f" at step {step}" if step is not None else "") + f": {N_CLIPS} two-event clips, asked the name of")
    for which in (0, 1):
        examples = [drawing.Example(s.wave, [(recipe.NAME_Q.format(label=s.events[which].label), s.events[which].label)], "drill",
                               tuple(s.events)) for s in scenes]
        batch = collate(examples)
        with torch.no_grad():
            logits = batching.forward_logits(model, batch)
        answer = (batch["targets"] != -100).int().argmax(-1)
        words = processor.tokenizer.convert_ids_to_tokens(logits[torch.arange(N_CLIPS), answer].argmax(-1).tolist())
        asked = sum(w == s.events[which].label for w, s in zip(words, scenes))
        other = sum(w == s.events[1 - which].label for w, s in zip(words, scenes))
        print(f"  its {'first' if which == 0 else 'second'} sound: that sound {asked}, the other sound {other}, "
              f"another answer {N_CLIPS - asked - other}")


if __name__ == "__main__":
    main(sys.argv[1])
