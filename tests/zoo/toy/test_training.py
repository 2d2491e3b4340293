"""Training: the learning rate, runs stopped and resumed or continued from a saved model, retraining a model's runs."""

import dataclasses
import json
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import lalm_lens as ll
from lalm_lens.data import make_scene
from lalm_lens.zoo import train_toy as tt
from lalm_lens.zoo.toy import drawing, evaluation, recipe, runs, training

from toy_configs import micro, run_r



def test_the_encoder_never_learns_emotion():
    cfg = run_r()
    stage1 = [drawing.draw_example(cfg, step, i, 6.0) for step in (0, 500, cfg.stage2_step - 1) for i in range(16)]
    stage2 = [drawing.draw_example(cfg, step, i, 6.0) for step in (cfg.stage2_step, cfg.stage2_step + 700) for i in range(16)]
    assert not any(q == recipe.EMOTION_Q for e in stage1 for q, _ in e.turns)
    assert any(q == recipe.EMOTION_Q for e in stage2 for q, _ in e.turns)
    model = recipe.build_model(micro(), recipe.build_processor(micro()).tokenizer)
    training.freeze_audio(model)
    assert not any(p.requires_grad for p in model.model.audio_tower.parameters())
    assert all(p.requires_grad for p in model.model.language_model.parameters())


def test_training_script_smoke(micro_toy):
    for name in ("model.safetensors", "config.json", "tokenizer.json", "processor_config.json", "training_curve.png"):
        assert (micro_toy / name).exists(), name
    assert json.loads((micro_toy / "training_log.json").read_text())["steps"] == 3
    model = ll.HookedLALM.from_pretrained(micro_toy)
    batch = model.prepare(make_scene(1, n_events=2, duration_s=3.0).wave, recipe.LIST_Q, sampling_rate=16000)
    assert isinstance(model.generate(batch, max_new_tokens=3)[0], str)


def test_fresh_decoder_takes_the_encoder_and_projector_from_init_from_and_nothing_else(micro_toy, tmp_path):
    tt.main(["--micro", "--steps", "1", "--threads", "1", "--out", str(tmp_path), "--set", "lr=0", "warmup_steps=1",
             f"init_from={micro_toy}", "fresh_decoder=true"])
    trained, fresh = (evaluation.load_run(folder)[0].state_dict() for folder in (micro_toy, tmp_path))
    built = recipe.build_model(micro(), recipe.build_processor(micro()).tokenizer).state_dict()
    for key, value in fresh.items():
        assert torch.equal(value, trained[key] if key.startswith(training.AUDIO_MODULES) else built[key]), key
    with pytest.raises(ValueError, match="init_from"):
        tt.main(["--micro", "--steps", "1", "--threads", "1", "--out", str(tmp_path / "none"), "--set", "fresh_decoder=true"])


