"""The localization benchmark runs end to end (at the smallest size: timings here mean nothing)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import localization as benchmark  # noqa: E402


def test_localization_benchmark_times_every_step_and_extrapolates(tmp_path):
    out = tmp_path / "out" / "localization.json"
    result = benchmark.main(["--n", "2", "--n-dev", "2", "--n-vectors", "10", "--scales", "4", "--threads", "1",
                             "--methods", "steering,prompting,random,null", "--extrapolate", "100", "--json", str(out)])
    steps = result["measured"]["steps"]
    assert list(steps) == ["setup", "steering", "prompting", "random", "null"], "setup, then the methods in run()'s order"
    assert all(row["seconds"] >= 0 and row["peak_rss_mib"] > 0 for row in steps.values())
    assert result["measured"]["queries"] == 6, "2 test clips, every one of their 3 events queried"
    assert result["measured"]["overlap"]["null"] == pytest.approx(1 / 3, abs=1e-9)
    estimate = result["extrapolated"]
    assert estimate["queries"] == 300 and "ESTIMATE" in estimate["note"], "an extrapolation is labelled as one"
    assert estimate["total_s"] == pytest.approx(sum(e["seconds"] for e in estimate["steps"].values()))
    assert json.loads(out.read_text())["config"]["n"] == 2, "the output folder is created"


def test_unknown_methods_and_sizes_are_refused():
    with pytest.raises(SystemExit):
        benchmark.main(["--methods", "telepathy"])
    with pytest.raises(SystemExit):
        benchmark.main(["--n", "1", "--extrapolate", "100"])


def test_the_encode_once_sweep_is_timed_against_the_naive_one_and_gives_the_same_logits():
    from lalm_lens.cli import load

    result = benchmark.sweep(load("lalm-toy"), n_settings=2, n_prompts=3)
    assert result["copies"] == 6 and result["naive_s"] > 0 and result["encode_once_s"] > 0
    assert result["ratio"] == pytest.approx(result["naive_s"] / result["encode_once_s"])
    # one clip encoded alone against three copies encoded together: float32 encoders agree to rounding
    assert result["max_abs_logit_diff"] < 1e-4
