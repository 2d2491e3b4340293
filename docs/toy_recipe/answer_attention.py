"""Where does the position that answers a property question look? (docs/toy_recipe.md, runs R, LA)

Held-out equal-layout three-event clips are asked "Is the {label} sound high or low?"
about one of their events (every token sees the audio, as at evaluation). Per decoder
layer and head, the share of the answering position's attention that falls on the named
sound, on the other sounds, and on each token of the question and of the chat template after it
(the last being the answering position itself); beside them, how often
the model's first answer token is right. With ``--pick``, the clips are two-sound 3 s
contrast clips, as the pick-out drills (the named sound differs from the other in pitch
and level), each asked its pitch and its level question.

    python docs/toy_recipe/answer_attention.py RUN [--pick]   # a run, its checkpoint, or a saved model
"""

import sys

import numpy as np
import torch

from lalm_lens.data import LEVELS, PITCHES
from lalm_lens.zoo.toy import evaluation, recipe

N_CLIPS, BATCH = 96, 32


def pick_questions(model, question: str):
    """Two-sound 3 s held-out contrast clips, each asked ``question`` about its contrasting sound."""
    rng = np.random.default_rng(5)
    items = [evaluation.contrast_scene(evaluation.heldout_seed(900_000 + i), 2, rng, duration_s=recipe.PICK_SECONDS) for i in range(N_CLIPS)]
    for i in range(0, N_CLIPS, BATCH):
        chunk, asked = [s for s, _ in items[i : i + BATCH]], [e for _, e in items[i : i + BATCH]]
        prompts = [question.format(label=e.label) for e in asked]
        yield model.prepare([s.wave for s in chunk], prompts, sampling_rate=recipe.SAMPLING_RATE), chunk, asked


def shares(model, batches, question: str, answers: tuple[str, ...], attribute: str) -> None:
    """Print the answering position's attention shares over ``batches`` and how often ``attribute`` is answered right."""
    positions = list(range(-(recipe.n_tokens(question.format(label="dog")) + recipe.CHAT_TOKENS_AFTER_QUESTION), 0))
    options = [model.to_single_token(a) for a in answers]
    named, others, text, right = [], [], [], []
    for batch, chunk, asked in batches:
        with torch.no_grad():
            logits, cache = model.run_with_cache(batch, names_filter=lambda name: name.endswith("attn.hook_pattern"))
        picked = logits[:, -1, options].argmax(-1).tolist()
        right += [answers[k] == getattr(e, attribute) for k, e in zip(picked, asked)]
        patterns = [cache[f"blocks.{layer}.attn.hook_pattern"][:, :, -1] for layer in range(model.cfg.n_layers)]
        for j, (scene, event) in enumerate(zip(chunk, asked)):
            inside = batch.audio_mask(j, start_s=event.start_s, stop_s=event.stop_s)
            elsewhere = np.zeros_like(inside)
            for other in scene.events:
                if other is not event:
                    elsewhere |= batch.audio_mask(j, start_s=other.start_s, stop_s=other.stop_s)
            elsewhere &= ~inside
            over_audio = [batch.audio_slice(pattern, j, 0, dim=-1).numpy() for pattern in patterns]  # [head, token]
            named.append([w[:, inside].sum(-1) for w in over_audio])
            others.append([w[:, elsewhere].sum(-1) for w in over_audio])
            text.append([pattern[j][:, positions].numpy() for pattern in patterns])
    tokens = model.to_str_tokens(batch.input_ids[0])[positions[0] :]
    print(f"share of the answering position's attention on the named sound ({attribute} questions)\n", np.mean(named, 0))
    print("on the other sounds\n", np.mean(others, 0))
    for layer, values in enumerate(np.mean(text, 0)):
        print(f"layer {layer}, on the question's tokens {tokens} (rows: heads)\n", values)
    print(f"{attribute} answers right: {np.mean(right):.2f}")


def main(run: str, pick: bool = False) -> None:
    torch.set_num_threads(1)
    model = evaluation.load_hooked(run)
    np.set_printoptions(precision=2, suppress=True)
    print(f"{run}: {N_CLIPS} clips; rows: layers, columns: heads")
    if not pick:
        shares(model, evaluation.pitch_questions(model, N_CLIPS, BATCH), recipe.PITCH_Q, PITCHES, "pitch")
        return
    for question, answers, attribute in ((recipe.PITCH_Q, PITCHES, "pitch"), (recipe.LEVEL_Q, LEVELS, "level")):
        shares(model, pick_questions(model, question), question, answers, attribute)


if __name__ == "__main__":
    main(sys.argv[1], pick="--pick" in sys.argv[2:])
