"""How fast can a question be learnt from a checkpoint? (docs/toy_recipe.md, runs J and K)

Fine-tunes a run's checkpoint for 150 steps (fresh AdamW, lr 3e-4, batch 16) on one
kind of question with the question tokens blind to the audio (the training's audio
dropout at 1; ``sighted``: not blind), on fresh training clips, and prints the share of answers right (teacher
forced) per 25 steps: pitch answers, or emotion answers for ``emotion``. Formats:

- one-event: "Is the {label} sound high or low?" about a one-event 3 s clip
- one-class: the same, dogs only (no reading of pitch relative to the class needed)
- one-or-two: the same question about one event of a 1-2-event 4-6 s clip
- drills: the recipe's drills (1-2 events, 4-6 s, pitch and loudness, up to 4 turns)
- level-mixed: "Is the {label} sound loud or quiet?" about either event of a 4-6 s clip of
  two, one loud and one quiet (clips drawn until so), so "loud" is right half the time
- speech-level: "Is the speaker loud or quiet?" about an utterance set loud or quiet as in
  training: the loudness of the whole clip, with no sound to find
- emotion: "What emotion does the speaker express?" about an utterance, which reaches the
  decoder detached from the encoder as in training (the decoder alone learns it)
- contrast: the recipe's contrast drills (2-3 events, pitch and loudness of the one that every
  other differs from in both; a class-blind average of the clip answers them wrongly)
- balanced: 2 or 4 events, half high and half low, half loud and half quiet, asked both properties
  of one: neither the clip's average nor its opposite says anything about the answer
- name: "What is the {paraphrase} sound?" -> its class word, about a clip where it sounds: a
  question answered from the text alone, that needs the named class at the answering position
- presence: the recipe's presence questions (up to 4, "yes" as often as "no") about a 1-4-event clip;
  with the question tokens blind, only the answering position can look the named sound up

Formats joined by "+" are mixed, each clip drawn from one of them at random (the share right is
that of the answers of the first format's kind, over every clip of the mix: pitch for "contrast+name";
the other formats' kinds follow it, named: "list" for the name answers).

Several formats, comma-separated, run one after the other (a ladder), 150 steps each.
A third argument ``sighted`` lets the question tokens see the audio (no dropout); ``late`` lets them see it
in the decoder's second half of layers only (``Batches.collate``'s ``blind_early_only``), so the name
must look the sound up later but from its own position. With ``--slide``, the
question tokens go blind from the front, rung by rung: on rung r of R, the last (R - 1 - r) / R of each
question's tokens still see the audio (``Batches.collate``'s ``sighted_tail``), so the lookup of the named
sound must move from the name towards the answering position a few tokens per rung.

    python docs/toy_recipe/finetune.py RUN one-event   # a run, its checkpoint, or a saved model
    python docs/toy_recipe/finetune.py RUN one-event,one-or-two,drills
    python docs/toy_recipe/finetune.py RUN level-mixed sighted
    python docs/toy_recipe/finetune.py RUN contrast,contrast --save FOLDER   # then --quick-look or --evaluate it
    python docs/toy_recipe/finetune.py RUN presence,presence,presence,presence,presence --slide
"""

import argparse

import numpy as np
import torch

from lalm_lens.data import CONDITIONS, EMOTIONS, LEVELS, PITCHES, SPEAKERS, make_scene, make_utterance
from lalm_lens.zoo.toy import batching, drawing, evaluation, recipe

FORMATS = ("one-event", "one-class", "one-or-two", "drills", "level-mixed", "speech-level", "emotion", "contrast", "balanced", "name", "presence")


