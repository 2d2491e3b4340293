"""Train ``lalm-toy``: the learning-rate schedule, checkpoints to stop a run and resume it, the training loop
(:func:`train`), and :func:`retrain`, which trains a model made by several runs again in one go.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import Qwen2AudioForConditionalGeneration

from lalm_lens.zoo.frame_objective import FrameHeads, frame_loss
from lalm_lens.zoo.toy.batching import Batches, answer_stats, batch_audio_embeds, forward_logits
from lalm_lens.zoo.toy.drawing import in_focus
from lalm_lens.zoo.toy.evaluation import EVALUATE_N, evaluate
from lalm_lens.zoo.toy.model_card import save_evaluation
from lalm_lens.zoo.toy.recipe import TASKS, TRAIN_OUT, WINDOWS, Config, build_model, build_processor
from lalm_lens.zoo.toy.runs import (
    base_run, config_as_saved, config_from_record, model_weights, recorded_config, settings_changed, stage_out, stages,
    whole_history,
)


def lr_at(step: int, cfg: Config, elapsed_s: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to ``min_lr`` by the planned last step, a function of the step alone, so
    that a run is the same run on any machine. With a time budget (``minutes``), by the end of the budget where
    that comes first, so that a run the clock cuts short is still annealed (it then depends on the machine's speed:
    on the slower of two machines the rate falls sooner)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.minutes:
        progress = max(progress, elapsed_s / (60 * cfg.minutes))
    progress = min(1.0, progress)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


AUDIO_MODULES = ("model.audio_tower.", "model.multi_modal_projector.")
"""The state-dict prefixes of the audio encoder and projector: what ``fresh_decoder`` takes from ``init_from``."""


def freeze_audio(model: Qwen2AudioForConditionalGeneration) -> None:
    """Stage 2: the audio encoder and projector stop learning (and run without autograd)."""
    for module in (model.model.audio_tower, model.model.multi_modal_projector):
        module.requires_grad_(False)
        module.eval()


def save_checkpoint(
    folder: Path, cfg: Config, model, optimizer, step: int, seconds: float, history: list[dict], heads=None,
    legs: list[dict] = (), continues: dict | None = None,
) -> None:
    """Everything a run needs to go on after ``step`` steps: weights (and the frame objective's ``heads``) and
    AdamW moments (safetensors), and the config, the step, the training seconds spent, the curves so far, the
    ``legs`` (see :func:`train`) it ran in and the run it ``continues`` (JSON). Written to temporary names, then
    renamed."""
    tensors = {f"model.{k}": v.contiguous().cpu() for k, v in model.state_dict().items()}
    if heads is not None:
        tensors.update({f"frames.{k}": v.contiguous().cpu() for k, v in heads.state_dict().items()})
    optim = optimizer.state_dict()
    for index, state in optim["state"].items():
        tensors.update({f"optim.{index}.{k}": v.contiguous().cpu() for k, v in state.items()})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "state.tmp")
    meta = {"config": dataclasses.asdict(cfg), "step": step, "seconds": seconds, "history": history,
            "legs": list(legs), "param_groups": optim["param_groups"], **({"continues": continues} if continues else {})}
    (folder / "state.json.tmp").write_text(json.dumps(meta))
    (folder / "state.tmp").replace(folder / "state.safetensors")
    (folder / "state.json.tmp").replace(folder / "state.json")


def load_checkpoint(folder: Path, cfg: Config, model, optimizer, heads=None) -> dict:
    """Restore what :func:`save_checkpoint` wrote into ``model``, ``optimizer`` (and ``heads``); returns its step, seconds and
    history. Refuses a checkpoint of another recipe (only ``RESUMABLE_CHANGES`` may differ; see
    :func:`recorded_config`)."""
    tensors, meta = load_file(folder / "state.safetensors"), json.loads((folder / "state.json").read_text())
    # checkpoints written before the config was recorded are taken on trust
    changed = settings_changed(meta, cfg) if "config" in meta else []
    if changed:
        saved, now = recorded_config(meta), config_as_saved(cfg)
        differences = ", ".join(f"{k}: {saved.get(k)!r} there, {now[k]!r} now" for k in changed)
        raise ValueError(f"the checkpoint in {folder} was made with other settings ({differences}); "
                         "resume with the same --set options or start afresh")
    model.load_state_dict(model_weights(tensors))
    if heads is not None:
        heads.load_state_dict({k.removeprefix("frames."): v for k, v in tensors.items() if k.startswith("frames.")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


def to_device(batch: dict, device: torch.device) -> dict:
    """``batch`` with its tensors on ``device`` (``Config.device``; the rest as it was)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _worker_init(_):
    torch.set_num_threads(1)


@torch.enable_grad()
def train(cfg: Config, resume: bool = False, until: int | None = None, schedule=lr_at) -> Path:
    """Train, save model + processor with ``save_pretrained`` into ``cfg.out``, plot the curves; returns the folder.

    Every ``checkpoint_every`` steps the run's state goes to ``cfg.out/checkpoint``; with ``resume`` a run
    continues from there (the batches are a function of the step, so it goes on as if never stopped) and
    ``minutes`` counts the training time of all its parts together. ``until``: stop after that step with a
    checkpoint and no model, to split a long run into parts. The log's ``legs`` say which steps each part
    ran, on how many threads, in how many seconds. ``schedule``: the learning rate at a step, :func:`lr_at`'s
    signature (another run's recorded rates, say)."""
    if cfg.fresh_decoder and not cfg.init_from:
        raise ValueError("fresh_decoder takes the audio encoder and projector from init_from: set init_from=FOLDER too")
    if cfg.checkpoint_every % cfg.log_every:
        raise ValueError(f"checkpoint_every ({cfg.checkpoint_every}) must be a multiple of log_every ({cfg.log_every})")
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    processor = build_processor(cfg)
    model = build_model(cfg, processor.tokenizer)
    device = torch.device(cfg.device)
    checkpoint = out / "checkpoint"
    resuming = resume and (checkpoint / "state.json").exists()
    continues = None if cfg.fresh_decoder or resuming else base_run(cfg.init_from)
    if cfg.init_from and not resuming:
        trained = Qwen2AudioForConditionalGeneration.from_pretrained(cfg.init_from, dtype=torch.float32).state_dict()
        if cfg.fresh_decoder:
            trained = {k: v for k, v in trained.items() if k.startswith(AUDIO_MODULES)}
        model.load_state_dict(trained, strict=not cfg.fresh_decoder)
    model.to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.dim() < 2 or "embed" in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    heads = FrameHeads(cfg.d_model).to(device) if cfg.frame_weight else None
    if heads is not None:
        groups.append({"params": list(heads.parameters()), "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
    history: list[dict] = []
    legs: list[dict] = []
    first, spent = 0, 0.0
    if resuming:
        meta = load_checkpoint(checkpoint, cfg, model, optimizer, heads)
        first, spent, history, continues = meta["step"], meta["seconds"], meta["history"], meta.get("continues")
        legs = meta.get("legs") or [{"from": 0, "to": first, "threads": None, "seconds": round(spent, 1)}]
        print(f"resuming from step {first} ({spent / 60:.1f} min of training so far)")
    elif resume:
        print(f"no checkpoint in {checkpoint}: starting from step 0")
    loader = torch.utils.data.DataLoader(
        Batches(cfg, processor, first, cfg.steps), batch_size=None, num_workers=cfg.workers,
        worker_init_fn=_worker_init if cfg.workers else None, prefetch_factor=4 if cfg.workers else None,
    )
    window = {t: np.zeros(4) for t in WINDOWS}
    start, done = time.time() - spent, first
    if until == cfg.steps:
        until = None  # stopping at the last step ends the run as a whole run does, with its model

    def all_legs() -> list[dict]:
        leg = {"from": first, "to": done, "threads": torch.get_num_threads(), "seconds": round(time.time() - start - spent, 1)}
        return [*legs, leg]

    if first >= cfg.stage2_step and cfg.freeze_encoder:
        freeze_audio(model)
    bar = tqdm(loader, initial=first, total=cfg.steps, desc="train lalm-toy", dynamic_ncols=True)
    for step, batch in enumerate(bar, start=first):
        if step == cfg.stage2_step and cfg.freeze_encoder:
            freeze_audio(model)
            bar.write(f"step {step}: audio encoder and projector frozen; emotion questions begin")
        batch = to_device(batch, device)
        lr = schedule(step, cfg, time.time() - start)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.set_grad_enabled(not (cfg.focus_frozen and in_focus(cfg, step))):
            audio = batch_audio_embeds(model, batch)
        loss, stats = answer_stats(forward_logits(model, batch, audio), batch)
        if heads is not None and audio.requires_grad:
            frames, frame_stats = frame_loss(heads, audio, batch["frame_targets"])
            loss, stats = loss + cfg.frame_weight * frames, {**stats, **frame_stats}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for group in groups for p in group["params"]], cfg.grad_clip)
        optimizer.step()
        for task, s in stats.items():
            window[task] += s
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {"step": step + 1, "seconds": round(time.time() - start, 1), "lr": lr}
            for task, (loss_sum, examples, ok, answers) in window.items():
                if answers:
                    row[f"{task}_acc"], row[f"{task}_loss"] = ok / answers, loss_sum / examples
            history.append(row)
            window = {t: np.zeros(4) for t in WINDOWS}
            bar.set_postfix({k.removesuffix("_acc"): f"{v:.2f}" for k, v in row.items() if k.endswith("_acc")})
        done = step + 1
        if done == until or (done % cfg.checkpoint_every == 0 and done < cfg.steps):
            save_checkpoint(checkpoint, cfg, model, optimizer, done, time.time() - start, history, heads, all_legs(),
                            continues)
        if done == until:
            bar.close()
            print(f"stopped after step {done}; go on with --resume")
            return checkpoint
        if cfg.minutes and time.time() - start > cfg.minutes * 60:
            bar.write(f"time budget of {cfg.minutes:g} min reached after {done} of {cfg.steps} steps")
            break
    bar.close()
    wall = time.time() - start
    model.cpu().eval()
    for stale in ("eval_results.json", "MODEL_CARD.md"):
        if (out / stale).exists():
            (out / stale).unlink()
            print(f"removed {out / stale}: it described the weights this run replaces")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    log = {
        "config": dataclasses.asdict(cfg), "parameters": n_params, "steps": done, "wall_seconds": round(wall, 1),
        "threads": torch.get_num_threads(), "legs": all_legs(), "history": history,
        **({"continues": continues} if continues else {}),
    }
    (out / "training_log.json").write_text(json.dumps(log, indent=1))
    plot_curves(*whole_history(log), out / "training_curve.png")
    shutil.rmtree(checkpoint, ignore_errors=True)
    print(f"saved {n_params / 1e6:.2f} M parameters to {out} after {done} steps in {wall / 60:.1f} min")
    return out


def retrain(folder: str | Path, out: str | Path = TRAIN_OUT, threads: int | None = None, resume: bool = False) -> Path:
    """Train the model in ``folder`` again in one go: its first run and each run that continued it
    (:func:`stages`), one after another, each with the settings its training log records and from the weights
    of the one before, into ``out``, ``out-2``, ... (:func:`stage_out`). Where a run was continued from
    evaluated weights, those are evaluated the same way first, with their card (the "before" figures of the
    last card). ``threads``: as each run had (None) or this many. With ``resume``, runs already finished in
    their folders are kept up to the first that is not, which goes on from its checkpoint if it has one.
    Returns the last run's folder."""
    log_path = Path(folder, "training_log.json")
    if not log_path.exists():
        raise FileNotFoundError(f"{log_path} not found: --retrain takes a folder that a training run wrote")
    chain = stages(json.loads(log_path.read_text()))
    targets = [Path(stage_out(k, out)) for k in range(len(chain))]
    if Path(folder).resolve() in [t.resolve() for t in targets]:
        raise ValueError(f"retraining {folder} into {', '.join(map(str, targets))} would overwrite it: "
                         "choose another --out")
    first_from = recorded_config(chain[0])["init_from"]
    if first_from and not Path(first_from).exists():
        raise FileNotFoundError(f"the first run started from {first_from}, which is not there (run it from where it was)")
    minutes = sum(stage["wall_seconds"] for stage in chain) / 60
    print(f"retraining {folder}: {len(chain)} run(s), {sum(s['steps'] for s in chain)} steps "
          f"({minutes:.0f} min of training when they were made)"
          + (f"; the first starts from {first_from} as it is now" if first_from else ""))
    keep = resume
    for k, (stage, target) in enumerate(zip(chain, targets)):
        config = {**recorded_config(stage), "out": str(target), "threads": stage["threads"] if threads is None else threads,
                  **({"init_from": str(targets[k - 1])} if k else {})}
        cfg = config_from_record(config)
        records = [target / "training_log.json", target / "checkpoint" / "state.json"]
        for meta in (json.loads(r.read_text()) for r in records if resume and r.exists()):
            if "config" in meta and (changed := settings_changed(meta, cfg)):
                raise ValueError(f"{target} holds a run of other settings (its {', '.join(changed)} differ): move it, "
                                 "or retrain into another --out")
        keep = keep and (target / "training_log.json").exists()
        if keep:
            print(f"run {k + 1}: kept, finished in {target}")
        else:
            print(f"run {k + 1} of {len(chain)}: {stage['steps']} steps into {target}")
            train(cfg, resume=resume)
        before = stage.get("eval_results")
        if k + 1 < len(chain) and before:
            kept = json.loads((target / "eval_results.json").read_text()) if (target / "eval_results.json").exists() else {}
            if not (keep and (kept.get("n"), kept.get("split")) == (before.get("n"), before.get("split"))):
                results = evaluate(target, n=before.get("n", EVALUATE_N), threads=cfg.threads, split=before.get("split"))
                save_evaluation(target, results, target, card=True)
    return targets[-1]


def plot_curves(history: list[dict], starts: list[int], path: Path) -> None:
    """Teacher-forced accuracy and loss per task over the steps; a dotted line where a continuation began."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.6))
    for task in WINDOWS:
        rows = [r for r in history if f"{task}_acc" in r]
        if not rows:  # a kind this run never trained (e.g. "name" without Config.name_step)
            continue
        steps, style = [r["step"] for r in rows], "-" if task in TASKS else ":"
        ax_acc.plot(steps, [r[f"{task}_acc"] for r in rows], style, label=task)
        ax_loss.plot(steps, [r[f"{task}_loss"] for r in rows], style, label=task)
    ax_acc.set(xlabel="step", ylabel="answers exactly right (teacher forced)", ylim=(0, 1.02), title="training accuracy")
    ax_loss.set(xlabel="step", ylabel="answer loss (nats / token)", yscale="log", title="training loss")
    for ax in (ax_acc, ax_loss):
        for step in starts:
            ax.axvline(step, color="grey", linestyle=":")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
