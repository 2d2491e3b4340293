"""The three-event localization study: exact baselines, scoring, parsing, and a small end-to-end run on the toy."""

import json

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


def test_unknown_methods_are_refused():
    with pytest.raises(ValueError, match="unknown methods"):
        localization.run(None, methods=["telepathy"])
