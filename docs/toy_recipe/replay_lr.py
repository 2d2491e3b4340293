"""Train a model's first run again with the learning rate its training log recorded, up to a step.

The shipped model's first run (V2) followed the clock for its first 2400 steps (the old ``--minutes 120``), so
``--retrain`` trains it on another schedule. This script replays the recorded one: until ``--replay-until`` each
step's rate is read off the first run's log (recorded every 25 steps, at the last step of each window, and
interpolated between; the warm-up is the formula's, which the clock never touched), and from there on the rate
is ``lr_at``'s. The settings, batches and everything else are the recorded run's.

    python docs/toy_recipe/replay_lr.py lalm_lens/zoo/lalm-toy --out out/RV --threads 2 --until 4400
    python docs/toy_recipe/windows.py out/RV/checkpoint/state.json --every 400
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lalm_lens.zoo.toy import training
from lalm_lens.zoo.toy.runs import config_from_record, recorded_config, stages


def recorded_lr(log: dict, until: int, schedule=training.lr_at):
    """``schedule`` with the rates that ``log`` recorded before step ``until`` (see the module's docstring)."""
    rows = [r for r in log["history"] if r["step"] <= until]
    steps, rates = np.array([r["step"] - 1 for r in rows]), np.array([r["lr"] for r in rows])

    def lr_at(step, cfg, elapsed_s=0.0):
        if cfg.warmup_steps <= step < until:
            return float(np.interp(step, steps, rates))
        return schedule(step, cfg)
    return lr_at


def main(folder: str, out: str, threads: int, until: int | None, replay_until: int, resume: bool) -> Path:
    first = stages(json.loads(Path(folder, "training_log.json").read_text()))[0]
    cfg = config_from_record({**recorded_config(first), "out": out, "threads": threads})
    return training.train(cfg, resume=resume, until=until, schedule=recorded_lr(first, replay_until))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", help="a saved model whose first run to replay (e.g. lalm_lens/zoo/lalm-toy)")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--until", type=int, default=None, help="stop after this step with a checkpoint")
    p.add_argument("--replay-until", type=int, default=2400, help="the recorded rates until this step")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args()
    main(a.folder, a.out, a.threads, a.until, a.replay_until, a.resume)
