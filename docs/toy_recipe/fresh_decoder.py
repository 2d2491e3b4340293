"""Can a decoder with fresh weights learn to pick a named sound out, on a run's frozen encoder? (docs/toy_recipe.md)

The clips are balanced two-event 3 s clips (one sound high and one low, one loud and one
quiet), each asked the pitch or the level of one of its sounds: neither the clip's average
nor its opposite says anything about the answer; only picking out the named sound does
(``--events 3 --seconds 6``: three sounds in 6 s, both answers of each property among them,
the asked sound drawn so that the clip's majority answer is right half the time).
The audio embeddings of RUN's encoder and projector are computed once, for ``--clips``
training clips and 512 held-out ones; a decoder of the recipe's shape, with fresh weights
(or RUN's own, ``--decoder run``), then learns on them alone (AdamW, constant lr 1e-3 or ``--lr``,
batch 32, the training clips in turn). Every 100 steps it prints the share of pitch and level
answers right on the held-out clips (teacher forced). ``--mask late``: the question tokens
are blind to the audio and the answering position is blind to it in the decoder's first
half, as under the recipe's dropout with ``late_audio`` at 1, so the sound can only be picked
out by the answering position, in layers 3-5; ``--mask question-late``: the question tokens
see the audio in the decoder's second half only (``late_lookup``); ``--mask answer``: the question tokens are
blind and the answering position sees the audio in every layer; ``--mask recipe``: the recipe's shares of each.

    python docs/toy_recipe/fresh_decoder.py RUN            # a run, its checkpoint, or a saved model
    python docs/toy_recipe/fresh_decoder.py RUN --decoder run --mask late --steps 600

After training it prints the held-out accuracy with the answering position's audio attention cut in the
decoder's second half and in every layer (under the training's masks and, where they differ, with none),
and ``--save DIR`` keeps the trained model (another run of the script can start from it).
"""

import argparse
import time

import numpy as np
import torch

from lalm_lens.data import make_scene
from lalm_lens.zoo.toy import batching, drawing, evaluation, recipe, training

N_TEST, BATCH = 512, 32


def clips(n: int, seed, rng: np.random.Generator, n_events: int = 2, seconds: float = 3.0) -> list[drawing.Example]:
    examples = []
    for i in range(n):
        pitches, levels = drawing.balanced_properties(n_events, rng)
        scene = make_scene(seed(i), n_events=n_events, duration_s=seconds, layout=str(rng.choice(["equal", "random"])),
                           properties=True, pitches=pitches, levels=levels)
        examples.append(drawing.Example(scene.wave, drawing.balanced_turns(scene.events, 1, rng), "drill", tuple(scene.events)))
    return examples


MASKS = {
    "sighted": {},
    "answer": dict(audio_dropout=1.0),
    "late": dict(audio_dropout=1.0, late_audio=1.0),
    "question-late": dict(audio_dropout=1.0, blind_early_only=True),
    "recipe": dict(audio_dropout=0.8, late_audio=0.8),
}
"""What may attend to the audio: everything; the answering position alone, in every layer; the answering position
alone, in the decoder's second half (the recipe's dropout with ``late_audio`` at 1); the question tokens and the
answering position, in the second half only for the question (``late_lookup``); as in the recipe
(``Config.audio_dropout`` and ``late_audio``, drawn per question turn)."""


def embedded(model, collate, examples: list[drawing.Example], mask: str) -> list[dict]:
    """Collated batches of ``examples`` under ``MASKS[mask]``, each with its audio embeddings under ``"audio"``."""
    batches = []
    for i in range(0, len(examples), BATCH):
        batch = collate(examples[i : i + BATCH], rng=np.random.default_rng(i), **MASKS[mask])
        with torch.no_grad():
            batch["audio"] = batching.batch_audio_embeds(model, batch)
        batches.append(batch)
    return batches


def answering_blind(batch: dict, audio_id: int, second_half_only: bool) -> dict:
    """``batch`` with each answering position (the first of an answer span) blind to the audio in the decoder's
    second half, or in every layer (the retrieval diagnostic's knockout of the last prompt position)."""
    answer = batch["targets"] != -100
    answering = answer & ~torch.nn.functional.pad(answer, (1, 0))[:, :-1]
    cut = ~(answering[:, None, :, None] & (batch["input_ids"] == audio_id)[:, None, None, :])
    early = batch["early_mask"] if batch["early_mask"] is not None else batch["attention_mask"]
    return {**batch, "attention_mask": batch["attention_mask"] & cut, "early_mask": early if second_half_only else early & cut}


