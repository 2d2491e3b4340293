"""The three-event localization study: exact baselines, scoring, parsing, and a small end-to-end run on the toy."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from lalm_lens.experiments import localization
from lalm_lens.experiments.localization import overlap_iou, parse_seconds, random_window


def test_the_papers_random_baseline_is_five_eighteenths_on_the_equal_layout():
    thirds = [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    cut = [random_window(t, 2.0, 6.0, inside=False)[0] for t in thirds]
    assert np.mean(cut) == pytest.approx(5 / 18, abs=1e-9)
    assert cut == pytest.approx([1 / 6, 1 / 3, 1 / 3], abs=1e-9)


def test_the_inside_the_clip_null_is_one_third_when_all_events_are_queried():
    thirds = [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    inside = [random_window(t, 2.0, 6.0, inside=True)[0] for t in thirds]
    assert sum(inside) == pytest.approx(1.0, abs=1e-9) and inside[1] == pytest.approx(0.5, abs=1e-9)


def test_exact_expectations_agree_with_sampling():
    rng = np.random.default_rng(0)
    truth, width, clip = (1.3, 2.9), 1.6, 6.0
    starts = rng.uniform(0, clip, 200_000)
    sampled = np.mean([overlap_iou((s, min(s + width, clip)), truth) for s in starts[:20_000]], axis=0)
    exact = random_window(truth, width, clip, inside=False)
    # 20,000 draws of values in [0, 1]: standard error below 0.004
    np.testing.assert_allclose(exact, sampled, atol=0.012)


def test_overlap_is_normalised_by_the_truth_and_iou_by_the_union():
    assert overlap_iou((1.0, 3.0), (2.0, 4.0)) == pytest.approx((0.5, 1 / 3))
    assert overlap_iou((5.0, 6.0), (0.0, 2.0)) == (0.0, 0.0)


def test_direct_answers_are_parsed_or_counted_as_unusable():
    assert parse_seconds("from 2 . 5 to 4 seconds", 6.0) == (2.5, 4.0)
    assert parse_seconds("4.0 - 1.5", 6.0) == (1.5, 4.0)
    assert parse_seconds("9 and 12", 6.0) is None, "both beyond the clip: nothing left"
    assert parse_seconds("yes", 6.0) is None


def test_a_small_run_writes_every_field(tmp_path):
    out = tmp_path / "loc.json"
    argv = ["--model", "lalm-toy", "--n", "2", "--n-dev", "2", "--n-vectors", "10", "--scales", "4",
            "--methods", "steering,prompting,direct,random,null", "--json", str(out), "--plot", str(tmp_path / "loc.png")]
    assert localization.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 6 and result["n_clips"] == 2
    for key in ("overlap", "iou", "ci95", "by_position", "config", "rule"):
        assert key in result
    assert result["overlap"]["random"] == pytest.approx(5 / 18, abs=1e-9)
    assert result["overlap"]["null"] == pytest.approx(1 / 3, abs=1e-9)
    assert all(0.0 <= v <= 1.0 for v in result["overlap"].values())
    assert {"steering", "steering_raw", "steering_centred", "steering_control", "prompting_last", "prompting_word", "control", "direct"} <= set(result["overlap"])
    assert result["direct"]["n"] == 6 and "knockout" in result
    assert (tmp_path / "loc.png").stat().st_size > 0


def test_the_event_naming_prompt_is_a_choice_and_its_knockout_measures_the_models_own_answer(tmp_path):
    out = tmp_path / "loc.json"
    argv = ["--model", "lalm-toy", "--n", "2", "--n-dev", "2", "--n-vectors", "10", "--scales", "4", "--methods",
            "steering,prompting", "--naming", "Is the {label} sound high or low?", "--answers", "high,low", "--json", str(out)]
    assert localization.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["config"]["prompts"]["naming"] == "Is the {label} sound high or low?"
    assert result["config"]["prompts"]["answers"] == ["high", "low"]
    assert "'high' or 'low'" in result["knockout"]["prompting_last"]["measure"]
    for naming, answers, error in (("Is there a sound?", ("yes", "no"), "label"), ("Is the {label} {kind}?", ("a", "b"), "only"),
                                   ("Is there a {label}?", ("yes",), "two different"), ("Is there a {label}?", ("yes", "yes"), "two different")):
        with pytest.raises(ValueError, match=error):
            localization.Study(None, naming=naming, answers=answers)


def test_instruction_vectors_are_built_from_the_event_naming_prompt(toy):
    scenes = [localization.make_scene(seed, layout="equal") for seed in (1, 3, 5, 7)]
    label = scenes[0].labels[0]
    vectors = localization.build_vectors(toy, scenes, [label], "instructions", 4, False, naming="Is the {label} sound high or low?")
    assert vectors[label].info["instruction"] == f"Is the {label} sound high or low?"


def test_an_own_answer_knockout_is_signed_towards_the_answer_given_without_the_cut():
    class Runner:  # the margin is -2 and +3 unknocked, -1 and +1 with any cut
        def measure(self, prepared, hooks, measure):
            return [-2.0, 3.0] if hooks is None else [-1.0, 1.0]

    queries = [SimpleNamespace(clip=0), SimpleNamespace(clip=1)]
    effects = localization.knockout_effects(Runner(), queries, [(queries, None)], None, None, "last", [3], own_answer=True)
    assert effects["baseline"] == 2.5
    assert effects["queried_event"]["delta"] == pytest.approx(-1.5), "both cuts move away from the model's own answer"


def test_unknown_methods_are_refused():
    with pytest.raises(ValueError, match="unknown methods"):
        localization.run(None, methods=["telepathy"])


def fake_esc50(root, classes=("dog", "siren", "bell", "rain", "chirping_birds"), per_class=3, rate=22050):
    """A tiny ESC-50 folder in the official layout: 5-s seeded tones and noise, meta/esc50.csv beside audio/."""
    import soundfile as sf

    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    rng = np.random.default_rng(0)
    t = np.arange(5 * rate) / rate
    for target, label in enumerate(classes):
        for k in range(per_class):
            name = f"{k + 1}-{target:03d}{k}-A-{target}.wav"
            wave = 0.3 * np.sin(2 * np.pi * (200 + 150 * target) * t) + 0.05 * rng.standard_normal(len(t))
            sf.write(root / "audio" / name, wave.astype(np.float32), rate)
            rows.append(f"{name},{k % 5 + 1},{target},{label},False,{target:03d}{k},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


def test_real_clips_are_laid_out_like_the_synthetic_ones_and_never_shared_between_splits(tmp_path):
    records = localization.load_event_records(fake_esc50(tmp_path / "esc50"))
    pools = localization.record_pools(records, seed=0)
    paths = {name: {str(r.path_or_array) for r in pool} for name, pool in pools.items()}
    assert not (paths["vectors"] & paths["dev"]) and not (paths["dev"] & paths["test"]) and not (paths["vectors"] & paths["test"])
    scene = localization.real_scene(pools["test"], seed=5, layout="random", duration_s=6.0, sampling_rate=16000)
    synthetic = localization.make_scene(5, duration_s=6.0, layout="random")
    assert [(e.start_s, e.stop_s) for e in scene.events] == [(e.start_s, e.stop_s) for e in synthetic.events]
    assert len(set(scene.labels)) == 3 and "chirping birds" in {localization.spoken(r.label) for r in records}
    for event in scene.events:  # each interval holds sound, the gaps of the random layout are silent
        inside = scene.wave[int(event.start_s * 16000) + 200 : int(event.stop_s * 16000) - 200]
        assert np.abs(inside).max() > 0.1
    assert np.abs(scene.wave[: int(scene.events[0].start_s * 16000)]).max(initial=0.0) == 0.0


def test_a_run_on_a_folder_of_real_clips_says_what_it_skips_for_labels_of_several_tokens(tmp_path):
    data = fake_esc50(tmp_path / "esc50")
    out = tmp_path / "loc.json"
    argv = ["--model", "lalm-toy", "--data", str(data), "--n", "2", "--n-dev", "2", "--n-vectors", "6", "--scales", "4",
            "--methods", "steering,generation,random,null", "--json", str(out)]
    assert localization.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["config"]["data"] == {"folder": "esc50", "clips": 15, "classes": 5}
    assert result["overlap"]["random"] == pytest.approx(5 / 18, abs=1e-9)
    # "chirping birds" is two tokens for the toy's tokenizer: the class-logit knockout is skipped, and said so
    assert "chirping birds" in result["knockout"]["steering"]["skipped"]
    assert set(result["generation"]["several_token_labels"]) <= {"chirping birds"}


def test_the_study_keeps_no_audio_per_clip_only_token_ids_and_embeddings_encoded_once(toy):
    study = localization.Study(toy, n=2, n_dev=2, n_vectors=10, scales=[4.0], progress=False)
    assert all(isinstance(clip, localization.Clip) for name in ("dev", "test") for clip in study.split[name])
    clip = study.split["test"][0]
    assert clip.wave.shape == (round(clip.duration_s * clip.sampling_rate),), "the samples are rebuilt from the seed"
    assert len(study.embeds["test"]) == 2, "one entry per test clip"
    for groups in study.grouped.values():
        for _, batch in (item for chunks in groups.values() for item in chunks):
            assert "input_features" not in batch.inputs and batch.audio_embeds is not None
