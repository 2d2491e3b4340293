"""The emotion-neuron study: its bookkeeping on hand-made predictions, and end-to-end runs on every family by name."""

import json

import numpy as np
import pytest

import lalm_lens as ll
from lalm_lens.experiments import emotion_neurons as study
from lalm_lens.neurons import NeuronSet
from lalm_lens.zoo import TINY

LABELS = ["neutral", "happy", "angry", "sad"]
FIELDS = {"selector", "budget", "n_neurons", "matrix", "labels", "self_change", "cross_change",
          "random_self_change", "random_cross_change", "config"}


def test_answers_parse_by_first_label_or_synonym():
    assert study.parse_label("Angry.", LABELS) == 2
    assert study.parse_label("the speaker sounds full of joy, not sad", LABELS) == 1
    assert study.parse_label("Sadness", LABELS) == 3
    assert study.parse_label("I cannot tell", LABELS) == -1
    assert study.parse_label("unhappy", LABELS) == 3, "whole words only: 'unhappy' is sad, not happy"


def test_summaries_equal_the_matrix_means():
    truth = np.repeat(np.arange(4), [3, 2, 2, 1])  # unbalanced on purpose: classes still count equally
    base = truth.copy()
    base[0] = 1
    rng = np.random.default_rng(0)
    edited = [np.where(rng.random(8) < 0.4, rng.integers(0, 4, 8), base) for _ in range(4)]
    for intervention in ("deactivate", "gain"):
        result = study.summarise(base, edited, truth, np.arange(8), intervention)
        matrix = np.array(result["matrix"])
        own, cross = study.item_values(base, edited, truth, intervention)
        assert result["self_change"] == pytest.approx(np.mean(np.diag(matrix))) == pytest.approx(own.mean())
        assert result["cross_change"] == pytest.approx(matrix[~np.eye(4, dtype=bool)].mean()) == pytest.approx(cross.mean())
        assert result["self_ci95"][0] <= result["self_change"] <= result["self_ci95"][1]
        twice = study.summarise(base, [edited, edited], truth, np.arange(8), intervention)
        assert twice == result, "identical random draws average to one draw"
    # deactivation: recall of class 0 (3 clips; clip 0 already wrong) when class 0's neurons make clip 1 wrong
    edited = [base.copy() for _ in range(4)]
    edited[0][1] = 3
    matrix = study.change_matrix(base, edited, truth, "deactivate")
    assert matrix[0, 0] == pytest.approx(-1 / 3) and np.count_nonzero(matrix) == 1


def test_synthetic_splits_are_balanced_and_disjoint():
    identify = study.synthetic_clips(2, "identify")
    evaluate = study.synthetic_clips(2, "evaluate")
    assert [c.label for c in identify] == LABELS * 2
    assert not {c.seed for c in identify} & {c.seed for c in evaluate}
    assert all(c.seed % 2 == 0 for c in identify + evaluate), "the toy was trained on odd seeds only"
    with pytest.raises(ValueError, match="split must be one of"):
        study.synthetic_clips(2, "train")


@pytest.mark.parametrize("name", [name for name in TINY if name != "tiny-kimi-audio"])  # Kimi: see below
def test_the_study_runs_by_name_on_tiny_checkpoints(name):
    site = {"tiny-qwen3-omni-thinker": "audio.mlp.hook_post"}.get(name, "mlp.hook_gate")  # MoE: no dense decoder neurons
    result = study.run(name, site=site, selector="entropy", budget=4, n_identify=1, n_evaluate=1, progress=False)
    out = result.to_dict()
    assert FIELDS <= set(out) and json.loads(json.dumps(out)) == out
    assert np.array(out["matrix"]).shape == (4, 4) and out["labels"] == LABELS
    assert out["config"]["n_evaluate_clips"] == 4 and all(n <= 4 for n in out["neurons_per_class"].values())


def test_encoder_neurons_gain_sweep_and_generation_on_the_omni_thinker(checkpoint):
    result = study.run(checkpoint("qwen2_5_omni_thinker"), site="audio.mlp.hook_post", intervention="gain", strength=3.0,
                       strengths=[0.5, 4.0], mode="generate", budget=0.1, n_identify=1, n_evaluate=1, progress=False)
    assert result.neurons.fingerprint["site"] == "audio.mlp.hook_post" and result.strength == 3.0
    assert [s["strength"] for s in result.strength_sweep] == [0.5, 4.0]
    assert 0.0 <= result.unparseable_rate <= 1.0


