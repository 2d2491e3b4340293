"""What a training run of ``lalm-toy`` recorded, read back: the config in its checkpoint or training log, the model's
weights among a checkpoint's tensors, and the runs it continues (a model made by several runs, one after another).

Training, evaluation and the model card all read these records, so they live here, below all three.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from lalm_lens.zoo.toy.recipe import TRAIN_OUT, Config

RESUMABLE_CHANGES = ("out", "threads", "minutes", "workers", "device")
# Fields added after checkpoints were first written, with the value that means what runs did before them.
ADDED_FIELDS = {
    "ladder_steps": 0, "pitch_frac": 0.0, "plain_frac": 0.0, "emotion_weight": 1.0, "frame_weight": 0.0, "late_audio": 0.0,
    "contrast": 0.0, "balanced": False, "late_lookup": False, "fresh_decoder": False, "pick_frac": 0.0, "late_step": 0,
    "pick_questions": 1, "device": "cpu", "focus_frac": 1.0, "focus_dropout": 0.0, "focus_frozen": False,
    "wide_pick_step": 0, "sighted_presence_step": 0, "name_step": 0, "property_weight": 1.0, "freeze_encoder": True,
}


def config_as_saved(cfg: Config) -> dict:
    """``cfg`` as a checkpoint or training log records it (JSON: tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def recorded_config(meta: dict) -> dict:
    """The config (as JSON) that a checkpoint's ``meta`` says its run was made with; a field the checkpoint does
    not record was added since and counts as its ``ADDED_FIELDS`` value."""
    return {**ADDED_FIELDS, **meta.get("config", {})}


def config_from_record(record: dict) -> Config:
    """The ``Config`` that a recorded config (JSON, as :func:`recorded_config` gives it) stands for."""
    return Config(**{key: tuple(v) if isinstance(v, list) else v for key, v in record.items()})


def settings_changed(meta: dict, cfg: Config) -> list[str]:
    """The ``Config`` fields in which the run that a training log or checkpoint's ``meta`` records differs from
    ``cfg``, beyond those a run may change when it resumes (``RESUMABLE_CHANGES``)."""
    saved = recorded_config(meta)
    return sorted(key for key, value in config_as_saved(cfg).items()
                  if key not in RESUMABLE_CHANGES and saved.get(key) != value)


def model_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state dict among a checkpoint's tensors (the rest are AdamW moments)."""
    return {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}


def base_run(init_from: str) -> dict | None:
    """The training log of the run saved in ``init_from`` with its ``eval_results`` (where it has them), which a
    run from those weights keeps as the run it ``continues``; None where ``init_from`` holds no training log."""
    folder = Path(init_from) if init_from else None
    if folder is None or not (folder / "training_log.json").exists():
        return None
    base = json.loads((folder / "training_log.json").read_text())
    if (folder / "eval_results.json").exists():
        base["eval_results"] = json.loads((folder / "eval_results.json").read_text())
    return base


def stages(log: dict) -> list[dict]:
    """A training log and the logs of the runs it continues (see :func:`base_run`), the first run first."""
    chain = [log]
    while "continues" in chain[0]:
        chain.insert(0, chain[0]["continues"])
    return chain


def whole_history(log: dict) -> tuple[list[dict], list[int]]:
    """The training curves of a run and of every run it continues, one after another with their steps counted
    from the first run's start; and the steps where each continuation began."""
    rows, starts, offset = [], [], 0
    for stage in stages(log):
        if offset:
            starts.append(offset)
        rows += [{**row, "step": row["step"] + offset} for row in stage["history"]]
        offset += stage["steps"]
    return rows, starts


def stage_out(k: int, root: str | Path = TRAIN_OUT) -> str:
    """Where run ``k`` of a model made by several goes (0: the first run) when the first goes to ``root``: the
    card's commands and :func:`retrain` put them there."""
    root = Path(root)
    return str(root) if k == 0 else f"{root}-{k + 1}"
