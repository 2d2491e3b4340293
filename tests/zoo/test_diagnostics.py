"""Mechanism diagnostics of the toy: knockouts of the attention to audio, MLP mean-ablation, a linear probe."""

import numpy as np
import pytest
import torch

from lalm_lens.data import make_scene, make_utterance
from lalm_lens.zoo import diagnostics
from lalm_lens.zoo.toy import evaluation, recipe


def test_question_positions_are_the_words_between_the_audio_and_the_last_prompt_position(toy):
    scene = make_scene(3)
    batch = toy.prepare([scene.wave, scene.wave[:48000]], [recipe.PRESENCE_Q.format(label="dog")] * 2, sampling_rate=16000)
    words = [toy.to_str_tokens(batch, example=1)[p] for p in diagnostics.question_positions(batch)]
    assert words == ["is", "there", "a", "dog", "sound", "?", "<|im_end|>", "<|im_start|>"]


def test_retrieval_reports_every_layer_and_cutting_all_audio_attention_is_a_real_edit(toy):
    scenes = [make_scene(evaluation.heldout_seed(i), properties=True) for i in range(4)]
    items = [(s.wave, recipe.PRESENCE_Q.format(label=s.labels[0]), ("yes", "no"), "yes") for s in scenes]
    result = diagnostics.retrieval(toy, items, batch_size=4)
    assert len(result["last_at"]) == len(result["last_from"]) == len(result["prompt_from"]) == toy.cfg.n_layers
    assert all(r["n"] == 4 and 0 <= r["accuracy"] <= 1 for r in [result["none"], *result["last_at"]])
    for cut in [result["question_tokens"], *result["last_at"], *result["last_from"], *result["prompt_from"]]:
        assert cut["drop"] == pytest.approx(result["none"]["accuracy"] - cut["accuracy"])
        assert cut["drop_ci95"][0] <= cut["drop"] <= cut["drop_ci95"][1]
    lines = evaluation.retrieval_table({"n": 4, "presence_yes": result})
    assert lines[-1].startswith("Accuracy lost with the last position's audio attention cut in the decoder's second half")


def test_mean_ablating_an_mlp_writes_its_mean_everywhere(toy):
    waves = [make_utterance("angry", "f1", seed).wave for seed in range(2)]
    means = diagnostics.mean_mlp_out(toy, waves, recipe.EMOTION_Q)
    assert means.shape == (toy.cfg.n_layers, toy.cfg.d_model) and torch.isfinite(means).all()
    out = diagnostics.mlp_ablation(toy, waves, recipe.EMOTION_Q, ("neutral", "happy", "angry", "sad"), ["angry"] * 2, means)
    assert set(out) == {"none", "layer", "all"} and len(out["layer"]) == toy.cfg.n_layers


def test_the_linear_probe_separates_separable_classes_and_reports_chance_on_noise():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 5
    y = np.arange(200) % 4
    x = centres[y] + rng.normal(size=(200, 16))
    assert diagnostics.linear_probe(x[:100], y[:100], x[100:], y[100:])["accuracy"] == 1.0
    noise = rng.normal(size=(200, 16))
    assert diagnostics.linear_probe(noise[:100], y[:100], noise[100:], y[100:])["accuracy"] < 0.5  # 4 classes: 0.25 expected


def test_given_the_class_a_linear_probe_reads_a_property_whose_direction_differs_by_class():
    """High is +x for one class and -x for the other: no single direction reads it, one per class does."""
    rng = np.random.default_rng(0)
    classes, high = np.arange(400) % 2, (np.arange(400) // 2) % 2
    x = rng.normal(size=(400, 8)) * 0.3
    x[:, 0] += np.where(classes == high, 1.0, -1.0)
    given = diagnostics.given_class(x, classes, 2)
    assert given.shape == (400, 16)
    assert diagnostics.linear_probe(given[:200], high[:200], given[200:], high[200:])["accuracy"] > 0.95
    assert diagnostics.linear_probe(x[:200], high[:200], x[200:], high[200:])["accuracy"] < 0.65