def test_kimi_audio_runs_by_name_with_token_id_prompts(tmp_path):
    """Kimi-Audio's tokenizer needs remote code, so the question and the label tokens are given as ids."""
    argv = ["--model", "tiny-kimi-audio", "--budget", "4", "--n-identify", "1", "--n-evaluate", "1",
            "--question-ids", "11", "12", "13", "--label-tokens", *(f"{label}={20 + i}" for i, label in enumerate(LABELS)),
            "--semantic-tokens", "blank", "--json", str(tmp_path / "kimi.json")]
    study.main(argv)
    out = json.loads((tmp_path / "kimi.json").read_text())
    assert out["config"]["arch"] == "kimi_audio" and out["config"]["question"] == [11, 12, 13] and out["n_neurons"] > 0
    with pytest.raises(ValueError, match="no text tokenizer"):
        study.run("tiny-kimi-audio", n_identify=1, n_evaluate=1, prepare_kwargs={"semantic_tokens": "blank"}, progress=False)


def test_main_writes_json_plot_and_neurons(tmp_path, checkpoint):
    argv = ["--model", str(checkpoint("qwen2_audio")), "--selector", "mean_deviation", "--budget", "3", "--intervention", "gain",
            "--sweep", "2", "--n-identify", "1", "--n-evaluate", "1", "--identify-condition", "reverb_noisy",
            "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"), "--save-neurons", str(tmp_path / "n.json")]
    study.main(argv)
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["selector"] == "magnitude" and out["budget"] == 3 and out["strength"] == 2.0
    assert set(out["transfer_jaccard"]) == set(LABELS), "identify and evaluate conditions differ: sets are compared"
    assert (tmp_path / "r.png").stat().st_size > 0
    assert NeuronSet.load(tmp_path / "n.json").size("happy") == 3


def test_sweeps_rerun_the_study_per_value(tmp_path, checkpoint):
    model = ll.HookedLALM.from_pretrained(checkpoint("qwen2_audio"))
    results = study.sweep(model, "budget", [2, 4], selector="contrast", n_identify=1, n_evaluate=1)
    assert [r.budget for r in results] == [2, 4]
    assert all(np.array_equal(results[0].neurons[c][l], np.intersect1d(results[0].neurons[c][l], results[1].neurons[c].get(l, [])))
               for c in LABELS for l in results[0].neurons[c]), "the top 2 per class are among the top 4"
    study.plot_sweep(results, "budget", tmp_path / "sweep.png")
    uncached = study.run(model, selector="contrast", budget=2, n_identify=1, n_evaluate=1, cache_batches=False,
                         n_random=2, progress=False)
    assert uncached.matrix == results[0].matrix and uncached.baseline_recall == results[0].baseline_recall
    assert uncached.config["n_random"] == 2 and np.array(uncached.random_matrix).shape == (4, 4)
    with pytest.raises(ValueError, match="cannot sweep 'colour'"):
        study.sweep(model, "colour", [1])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="strength applies to intervention='gain'"):
        study.run("tiny-qwen2-audio", strength=2.0, progress=False)
    with pytest.raises(ValueError, match="unknown selector"):
        study.run("tiny-qwen2-audio", selector="loud", progress=False)
    with pytest.raises(ValueError, match="n_random must be at least 1"):
        study.run("tiny-qwen2-audio", n_random=0, progress=False)
    with pytest.raises(ValueError, match="evaluate_condition must be one of"):
        study.run("tiny-qwen2-audio", evaluate_condition="studio", progress=False)


def test_a_ravdess_copy_on_disk_is_split_by_speaker(tmp_path):
    import soundfile

    from lalm_lens.data import SPEAKERS, make_utterance
    from lalm_lens.experiments.emotion_neurons import corpus_clips

    codes = {"neutral": "01", "calm": "02", "happy": "03", "sad": "04", "angry": "05"}
    for actor in range(1, 5):
        for emotion, code in codes.items():
            utterance = make_utterance("neutral" if emotion == "calm" else emotion, SPEAKERS[actor], seed=2 * actor)
            folder = tmp_path / f"Actor_{actor:02d}"
            folder.mkdir(exist_ok=True)
            soundfile.write(folder / f"03-01-{code}-01-01-01-{actor:02d}.wav", utterance.wave, utterance.sampling_rate)
    identify, evaluate = corpus_clips(f"ravdess:{tmp_path}", n_identify=4, n_evaluate=1)
    assert sorted(c.label for c in evaluate) == ["angry", "happy", "neutral", "sad"], "one per emotion"
    assert sum(c.label == "neutral" for c in identify) == 4, "calm counts as neutral; two actors x two"
    result = study.main(["--model", "lalm-toy", "--data", f"ravdess:{tmp_path}", "--n-identify", "2", "--n-evaluate", "1",
                   "--budget", "0.01", "--site", "audio.mlp.hook_post", "--selector", "magnitude"])
    assert result.to_dict()["config"]["n_evaluate_clips"] == 4


def test_an_unknown_data_spec_says_what_is_accepted():
    from lalm_lens.experiments.emotion_neurons import corpus_clips

    with pytest.raises(ValueError, match="ravdess:DIR"):
        corpus_clips("iemocap", 1, 1)