def example(fmt: str, rng: np.random.Generator) -> drawing.Example:
    if "+" in fmt:
        fmt = str(rng.choice(fmt.split("+")))
    seed = 2 * int(rng.integers(2**30)) + 1  # odd: a training seed
    if fmt in ("emotion", "speech-level"):
        utt = make_utterance(str(rng.choice(EMOTIONS)), SPEAKERS[rng.integers(len(SPEAKERS))], seed,
                             condition=str(rng.choice(CONDITIONS)))
        wave = utt.wave[: 10 * recipe.SAMPLING_RATE]
        if fmt == "emotion":
            return drawing.Example(wave, [(recipe.EMOTION_Q, utt.emotion)], "emotion")
        level = str(rng.choice(LEVELS))
        return drawing.Example(drawing.speech_at_level(wave, level, rng), [(recipe.SPEECH_LEVEL_Q, level)], "speech")
    if fmt == "level-mixed":
        duration, layout = float(rng.uniform(4, 6)), str(rng.choice(["equal", "random"]))
        for seed in range(seed, seed + 2**20, 2):  # odd seeds from this one, until a clip is mixed
            scene = make_scene(seed, n_events=2, duration_s=duration, layout=layout, properties=True)
            if len({e.level for e in scene.events}) == 2:
                break
        event = scene.events[int(rng.integers(2))]
        return drawing.Example(scene.wave, [(recipe.LEVEL_Q.format(label=event.label), event.level)], "drill")
    if fmt == "contrast":
        scene, event = evaluation.contrast_scene(seed, 2 + int(rng.integers(2)), rng, duration_s=float(rng.uniform(4, 6)),
                                         layout=str(rng.choice(["equal", "random"])))
        return drawing.drill_about(scene, event, rng)
    if fmt == "balanced":
        n_events = 2 * (1 + int(rng.integers(2)))
        pitches, levels = (list(rng.permutation(list(pair) * (n_events // 2))) for pair in (PITCHES, LEVELS))
        scene = make_scene(seed, n_events=n_events, duration_s=float(rng.uniform(4, 6)), properties=True,
                           layout=str(rng.choice(["equal", "random"])), pitches=pitches, levels=levels)
        return drawing.drill_about(scene, scene.events[int(rng.integers(n_events))], rng)
    if fmt == "name":
        scene = make_scene(seed, n_events=1 + int(rng.integers(3)), duration_s=float(rng.uniform(4, 6)),
                           layout=str(rng.choice(["equal", "random"])), properties=True)
        label = scene.events[int(rng.integers(len(scene.events)))].label
        return drawing.Example(scene.wave, [(recipe.NAME_Q.format(label=drawing.name(label, rng, 1.0)), label)], "list")
    if fmt == "presence":
        scene = make_scene(seed, n_events=1 + int(rng.integers(4)), duration_s=float(rng.uniform(4, 6)),
                           layout=str(rng.choice(["equal", "random"])))
        return drawing.Example(scene.wave, drawing.presence_turns(scene.labels, 4, rng), "questions")
    if fmt in ("one-event", "one-class"):
        scene = make_scene(seed, n_events=1, duration_s=3.0, properties=True, classes=("dog",) if fmt == "one-class" else None)
    else:
        scene = make_scene(seed, n_events=1 + int(rng.integers(2)), duration_s=float(rng.uniform(4, 6)),
                           layout=str(rng.choice(["equal", "random"])), properties=True)
    if fmt == "drills":
        return drawing.Example(scene.wave, drawing.property_turns(scene.events, 4, rng), "drill")
    return drawing.pitch_drill(scene, rng)


def main(run: str, formats: str, sighted: bool = False, steps: int = 150, save: str | None = None,
         slide: bool = False, late: bool = False) -> None:
    unknown = [f for f in formats.replace("+", ",").split(",") if f not in FORMATS]
    if unknown:
        raise SystemExit(f"formats must be among {FORMATS}, got {unknown}")
    torch.set_num_threads(1)
    model, processor, step = evaluation.load_run(run)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
    collate, rng = batching.Batches(recipe.Config(), processor, 0, 0).collate, np.random.default_rng(1)
    rungs = formats.split(",")
    for r, fmt in enumerate(rungs):
        tail = (len(rungs) - 1 - r) / len(rungs) if slide else 0.0
        seeing = (", sighted" if sighted else ", sighted in the second half" if late
                  else f", the last {tail:.0%} of the question sighted" if slide else "")
        print(f"{run} at step {step}, {fmt}{seeing}: {answered(fmt)[0]} answers right per 25 steps")
        train(model, optimizer, collate, fmt, rng, steps, 0.0 if sighted else 1.0, tail, late)
    if save:
        model.eval().save_pretrained(save)
        processor.save_pretrained(save)
        print(f"saved the fine-tuned model to {save}")


def answered(fmt: str) -> list[str]:
    """The kinds of answer counted for ``fmt``: one per format of a mix, the first format's first."""
    kind = {"emotion": "emotion", "level-mixed": "level", "speech-level": "speech", "name": "list", "presence": "presence"}
    return list(dict.fromkeys(kind.get(f, "pitch") for f in fmt.split("+")))


def train(
    model, optimizer, collate, fmt: str, rng: np.random.Generator, steps: int, audio_dropout: float,
    sighted_tail: float = 0.0, late: bool = False,
) -> None:
    kinds = answered(fmt)
    window = {kind: np.zeros(2) for kind in kinds}
    for i in range(steps):
        examples = [example(fmt, rng) for _ in range(16)]
        batch = collate(examples, audio_dropout=audio_dropout, rng=rng, sighted_tail=sighted_tail, blind_early_only=late)
        loss, stats = batching.answer_stats(batching.forward_logits(model, batch), batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        for kind in kinds:
            window[kind] += stats.get(kind, np.zeros(4))[2:]
        if (i + 1) % 25 == 0 or i + 1 == steps:
            shares = [f"{right / max(n, 1):.2f}" for right, n in window.values()]
            print(f"{i + 1:4d} {shares[0]}" + "".join(f"  {k} {v}" for k, v in zip(kinds[1:], shares[1:])), flush=True)
            window = {kind: np.zeros(2) for kind in kinds}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("formats", help="FORMAT[,FORMAT...], each FORMAT one of the formats above or several joined by '+'")
    parser.add_argument("sighted", nargs="?", choices=["sighted", "late"],
                        help="the question tokens see the audio (late: in the decoder's second half only)")
    parser.add_argument("--save", default=None, help="save the fine-tuned model and processor into this folder")
    parser.add_argument("--slide", action="store_true", help="the question tokens go blind from the front, rung by rung")
    args = parser.parse_args()
    if args.slide and args.sighted:
        parser.error(f"--slide makes the question tokens blind rung by rung; it cannot go with '{args.sighted}'")
    main(args.run, args.formats, sighted=args.sighted == "sighted", save=args.save, slide=args.slide,
         late=args.sighted == "late")
