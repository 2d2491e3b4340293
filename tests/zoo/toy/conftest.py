"""Fixtures of the toy's tests: the shipped lalm-toy, and a micro toy that the training script trains once a session."""

import pytest

import lalm_lens as ll
from lalm_lens.zoo import SHIPPED
from lalm_lens.zoo import train_toy as tt

SHIPPED_TOY = SHIPPED["lalm-toy"].joinpath("config.json").exists()


@pytest.fixture(scope="session")
def toy():
    """The shipped lalm-toy, as tests/conftest.py's ``toy``, but skipped until it has been trained and shipped."""
    if not SHIPPED_TOY:
        pytest.skip("lalm-toy has not been trained to its targets and shipped yet (python -m lalm_lens.zoo.train_toy)")
    return ll.HookedLALM.from_pretrained("lalm-toy")


@pytest.fixture(scope="session")
def micro_toy(tmp_path_factory):
    """A micro toy trained for three steps by the script, as a user would train their own."""
    out = tmp_path_factory.mktemp("micro_toy")
    tt.main(["--micro", "--steps", "3", "--threads", "1", "--out", str(out)])
    return out
