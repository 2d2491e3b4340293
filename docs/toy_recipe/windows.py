"""A run's training curves as a table: the mean teacher-forced accuracy of each task over blocks of steps.

    python docs/toy_recipe/windows.py out/lalm-toy/training_log.json --every 400
    python docs/toy_recipe/windows.py out/lalm-toy/training_log.json out/lalm-toy-B/checkpoint/state.json  # side by side

Reads ``training_log.json`` (a saved run) or ``checkpoint/state.json`` (a run in progress); each row averages the
25-step windows the run logged in that block, counting question turns as the run trained them, masks and all.
Given several runs, each cell holds their means in the order given, up to the last step the shortest has logged.
"""

import argparse
import json

import numpy as np

TASKS = ("list", "presence", "pitch", "level", "drill", "emotion")
OPTIONAL = ("name",)  # a column only for runs that trained it (Config.name_step)


def windows(history: list[dict], every: int, tasks=TASKS) -> list[tuple[int, int, list[float | None]]]:
    """``(first step, last step, mean accuracy per task or None)`` for each block of ``every`` steps."""
    last = history[-1]["step"]
    rows = []
    for start in range(0, last, every):
        block = [r for r in history if start < r["step"] <= start + every]
        means = [float(np.mean(v)) if (v := [r[f"{t}_acc"] for r in block if f"{t}_acc" in r]) else None for t in tasks]
        rows.append((start, min(start + every, last), means))
    return rows


def main(logs: list[str], every: int = 500) -> None:
    histories = []
    for log in logs:
        with open(log) as f:
            histories.append(json.load(f)["history"])
    last = min(h[-1]["step"] for h in histories)
    histories = [[r for r in h if r["step"] <= last] for h in histories]
    tasks = TASKS + tuple(t for t in OPTIONAL if any(f"{t}_acc" in r for h in histories for r in h))
    tables = [windows(h, every, tasks) for h in histories]
    if len(logs) > 1:
        print("each cell: " + " / ".join(logs))
    print("| steps | " + " | ".join(tasks) + " |")
    print("|---" * (len(tasks) + 1) + "|")
    for rows in zip(*tables):
        start, stop, _ = rows[0]
        cells = [" / ".join("–" if means[i] is None else f"{means[i]:.2f}" for _, _, means in rows) for i in range(len(tasks))]
        print(f"| {start}–{stop} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("logs", nargs="+", help="training_log.json or checkpoint/state.json, one or more")
    parser.add_argument("--every", type=int, default=500, help="steps per row")
    args = parser.parse_args()
    main(args.logs, args.every)
