"""Shipped model names resolve to folders, or say how to get them."""

import pytest

from lalm_lens.zoo import SHIPPED, resolve


def test_paths_and_hub_ids_pass_through():
    assert resolve("some/folder") == "some/folder"


def test_a_shipped_name_gives_its_folder_or_a_clear_error():
    folder = SHIPPED["lalm-toy"]
    if (folder / "config.json").exists():
        assert resolve("lalm-toy") == str(folder)
    else:
        with pytest.raises(FileNotFoundError, match="train_toy"):
            resolve("lalm-toy")
