"""The scripts of the recipe page (docs/toy_recipe/*.py) run on a trained toy."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from lalm_lens.zoo.toy import evaluation, training


def script(name):
    path = Path(__file__).parents[3] / "docs" / "toy_recipe" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.enable_grad()
def test_the_recipe_pages_scripts_run_on_a_trained_toy(micro_toy, monkeypatch, capsys, tmp_path):
    """docs/toy_recipe/*.py, which measured figures on the recipe page, still run (here briefly, on the micro toy)."""
    probe = script("pitch_at_the_answer")
    monkeypatch.setattr(probe, "N_TRAIN", 8)
    monkeypatch.setattr(probe, "N_TEST", 8)
    probe.main(str(micro_toy))
    for fmt in ("one-class", "drills", "emotion", "presence"):
        script("finetune").main(str(micro_toy), fmt, steps=4)
    script("finetune").main(str(micro_toy), "speech-level,level-mixed", sighted=True, steps=4)
    script("finetune").main(str(micro_toy), "contrast+name,balanced", steps=4)
    script("finetune").main(str(micro_toy), "presence,presence", slide=True, steps=4)
    script("finetune").main(str(micro_toy), "presence", late=True, steps=4)
    script("list_errors").main(str(micro_toy), 8)
    fresh = script("fresh_decoder")
    monkeypatch.setattr(fresh, "N_TEST", 4)
    fresh.main(str(micro_toy), steps=2, n_clips=4, save=str(tmp_path / "fresh"))
    source, saved = evaluation.load_run(micro_toy)[0].state_dict(), evaluation.load_run(tmp_path / "fresh")[0].state_dict()
    assert all(torch.equal(saved[k], w) for k, w in source.items() if k.startswith(training.AUDIO_MODULES)), "RUN's encoder kept"
    fresh.main(str(micro_toy), steps=1, n_clips=4, decoder="run", mask="late", save=str(tmp_path / "late"), lr=3e-4)
    fresh.main(str(tmp_path / "late"), steps=1, n_clips=4, decoder="run", mask="recipe")
    fresh.main(str(micro_toy), steps=1, n_clips=4, decoder="run", mask="answer", n_events=3, seconds=4.0)
    for name, n_clips in (("answer_attention", 4), ("asked_class", 8), ("named_pitch", 8), ("blind_presence", 4),
                          ("retrieval", 4), ("name_answers", 4), ("property_by_class", 8)):
        module = script(name)
        monkeypatch.setattr(module, "N_CLIPS", n_clips)
        module.main(str(micro_toy))
    log = str(micro_toy / "training_log.json")
    script("windows").main([log], every=1)
    out = capsys.readouterr().out
    rows = out.splitlines()
    assert "| steps | list | presence | pitch | level | drill | emotion |" in rows and "| 0–1 | " in out
    assert sum(r.startswith("blind ") for r in rows) == sum(r.startswith("sighted ") for r in rows) == 4
    assert sum(r.startswith("first half blind ") for r in rows) == 4
    assert sum(r.startswith("| question and last position from layer ") for r in rows) == sum(
        r.startswith("| last position at layer ") for r in rows) > 0
    assert out.count("class asked about") == out.count("at the class word") == 3 and "embedding" in out
    assert "  list " in out  # a mixed format's second kind of answer ("contrast+name": the name answers)
    assert out.count("pitch given the class") == 1 and "embeddings" in out
    assert out.count("pitch answers right") == 5
    assert out.count("emotion answers right") == 1 and out.count("presence answers right") == 4
    assert "the last 50% of the question sighted" in out and "the last 0% of the question sighted" in out
    assert "presence, sighted in the second half: presence" in out
    assert "contrast+name: pitch answers right" in out and ", balanced: pitch answers right" in out
    assert "speech-level, sighted: speech answers right" in out and "level-mixed, sighted: level answers right" in out
    assert "8 clips, as --evaluate" in out and "8 clips, pitch and level varied" in out
    assert "4 clips; rows: layers, columns: heads" in out
    assert out.count("decoder on ") == 4 and "audio attention late" in out and "audio attention recipe" in out
    assert "training clips of 3 sounds in 4 s" in out
    assert "| answers | " in out and out.count("| encoder probe | ") == 2
    assert out.count("cut second half:  pitch ") == out.count("cut every layer:  pitch ") == 1 + 2 + 2 + 2
    script("windows").main([log, log], every=1)
    side_by_side = capsys.readouterr().out.splitlines()
    assert side_by_side[0] == f"each cell: {log} / {log}" and side_by_side[3].startswith("| 0–1 | ")
    assert side_by_side[3].count(" / ") == side_by_side[1].count(" | "), "two runs' means in every task's cell"
    script("answer_attention").main(str(micro_toy), pick=True)
    out = capsys.readouterr().out
    assert out.count("pitch answers right") == out.count("level answers right") == 1 and "(level questions)" in out


@torch.enable_grad()
def test_replay_lr_trains_a_first_run_again_at_the_rates_its_log_recorded(micro_toy, tmp_path):
    """A run whose rate followed the clock is trained again at the rates it logged (the warm-up is the formula's)."""
    recorded = tmp_path / "recorded"
    shutil.copytree(micro_toy, recorded)
    log = json.loads((recorded / "training_log.json").read_text())
    for row in log["history"]:
        row["lr"] *= 0.5 if row["step"] > 1 else 1  # as if the clock had run ahead of the steps after the warm-up
    (recorded / "training_log.json").write_text(json.dumps(log))
    script("replay_lr").main(str(recorded), str(tmp_path / "again"), threads=1, until=None, replay_until=3, resume=False)
    again = json.loads((tmp_path / "again" / "training_log.json").read_text())
    assert [r["lr"] for r in again["history"]] == pytest.approx([r["lr"] for r in log["history"]], rel=1e-12)
    assert training.lr_at.__module__ == training.__name__, "the schedule is restored after the run"
