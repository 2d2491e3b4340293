"""benchmarks/neuron_stats.py runs end to end (at tiny size: its timings mean nothing here)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import neuron_stats  # noqa: E402


def test_neuron_stats_benchmark_runs(checkpoint, tmp_path):
    result = neuron_stats.main(["--model", str(checkpoint("qwen2_audio")), "--batches", "1", "--batch-size", "2",
                                "--rounds", "1", "--growth", "2", "--json", str(tmp_path / "out.json")])
    assert result["throughput_ratio"]["plain forward"] == 1.0
    for rows in result["memory"].values():
        assert rows[1]["tokens"] == 2 * rows[0]["tokens"] and rows[0]["stats_mib"] == rows[1]["stats_mib"]
    assert (tmp_path / "out.json").exists()
