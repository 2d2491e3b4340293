"""The toy's command line: ``python -m lalm_lens.zoo.train_toy``."""

import pytest

from lalm_lens.zoo import train_toy as tt


def test_set_takes_json_or_python_booleans_and_names_a_misspelt_field():
    assert tt.config_override("freeze_encoder=True") == ("freeze_encoder", True)
    assert tt.config_override("freeze_encoder=false") == ("freeze_encoder", False)
    assert tt.config_override("durations=[4, 6]") == ("durations", (4, 6))
    assert tt.config_override("init_from=some/folder") == ("init_from", "some/folder")
    with pytest.raises(ValueError, match="did you mean freeze_encoder"):
        tt.config_override("freeze_encode=true")
    with pytest.raises(ValueError, match="not a JSON value"):
        tt.config_override("lr=fast")
    with pytest.raises(SystemExit):
        tt.main(["--micro", "--set", "lr"])