def test_a_run_from_a_saved_model_records_the_run_it_continues_and_its_card_tells_both(micro_toy, tmp_path):
    base, more = shutil.copytree(micro_toy, tmp_path / "base"), tmp_path / "more"
    evaluate = ["--evaluate", "--n", "4", "--threads", "1", "--write-card", "--out"]
    tt.main([*evaluate, str(base)])
    tt.main(["--micro", "--steps", "2", "--threads", "1", "--out", str(more), "--set", f"init_from={base}",
             "lr=1e-4", "freeze_encoder=true", "stage2_step=0"])
    log = json.loads((more / "training_log.json").read_text())
    before = json.loads((base / "eval_results.json").read_text())
    assert log["continues"]["steps"] == 3 and log["continues"]["eval_results"] == before
    assert [stage["steps"] for stage in runs.stages(log)] == [3, 2]
    history, starts = runs.whole_history(log)
    assert starts == [3] and [row["step"] for row in history][-1] == 5

    shutil.rmtree(base)  # the card needs nothing from the base's folder
    tt.main([*evaluate, str(more)])
    after = json.loads((more / "eval_results.json").read_text())
    card = (more / "MODEL_CARD.md").read_text()
    assert "Run: 3 steps of batch" in card, "the story is the first run's"
    assert "**Continuation 1**: 2 more steps from the weights above" in card
    assert "the audio encoder and projector do not learn" in card
    assert "| `lr` | 0.001 | 0.0001 |" in card and "| `freeze_encoder` | false | true |" in card
    assert "init_from=\"out/lalm-toy\"" in card and "--out out/lalm-toy-2" in card
    a, b = before["speaker"]["accuracy"], after["speaker"]["accuracy"]
    assert f"| speaker | {100 * a:.1f} | {100 * b:.1f} | {100 * (b - a):+.1f} |" in card, "held out, before and after"
    assert "--evaluate --n 4 --write-card --out out/lalm-toy " in card, "the first run is evaluated before it is continued"

    # a continuation of that, in two legs, its base's folder gone before the second: the log keeps all three runs
    again, leg = tmp_path / "again", ["--micro", "--steps", "2", "--threads", "1", "--set", f"init_from={more}", "lr=1e-4"]
    tt.main([*leg, "--out", str(again), "--until", "1"])
    shutil.rmtree(more)
    (again / "eval_results.json").write_text("{}")  # figures of other weights: the run removes them when it saves
    tt.main([*leg, "--out", str(again), "--resume"])
    assert not (again / "eval_results.json").exists()
    log = json.loads((again / "training_log.json").read_text())
    assert [stage["steps"] for stage in runs.stages(log)] == [3, 2, 2] and runs.whole_history(log)[1] == [3, 5]
    tt.main([*evaluate, str(again)])
    card = (again / "MODEL_CARD.md").read_text()
    assert "**Continuation 2**" in card and "the audio encoder and projector learn too" in card
    assert 'init_from=\"out/lalm-toy-2\"' in card and "--out out/lalm-toy-3" in card


def test_retrain_trains_every_run_of_a_model_again_in_one_command(micro_toy, tmp_path, capsys):
    first, second = shutil.copytree(micro_toy, tmp_path / "first"), tmp_path / "second"
    tt.main(["--evaluate", "--n", "4", "--threads", "1", "--write-card", "--out", str(first)])
    tt.main(["--micro", "--steps", "2", "--threads", "1", "--out", str(second), "--set", f"init_from={first}",
             "lr=1e-4", "freeze_encoder=true", "stage2_step=0"])
    again = tmp_path / "again"
    tt.main(["--retrain", str(second), "--out", f"{again}/"])
    assert "2 run(s), 5 steps" in capsys.readouterr().out
    made, remade = (load_file(folder / "model.safetensors") for folder in (second, tmp_path / "again-2"))
    assert all(torch.equal(made[k], remade[k]) for k in made), "same settings, batches and kernels, run after run"
    log = json.loads((tmp_path / "again-2" / "training_log.json").read_text())
    assert log["config"]["init_from"] == str(again) and [s["steps"] for s in runs.stages(log)] == [3, 2]
    before = json.loads((first / "eval_results.json").read_text())
    assert log["continues"]["eval_results"] == {**before, "folder": str(again)}, "the same figures of the same weights"
    assert (again / "MODEL_CARD.md").exists(), "the first run evaluated and its card written before it is continued"

    tt.main(["--retrain", str(second), "--out", str(again), "--resume"])
    printed = capsys.readouterr().out
    assert printed.count(": kept, finished in") == 2 and "wrote" not in printed, "nothing trained or evaluated again"
    shutil.rmtree(again)
    tt.main(["--retrain", str(second), "--out", str(again), "--resume"])
    assert "run 1 of 2" in (printed := capsys.readouterr().out) and "run 2 of 2" in printed, "after a run trained anew, none is kept"
    with pytest.raises(ValueError, match="would overwrite it"):
        training.retrain(tmp_path / "again-2", out=again)
    changed = json.loads((again / "training_log.json").read_text())
    changed["config"]["lr"] = 0.5
    (again / "training_log.json").write_text(json.dumps(changed))
    with pytest.raises(ValueError, match="holds a run of other settings .*lr"):
        tt.main(["--retrain", str(second), "--out", str(again), "--resume"])
    with pytest.raises(SystemExit):
        tt.main(["--retrain", str(tmp_path / "nothing")])
    for other in (["--set", "lr=1"], ["--steps", "9"]):
        with pytest.raises(SystemExit):
            tt.main(["--retrain", str(second), *other])


