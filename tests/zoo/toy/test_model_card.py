"""MODEL_CARD.md: what each run's settings and held-out results make it say."""

import dataclasses
import json
import shutil

import pytest

from lalm_lens.zoo import SHIPPED
from lalm_lens.zoo import train_toy as tt
from lalm_lens.zoo.toy import model_card, recipe

from toy_configs import R_MECHANISMS



def test_only_write_card_updates_the_models_own_card(micro_toy, tmp_path):
    folder = shutil.copytree(micro_toy, tmp_path / "toy")
    tt.main(["--evaluate", "--n", "4", "--threads", "1", "--out", str(folder), "--write-card"])
    assert json.loads((folder / "eval_results.json").read_text())["n"] == 4
    card = (folder / "MODEL_CARD.md").read_text()
    assert "## Held-out accuracy" in card and "Linear probe for pitch" in card
    assert "Accuracy lost with the last position's audio attention cut in the decoder's second half" in card
    log = json.loads((folder / "training_log.json").read_text())
    log["config"].update({**R_MECHANISMS, "pick_frac": 0.7, "drill_frac": 0.5, "late_audio": 0.8,
                          "late_step": log["config"]["dropout_step"] + 300})
    (folder / "training_log.json").write_text(json.dumps(log))
    card = model_card.write_model_card(folder).read_text()
    assert "70 % of the drills are pick-out drills" in card
    assert f"question turns from step {log['config']['late_step']} that position" in card
    assert "CPU thread(s)" in card
    log["config"].update(pick_questions=2, device="cuda", workers=7)
    (folder / "training_log.json").write_text(json.dumps(log))
    card = model_card.write_model_card(folder).read_text()
    assert "the pitch of one of them and the level of one of them" in card and "on cuda (7 data workers)" in card
    assert "two to four events" not in card and "presence questions are never blind" not in card
    assert "during the focus" not in card
    log["config"].update(focus_dropout=1.0, focus_frozen=True, focus_frac=0.6)
    (folder / "training_log.json").write_text(json.dumps(log))
    card = model_card.write_model_card(folder).read_text()
    assert ("during the focus, the question's own tokens may not attend to the audio in 100 % of question turns and "
            "the audio encoder and projector do not learn") in " ".join(card.split())
    assert "60 % of the other scenes are drills too" in card
    log["config"].update(wide_pick_step=3400, pick_frac=1.0, sighted_presence_step=3400, name_step=3000)
    (folder / "training_log.json").write_text(json.dumps(log))
    card = " ".join(model_card.write_model_card(folder).read_text().split())
    assert "from step 3400, pick-out drills have two to four events" in card
    assert "from step 3400, presence questions are never blind to the audio" in card
    assert "from the class word, and stays so (its questions are never blind from step 3400)" in card
    assert 'from step 3000, every question scene and drill is also asked "What is the {label} sound?"' in card
    assert "drills instead: pick-out drills (below);" in card and "one or two events" not in card
    with pytest.raises(SystemExit):
        tt.main(["--evaluate", "--out", str(folder), "--write-card", "--results", str(tmp_path / "r")])


def test_model_card_is_what_the_measured_logs_give(toy, tmp_path):
    shipped = SHIPPED["lalm-toy"]
    if "stage2_step" not in json.loads((shipped / "training_log.json").read_text())["config"]:
        pytest.skip("the shipped weights predate this training recipe; their card was written by the recipe that made them")
    for name in ("training_log.json", "eval_results.json", "reproduction.json", "model.safetensors"):
        (tmp_path / name).symlink_to(shipped / name)
    assert model_card.write_model_card(tmp_path).read_text() == (shipped / "MODEL_CARD.md").read_text()
    results = json.loads((shipped / "eval_results.json").read_text())
    assert results["list_3_events"]["accuracy"] >= 0.8 and results["presence"]["accuracy"] >= 0.95
    card = (shipped / "MODEL_CARD.md").read_text()
    assert "| level of a named sound | 86.0 | ≥ 90 | **missed** |" in card, "the card says which targets the toy misses"
    assert "## Continued training" in card and "**Continuation 2**" in card, "the card tells both consolidations"
    assert "| level of a named sound | 84.5 | 86.0 | +1.5 |" in card, "held out, before and after the last one"


def test_the_targets_table_marks_each_figure_met_or_missed():
    cut = [{"drop": 0.0}] * 3 + [{"drop": 0.25}] + [{"drop": 0.0}] * 2  # points lost from each layer on; 6 layers
    results = {"list_3_events": {"accuracy": 0.91}, "presence": {"accuracy": 0.96}, "mlp_ablation": {"all": {"accuracy": 0.4}},
               "retrieval": {"pitch": {"last_from": cut}, "level": {"last_from": [{"drop": -0.02}] * 6}}}
    table = model_card.targets_section(results)
    assert "| list, three events | 91.0 | ≥ 90 | met |" in table and "| presence | 96.0 | ≥ 97 | **missed** |" in table
    assert "| emotion, every decoder MLP mean-ablated | 40.0 | ≤ 40 | met |" in table
    assert "| pitch: points lost, last position's audio cut from layer 3 | 25.0 | ≥ 20 | met |" in table
    assert "| level: points lost, last position's audio cut from layer 3 | -2.0 | ≥ 20 | **missed** |" in table
    assert "misses 2 of 5" in table


def test_the_card_gives_the_command_that_trains_its_recipe_and_each_legs_threads():
    config = json.loads(json.dumps(dataclasses.asdict(recipe.Config(steps=6400, name_step=2000, pick_frac=0.5))))
    command = model_card.recipe_command(config, threads=2)
    assert command == "python -m lalm_lens.zoo.train_toy --threads 2 --steps 6400 --set pick_frac=0.5 name_step=2000"
    args = command.split()[3:]
    parsed = {a.split("=")[0]: a.split("=")[1] for a in args[args.index("--set") + 1:]}
    assert parsed == {"pick_frac": "0.5", "name_step": "2000"}
    assert model_card.recipe_command(json.loads(json.dumps(dataclasses.asdict(recipe.Config()))), threads=1).endswith("--threads 1")
    legs = [{"from": 0, "to": 2000, "threads": 2, "seconds": 9.0}, {"from": 2000, "to": 6400, "threads": 1, "seconds": 9.0}]
    assert model_card.where_trained({"threads": 1, "legs": legs}, config) == "CPU threads 2 (steps 0–2000), 1 (steps 2000–6400)"
    assert model_card.where_trained({"threads": 2, "legs": legs[:1]}, config) == "2 CPU thread(s)"
