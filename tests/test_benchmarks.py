"""The overhead benchmark runs end to end (at toy size: timings here mean nothing)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import overhead  # noqa: E402


@pytest.mark.parametrize("family", list(overhead.BUILDERS))
def test_overhead_benchmark_runs(family, tmp_path):
    result = overhead.main(["--family", family, "--width", "32", "--layers", "1", "--seconds", "1",
                            "--rounds", "1", "--no-bridge", "--json", str(tmp_path / "out" / "overhead.json")])
    assert result["ratio"]["HF forward (sdpa)"] == 1.0
    assert set(result["ratio"]) >= {"HookedLALM, no hooks", "run_with_cache, everything", "last-query text→audio attention"}
    assert (tmp_path / "out" / "overhead.json").exists(), "the output folder is created"


def test_real_widths_have_the_released_head_sizes():
    for family, (d_model, d_audio, shape) in overhead.REAL_WIDTHS.items():
        assert d_model // shape.heads == 128 and d_audio // shape.audio_heads == 64, family


def test_many_experts_and_a_chosen_variant(tmp_path):
    result = overhead.main(["--family", "qwen3_omni_moe_thinker", "--experts", "4", "--width", "32", "--layers", "1",
                            "--seconds", "1", "--rounds", "1", "--no-bridge", "--only", "one residual hook",
                            "--json", str(tmp_path / "overhead.json")])
    assert set(result["ratio"]) == {"HF forward (sdpa)", "one residual hook"}
