"""Shipped model names resolve to folders, or say how to get them; tiny builders take real head counts."""

import pytest
from transformers import Qwen2_5OmniThinkerConfig

from lalm_lens.zoo import SHIPPED, resolve
from lalm_lens.zoo.tiny import LayerShape, save_tiny_qwen2_5_omni_thinker


def test_paths_and_hub_ids_pass_through():
    assert resolve("some/folder") == "some/folder"


def test_a_shipped_name_gives_its_folder_or_a_clear_error():
    folder = SHIPPED["lalm-toy"]
    if (folder / "config.json").exists():
        assert resolve("lalm-toy") == str(folder)
    else:
        with pytest.raises(FileNotFoundError, match="train_toy"):
            resolve("lalm-toy")


def test_tiny_builders_take_real_head_counts_and_widths(tmp_path):
    shape = LayerShape(heads=2, kv_heads=1, d_mlp=96, audio_heads=1, d_audio_mlp=80)
    path = save_tiny_qwen2_5_omni_thinker(tmp_path, d_model=64, layers=1, d_audio=64, audio_layers=1, shape=shape)
    config = Qwen2_5OmniThinkerConfig.from_pretrained(path)
    text, audio = config.text_config, config.audio_config
    assert (text.num_attention_heads, text.num_key_value_heads, text.intermediate_size) == (2, 1, 96)
    assert (audio.encoder_attention_heads, audio.encoder_ffn_dim) == (1, 80)
