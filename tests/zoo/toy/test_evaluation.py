"""Held-out evaluation: ``--evaluate`` and its splits, ``--quick-look``, loading a run."""

import json

import pytest
import torch
from transformers import Qwen2AudioProcessor

from lalm_lens.zoo import train_toy as tt
from lalm_lens.zoo.toy import evaluation



def test_evaluation_leaves_the_evaluated_folder_alone(micro_toy, tmp_path, monkeypatch):
    before = sorted(p.name for p in micro_toy.iterdir())
    monkeypatch.chdir(tmp_path)
    tt.main(["--evaluate", "--n", "4", "--threads", "1", "--out", str(micro_toy)])
    assert sorted(p.name for p in micro_toy.iterdir()) == before, "no eval_results.json or MODEL_CARD.md written there"
    results = json.loads((tmp_path / "out" / f"eval-{micro_toy.name}" / "eval_results.json").read_text())
    assert results["n"] == 4 and results["emotion"]["n"] == 4 and results["pitch_probe"]["given_class"]["n"] == 4
    assert results["attention"]["n"] == results["attention_pitch"]["n"] == 3, "one equal-layout clip, each event asked"
    assert results["presence_reworded"]["n"] == results["presence_paraphrased"]["n"] == 4, "two scenes, yes and no"
    tt.main(["--evaluate", "--n", "4", "--threads", "1", "--out", str(micro_toy), "--results", str(tmp_path / "mine")])
    assert json.loads((tmp_path / "mine" / "eval_results.json").read_text())["n"] == 4
    tt.main(["--evaluate", "--n", "4", "--threads", "1", "--out", str(micro_toy), "--split", "20261205",
             "--results", str(tmp_path / "fresh")])
    fresh = json.loads((tmp_path / "fresh" / "eval_results.json").read_text())
    assert fresh["split"] == 20261205 and "split" not in results and evaluation.EVAL_SEED == 20260611
    assert [truth for truth, _ in fresh["list_examples"]] != [truth for truth, _ in results["list_examples"]]
    assert sorted(p.name for p in micro_toy.iterdir()) == before


def test_a_held_out_split_draws_other_clips_and_gives_the_default_back(capsys):
    default = evaluation.heldout_seed(7)
    with evaluation.heldout_split(20261205):
        assert evaluation.heldout_seed(7) != default
    with pytest.raises(RuntimeError), evaluation.heldout_split(20261205):
        raise RuntimeError("an evaluation that fails")
    assert evaluation.heldout_seed(7) == default
    for refused, message in ((["--split", "3"], "go with --evaluate"),
                             (["--evaluate", "--split", "3", "--write-card"], "the model card reports the default split"),
                             (["--evaluate", "--split", "-5"], "a split is a non-negative seed")):
        with pytest.raises(SystemExit):
            tt.main(refused)
        assert message in capsys.readouterr().err


def test_a_quick_look_reads_a_run_in_progress_and_a_saved_model(micro_toy, tmp_path, monkeypatch, capsys):
    tt.main(["--micro", "--steps", "4", "--threads", "1", "--out", str(tmp_path), "--until", "2"])
    running, saved = evaluation.quick_look(tmp_path, n=8, threads=1), evaluation.quick_look(micro_toy, n=8, threads=1)
    assert running["step"] == 2 and saved["step"] is None
    for look in (running, saved):
        assert set(look) == {"step", *evaluation.QUICK_LOOK}
        assert all(len(look[q]) == 4 and all(0 <= a <= 1 for a in look[q] if a is not None) for q in evaluation.QUICK_LOOK)
        assert look["pitch, contrast"][0] is None and None not in look["pitch, contrast"][1:], "no contrast in one event"
    tt.main(["--quick-look", "--out", str(tmp_path), "--threads", "1", "--n", "8"])
    printed = capsys.readouterr().out
    assert "at step 2" in printed and "on 2 held-out clips per column" in printed
    means = evaluation.row_means(running)
    assert f"sum of the four property rows' means: {sum(means[q] for q in evaluation.QUICK_LOOK[2:]):.3f}" in printed
    with pytest.raises(SystemExit):
        tt.main(["--quick-look", "--out", str(tmp_path), "--n", "6"])

    yes, no = Qwen2AudioProcessor.from_pretrained(micro_toy).tokenizer.convert_tokens_to_ids(["yes", "no"])

    def says_yes_else_right(model, batch):
        targets = batch["targets"].clamp(min=0)
        targets = torch.where(targets == no, yes, targets)
        return torch.zeros(*targets.shape, model.config.text_config.vocab_size).scatter(-1, targets[..., None], 1.0)

    monkeypatch.setattr(evaluation, "forward_logits", says_yes_else_right)
    look = evaluation.quick_look(micro_toy, n=8, threads=1)
    assert look["presence, yes"] == [1.0] * 4 and look["presence, no"] == [0.0] * 4
    assert look["pitch"] == look["loudness"] == [1.0] * 4
    assert look["pitch, contrast"] == look["loudness, contrast"] == [None, 1.0, 1.0, 1.0]
    assert evaluation.row_means(look) == {**dict.fromkeys(evaluation.QUICK_LOOK, 1.0), "presence, no": 0.0}
    with pytest.raises(ValueError, match="multiple of 4"):
        evaluation.quick_look(micro_toy, n=6)


def test_loading_a_run_that_is_not_there_says_so_rather_than_asking_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run, checkpoint or saved model at"):
        evaluation.load_hooked(tmp_path / "lalm-toy-typo")
