"""The patching-localization study runs end to end on one clip and summarises it."""

import json

from lalm_lens.experiments import patching_localization


def test_one_clip_runs_and_summarises(tmp_path, capsys):
    out = tmp_path / "part.jsonl"
    patching_localization.main(["run", "--n", "1", "--sites", "resid_pre", "--bin-s", "1.0", "--out", str(out)])
    record = json.loads(out.read_text().splitlines()[0])
    assert record["clip"] == 0 and "flipped" in record
    patching_localization.main(["summary", str(out)])
    assert "clips: 1" in capsys.readouterr().out
