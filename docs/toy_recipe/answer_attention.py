"""Where does the position that answers a property question look? (docs/toy_recipe.md, run R)

Held-out equal-layout three-event clips are asked "Is the {label} sound high or low?"
about one of their events (every token sees the audio, as at evaluation). Per decoder
layer and head, the share of the answering position's attention that falls on the named
sound, on the other sounds, and on each token of the question and of the chat template after it
(the last being the answering position itself); beside them, how often
the model's first answer token is right.

    python docs/toy_recipe/answer_attention.py RUN   # a run, its checkpoint, or a saved model
"""

import sys

import numpy as np
import torch

from lalm_lens.zoo import train_toy as tt

N_CLIPS, BATCH = 96, 32


def main(run: str) -> None:
    torch.set_num_threads(1)
    model = tt.load_hooked(run)
    question = list(range(-(tt.n_tokens(tt.PITCH_Q.format(label="dog")) + tt.CHAT_TOKENS_AFTER_QUESTION), 0))
    options = [model.to_single_token(p) for p in tt.PITCHES]
    named, others, text, right = [], [], [], []
    for batch, chunk, asked in tt.pitch_questions(model, N_CLIPS, BATCH):
        with torch.no_grad():
            logits, cache = model.run_with_cache(batch, names_filter=lambda name: name.endswith("attn.hook_pattern"))
        picked = logits[:, -1, options].argmax(-1).tolist()
        right += [tt.PITCHES[k] == e.pitch for k, e in zip(picked, asked)]
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
            text.append([pattern[j][:, question].numpy() for pattern in patterns])
    tokens = model.to_str_tokens(batch.input_ids[0])[question[0] :]
    np.set_printoptions(precision=2, suppress=True)
    print(f"{run}: {N_CLIPS} clips; rows: layers, columns: heads")
    print("share of the answering position's attention on the named sound\n", np.mean(named, 0))
    print("on the other sounds\n", np.mean(others, 0))
    for layer, shares in enumerate(np.mean(text, 0)):
        print(f"layer {layer}, on the question's tokens {tokens} (rows: heads)\n", shares)
    print(f"pitch answers right: {np.mean(right):.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