@pytest.mark.parametrize("frame_weight", [0, 1])
def test_a_run_stopped_and_resumed_equals_a_run_in_one_go(tmp_path, frame_weight):
    micro = ["--micro", "--steps", "4", "--threads", "1"]
    # the recipe as it was before those fields existed; with the frame objective its heads must resume too
    before = ["--set", "ladder_steps=0", "plain_frac=0", f"frame_weight={frame_weight}"]
    tt.main([*micro, "--out", str(tmp_path / "whole"), *before])
    tt.main([*micro, "--out", str(tmp_path / "parts"), "--until", "2", *before])
    assert (tmp_path / "parts" / "checkpoint" / "state.json").exists() and not (tmp_path / "parts" / "config.json").exists()
    with pytest.raises(ValueError, match="other settings.*lr"):
        tt.main([*micro, "--out", str(tmp_path / "parts"), "--resume", "--set", "lr=0.01"])
    state = tmp_path / "parts" / "checkpoint" / "state.json"
    meta = json.loads(state.read_text())
    del meta["config"]["ladder_steps"], meta["config"]["plain_frac"]  # as a checkpoint written before these fields
    state.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="plain_frac: 0.0 there, 0.5 now"):
        tt.main([*micro, "--out", str(tmp_path / "parts"), "--resume"])  # plain_frac counts as 0, as runs were then
    tt.main([*micro, "--out", str(tmp_path / "parts"), "--resume", *before])
    whole, parts = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "parts" / "model.safetensors")
    assert whole.keys() == parts.keys()
    assert all(torch.equal(whole[k], parts[k]) for k in whole), "same batches, same kernels, restored AdamW moments"
    log = json.loads((tmp_path / "parts" / "training_log.json").read_text())
    assert log["steps"] == 4 and [r["step"] for r in log["history"]] == [1, 2, 3, 4]
    assert not (tmp_path / "parts" / "checkpoint").exists(), "a finished run leaves no checkpoint behind"
    assert [(leg["from"], leg["to"], leg["threads"]) for leg in log["legs"]] == [(0, 2, 1), (2, 4, 1)]
    tt.main([*micro, "--out", str(tmp_path / "to_the_end"), "--until", "4", *before])
    assert (tmp_path / "to_the_end" / "model.safetensors").exists(), "stopping at the last step ends the run with its model"


def test_the_learning_rate_follows_the_steps_unless_a_time_budget_is_set():
    steps = recipe.Config(steps=1000, warmup_steps=100)
    assert training.lr_at(99, steps) == steps.lr and training.lr_at(999, steps) == pytest.approx(steps.min_lr, rel=1e-4)
    assert training.lr_at(550, steps, elapsed_s=1e9) == training.lr_at(550, steps), "the machine's speed plays no part"
    budget = dataclasses.replace(steps, minutes=10.0)
    assert training.lr_at(550, budget, elapsed_s=0) == training.lr_at(550, steps)
    assert training.lr_at(550, budget, elapsed_s=600) == pytest.approx(steps.min_lr), "the budget spent: annealed"


def test_the_device_a_run_trains_on_may_change_when_it_resumes(tmp_path):
    cfg = micro(out=str(tmp_path / "run"), steps=2, checkpoint_every=1, log_every=1)
    training.train(cfg, until=1)
    training.train(replace(cfg, device="cpu:0", workers=1, threads=1), resume=True)  # another device name than the first part's
    log = json.loads((tmp_path / "run" / "training_log.json").read_text())
    assert log["steps"] == 2 and log["config"]["device"] == "cpu:0"
    assert "device" in runs.RESUMABLE_CHANGES and runs.recorded_config({"config": {}})["device"] == "cpu"


def test_focus_frozen_keeps_the_encoder_as_it_was_through_the_focus(tmp_path):
    cfg = micro(out=str(tmp_path / "run"), steps=2, focus_step=0, focus_steps=2, focus_frozen=True)
    before = recipe.build_model(cfg, recipe.build_processor(cfg).tokenizer).state_dict()
    after = evaluation.load_run(training.train(cfg))[0].state_dict()
    changed = {k.startswith(training.AUDIO_MODULES) for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed == {False}, "only the decoder learnt"
    assert runs.recorded_config({"config": {}})["focus_frozen"] is False