def accuracy(learner, batches: list[dict]) -> dict[str, float]:
    """The share of pitch and level answers right (teacher forced) over ``batches``."""
    right = {"pitch": np.zeros(4), "level": np.zeros(4)}
    with torch.no_grad():
        for b in batches:
            stats = batching.answer_stats(batching.forward_logits(learner, b, b["audio"]), b)[1]
            for kind in right:
                right[kind] += stats.get(kind, np.zeros(4))
    return {k: r[2] / max(r[3], 1) for k, r in right.items()}


def main(run: str, steps: int = 1500, n_clips: int = 4000, decoder: str = "fresh", mask: str = "sighted",
         threads: int = 2, save: str = "", lr: float = 1e-3, n_events: int = 2, seconds: float = 3.0) -> None:
    torch.set_num_threads(threads)
    model, processor, step = evaluation.load_run(run)
    model.eval()
    cfg, started = recipe.Config(), time.time()
    collate = batching.Batches(cfg, processor, 0, 0).collate
    train_clips = clips(n_clips, lambda i: drawing.train_seed(cfg.seed, i), np.random.default_rng(0), n_events, seconds)
    train = embedded(model, collate, train_clips, mask)
    held_out = clips(N_TEST, evaluation.heldout_seed, np.random.default_rng(1), n_events, seconds)
    test = embedded(model, collate, held_out, mask)
    sighted = test if mask == "sighted" else [
        {**collate(held_out[i : i + BATCH]), "audio": b["audio"]} for i, b in zip(range(0, N_TEST, BATCH), test)]
    if decoder == "run":
        learner = model
    else:
        torch.manual_seed(cfg.seed)  # as recipe.build_model seeds it: the same fresh weights as a run of this shape
        learner = type(model)(model.config)
        audio = {name: w for name, w in model.state_dict().items() if name.startswith(training.AUDIO_MODULES)}
        learner.load_state_dict(audio, strict=False)  # RUN's encoder, so that --save keeps a whole model
    params = [p for name, p in learner.named_parameters() if not name.startswith(training.AUDIO_MODULES)]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    at = "" if step is None else f" at step {step}"
    print(f"{decoder} decoder on {run}'s encoder{at}, {n_clips} training clips of {n_events} sounds in {seconds:g} s, audio attention {mask} "
          f"({time.time() - started:.0f} s to embed): pitch / level answers right on {N_TEST} held-out clips")
    for i in range(steps + 1):
        if i % 100 == 0 or i == steps:
            learner.eval()
            print(f"{i:5d}" + "".join(f"  {k} {a:.3f}" for k, a in accuracy(learner, test).items()), flush=True)
            learner.train()
        if i == steps:
            break
        batch = train[i % len(train)]
        loss, _ = batching.answer_stats(batching.forward_logits(learner, batch, batch["audio"]), batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    learner.eval()
    if save:
        learner.save_pretrained(save)
        processor.save_pretrained(save)
    audio_id = model.config.audio_token_index
    print("the answering position's audio attention cut (held-out pitch / level):")
    for name, batches in {mask: test, "sighted": sighted}.items():
        for cut, half in [("none", None), ("second half", True), ("every layer", False)]:
            cut_batches = batches if half is None else [answering_blind(b, audio_id, half) for b in batches]
            print(f"  {name:>13} masks, cut {cut:>11}:" + "".join(f"  {k} {a:.3f}" for k, a in accuracy(learner, cut_batches).items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--clips", type=int, default=4000, help="training clips (their embeddings are kept in memory)")
    parser.add_argument("--decoder", choices=["fresh", "run"], default="fresh", help="fresh weights, or the run's own decoder")
    parser.add_argument("--mask", choices=list(MASKS), default="sighted", help="who may attend to the audio (see MASKS)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW's learning rate (constant)")
    parser.add_argument("--save", default="", help="a folder to save the trained model in (RUN's encoder with it)")
    parser.add_argument("--events", type=int, default=2, help="sounds per clip, both answers of each property among them")
    parser.add_argument("--seconds", type=float, default=3.0, help="the clips' length")
    args = parser.parse_args()
    main(args.run, args.steps, args.clips, args.decoder, args.mask, args.threads, args.save, args.lr, args.events, args.seconds)
