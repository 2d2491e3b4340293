"""Shipped model names resolve to folders, or say how to get them; tiny-* names are built once into the cache;
tiny builders take real head counts."""

import tempfile
from pathlib import Path

import pytest
import torch
from transformers import Qwen2_5OmniThinkerConfig

import lalm_lens as ll
from lalm_lens.zoo import COMPLETE, SHIPPED, cache_dir, resolve, tiny_checkpoint
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


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LALM_LENS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize(
    "name, arch",
    [("tiny-qwen2-audio", "qwen2_audio"), ("tiny-audioflamingo3", "audioflamingo3"),
     ("tiny-qwen2.5-omni-thinker", "qwen2_5_omni_thinker"), ("tiny-kimi-audio", "kimi_audio")],
)
def test_tiny_names_load_with_from_pretrained(cache, name, arch):
    model = ll.HookedLALM.from_pretrained(name)
    assert model.cfg.arch == arch
    assert resolve(name) == str(cache / "tiny" / name)


def test_a_tiny_checkpoint_is_built_once_and_leaves_nothing_elsewhere(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    folder = Path(resolve("tiny-qwen2-audio"))
    assert torch.equal(torch.rand(3), expected_draw), "building must not move the caller's random state"
    assert (folder / "config.json").is_file() and (folder / COMPLETE).is_file()
    built = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve("tiny-qwen2-audio") == str(folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == built, "not rebuilt"
    assert [p.name for p in (cache / "tiny").iterdir()] == ["tiny-qwen2-audio"], "no staging folder left"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_an_incomplete_tiny_checkpoint_is_rebuilt_identically(cache):
    folder = Path(resolve("tiny-audioflamingo3"))
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").unlink()  # an interrupted copy, or a user's clean-up
    (folder / COMPLETE).unlink()
    assert resolve("tiny-audioflamingo3") == str(folder)
    assert (folder / "model.safetensors").read_bytes() == weights, "fixed seed: the same bytes"
    (folder / COMPLETE).write_text("built by older code")
    assert resolve("tiny-audioflamingo3") == str(folder) and (folder / COMPLETE).read_text() != "built by older code"


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LALM_LENS_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("LALM_LENS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "lalm_lens"
    with pytest.raises(KeyError, match="tiny-qwen2-audio"):
        tiny_checkpoint("tiny-whisper")
