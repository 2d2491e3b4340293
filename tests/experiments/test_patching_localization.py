"""The patching-localization study runs end to end on one clip and summarises it."""

import json

from lalm_lens.experiments import patching_localization


def test_one_clip_runs_and_summarises(tmp_path, capsys):
    out = tmp_path / "part.jsonl"
    patching_localization.main(["run", "--n", "1", "--sites", "resid_pre", "z", "--bin-s", "2.0", "--text", "after_audio",
                                "--out", str(out)])
    record = json.loads(out.read_text().splitlines()[0])
    assert record["clip"] == 0 and record["flipped"]
    assert record["resid_pre"]["rows"][:2] == ["L0", "L1"]
    assert record["z"]["rows"][:2] == ["L0H0", "L0H1"], "per-head rows are named as such"
    patching_localization.main(["summary", str(out)])
    printed = capsys.readouterr().out
    assert "clips: 1" in printed and "\n  L5H3: " in printed
