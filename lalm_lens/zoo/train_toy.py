"""Train ``lalm-toy``: a small Qwen2-Audio taught, on CPU, to list, detect and judge synthetic audio.

    python -m lalm_lens.zoo.train_toy --threads 2              # the recipe's run, into out/lalm-toy (not the shipped folder)
    python -m lalm_lens.zoo.train_toy --out /tmp/toy --steps 300 --threads 1
    python -m lalm_lens.zoo.train_toy --evaluate [--out MODEL] [--results DIR]  # held-out accuracies, attention peaks
    python -m lalm_lens.zoo.train_toy --evaluate --write-card   # update the shipped eval_results.json and card

The model is a real ``Qwen2AudioForConditionalGeneration`` (thin Whisper-style
encoder, deeper Qwen2 decoder) with a word-level tokenizer that carries the
real Qwen2-Audio special tokens and chat template, and a WhisperFeatureExtractor
for clips up to 10 s. Every training example is drawn fresh from the synthetic
generators (``lalm_lens.data``) with a seed derived from the run seed and the
step, so a run is reproducible; held-out evaluation uses seeds of the other
parity, never seen in training.

Tasks (answers are the only positions with a loss; see :class:`Config` for the two stages):

- "What sounds are in the audio?"           -> present classes in order of appearance, "dog, bell, rain"
- "Is there a {label} sound?"               -> "yes" / "no"; several per sequence, one turn each
- "Is the {label} sound high or low?"       -> "high" / "low" (pitch for its class)
- "Is the {label} sound loud or quiet?"     -> "loud" / "quiet" (level within the clip)
- "Who is speaking?", "Is the speech loud or quiet?"  -> "m1" ... "f4", "loud" / "quiet"
- "How many syllables are spoken?"          -> "8" ... "15"
- "What emotion does the speaker express?"  -> "neutral" / "happy" / "angry" / "sad" (stage 2 only; no gradient
  from it reaches the encoder)

Sounds are named by their class word or by a paraphrase of several words.

No question ever asks when, where, or in which order relative to another event
a sound occurs, so localization stays a training-free probe.

This module is the command line; the recipe's code is in :mod:`lalm_lens.zoo.toy`, one module per idea.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
from pathlib import Path

from lalm_lens.zoo.toy import evaluation  # evaluation.EVAL_SEED: heldout_split rebinds it
from lalm_lens.zoo.toy.evaluation import EVALUATE_N, QUICK_LOOK, QUICK_LOOK_N, evaluate, quick_look, row_means
from lalm_lens.zoo.toy.model_card import save_evaluation
from lalm_lens.zoo.toy.recipe import DEFAULT_OUT, TRAIN_OUT, Config
from lalm_lens.zoo.toy.training import retrain, train


def config_override(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--set`` as a ``Config`` field and its value: JSON (``true``, ``0.5``, ``[4, 6]``; Python's
    ``True`` / ``False`` too) for all but the text fields, whose value is taken as written."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"--set {item}: expected KEY=VALUE")
    if key not in fields:
        close = difflib.get_close_matches(key, fields, n=1)
        raise ValueError(f"--set {item}: not a Config field" + (f" (did you mean {close[0]}?)" if close else ""))
    if fields[key].type == "str":
        return key, value
    try:
        parsed = json.loads({"True": "true", "False": "false"}.get(value, value))
    except json.JSONDecodeError:
        raise ValueError(f"--set {item}: {value!r} is not a JSON value (true, 0.5, [4, 6], ...)") from None
    return key, tuple(parsed) if isinstance(parsed, list) else parsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None,
                        help=f"folder to train into (default: {TRAIN_OUT}; copy it into lalm_lens/zoo/lalm-toy to ship it); "
                             "with --evaluate, the model to evaluate (default: the shipped lalm-toy)")
    parser.add_argument("--minutes", type=float, default=Config.minutes,
                        help="wall-clock budget (0: none): training stops there, and the learning rate anneals by it "
                             "where the clock runs ahead of the steps")
    parser.add_argument("--steps", type=int, default=Config.steps, help="planned steps (the learning-rate schedule's length)")
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--micro", action="store_true", help="a micro model and batch, for smoke tests")
    parser.add_argument("--resume", action="store_true",
                        help="go on from the checkpoint in --out (written every checkpoint_every steps), if there is one")
    parser.add_argument("--until", type=int, default=None, help="stop after this step with a checkpoint (then --resume)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override any Config field")
    parser.add_argument("--retrain", default=None, metavar="FOLDER",
                        help="train the model in FOLDER ('lalm-toy': the shipped one) again, every run that made it one "
                             "after another with its recorded settings, into --out, --out-2, ... (with --resume: go on "
                             "where it stopped; --threads N: N instead of each run's own, 0 or none: each run's own)")
    parser.add_argument("--evaluate", action="store_true", help="evaluate the model in --out instead of training")
    parser.add_argument("--n", type=int, default=None,
                        help=f"held-out examples per task for --evaluate (default {EVALUATE_N}); clips for --quick-look "
                             f"(default {QUICK_LOOK_N}, a multiple of 4)")
    parser.add_argument("--quick-look", action="store_true",
                        help="teacher-forced accuracy by question and number of events of the run in --out "
                             "(its checkpoint while it trains), in about a minute; --threads 1 beside a training run")
    parser.add_argument("--split", type=int, default=None, metavar="SEED",
                        help=f"with --evaluate: draw the held-out clips from another split (default: {evaluation.EVAL_SEED}, the "
                             "split the model card reports and recipes were chosen on)")
    parser.add_argument("--results", default=None,
                        help="with --evaluate: folder for eval_results.json (default: out/eval-<model folder name>)")
    parser.add_argument("--write-card", action="store_true",
                        help="with --evaluate: write eval_results.json and MODEL_CARD.md into the model's folder "
                             "(how the shipped card is updated after retraining)")
    args = parser.parse_args(argv)
    if not args.evaluate and (args.results or args.write_card or args.split is not None):
        parser.error("--results, --split and --write-card go with --evaluate")
    if args.results and args.write_card:
        parser.error("--write-card writes into the model's folder (--out); drop --results")
    if args.split is not None and args.write_card:
        parser.error(f"--split and --write-card do not go together: the model card reports the default split ({evaluation.EVAL_SEED}); "
                     "write another split's figures with --results")
    if args.split is not None and args.split < 0:
        parser.error(f"--split {args.split}: a split is a non-negative seed")
    if args.n is not None and not (args.evaluate or args.quick_look):
        parser.error("--n goes with --evaluate or --quick-look")
    if args.retrain and (args.evaluate or args.quick_look):
        parser.error("--retrain trains; evaluate or look at the runs it writes afterwards")
    if args.quick_look and (args.evaluate or args.set or args.resume or args.until):
        parser.error("--quick-look only reads the run in --out (with --threads); it trains and evaluates nothing")
    if args.quick_look:
        n = QUICK_LOOK_N if args.n is None else args.n
        if n < 4 or n % 4:
            parser.error(f"--quick-look --n {n}: a positive multiple of 4 (clips of 1-4 events alike)")
        look = quick_look(args.out or TRAIN_OUT, n=n, threads=args.threads)
        print(f"{args.out or TRAIN_OUT}" + (f" at step {look['step']}" if look["step"] is not None else "")
              + f": teacher-forced accuracy on {n // 4} held-out clips per column")
        print(f"{'':19}" + "".join(f"{k} event{'s' * (k > 1)}".rjust(10) for k in range(1, 5)) + "mean".rjust(10))
        means = row_means(look)
        for question in QUICK_LOOK:
            print(f"{question:19}" + "".join("-".rjust(10) if a is None else f"{a:10.2f}" for a in look[question])
                  + f"{means[question]:10.3f}")
        print(f"sum of the four property rows' means: {sum(means[q] for q in QUICK_LOOK[2:]):.3f}")
        return
    if args.evaluate:
        args.out = args.out or str(DEFAULT_OUT)
        results = evaluate(args.out, n=EVALUATE_N if args.n is None else args.n, threads=args.threads, split=args.split)
        target = Path(args.out) if args.write_card else Path(args.results or Path("out", f"eval-{Path(args.out).name}"))
        save_evaluation(args.out, results, target, card=args.write_card)
        return
    if args.retrain:
        if args.set or args.micro or args.until or (args.steps, args.seed, args.minutes) != (Config.steps, Config.seed, Config.minutes):
            parser.error("--retrain trains with the settings each run recorded: drop --set, --micro, --until, --steps, "
                         "--seed and --minutes")
        folder = DEFAULT_OUT if args.retrain == "lalm-toy" else Path(args.retrain)
        if not Path(folder, "training_log.json").exists():
            parser.error(f"--retrain {args.retrain}: no training_log.json there (a folder that a training run wrote)")
        retrain(folder, out=args.out or TRAIN_OUT, threads=args.threads or None, resume=args.resume)
        return
    overrides = dict(out=args.out or str(TRAIN_OUT), minutes=args.minutes, steps=args.steps, seed=args.seed, threads=args.threads)
    try:
        overrides.update(config_override(item) for item in args.set)
    except ValueError as error:
        parser.error(str(error))
    cfg = Config.micro(**overrides) if args.micro else Config(**overrides)
    train(cfg, resume=args.resume, until=args.until)


if __name__ == "__main__":
    main()
