"""Shared fixtures: tiny random checkpoints of each family, saved and loaded back like a user's."""

import numpy as np
import pytest
import torch

import lalm_lens as ll
from lalm_lens.zoo.tiny import (
    save_tiny_audio_flamingo3,
    save_tiny_gemma3n,
    save_tiny_glmasr,
    save_tiny_granite_speech,
    save_tiny_music_flamingo,
    save_tiny_qwen2_5_omni_thinker,
    save_tiny_qwen2_audio,
    save_tiny_qwen3_asr,
    save_tiny_qwen3_omni_thinker,
    save_tiny_voxtral,
)

FAMILIES = {
    "qwen2_audio": save_tiny_qwen2_audio,
    "audioflamingo3": save_tiny_audio_flamingo3,
    "qwen2_5_omni_thinker": save_tiny_qwen2_5_omni_thinker,
    "musicflamingo": save_tiny_music_flamingo,
    "voxtral": save_tiny_voxtral,
    "glmasr": save_tiny_glmasr,
    "qwen3_asr": save_tiny_qwen3_asr,
    "granite_speech": save_tiny_granite_speech,
    "gemma3n": save_tiny_gemma3n,
    "qwen3_omni_moe_thinker": save_tiny_qwen3_omni_thinker,
}


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory):
    """Tiny checkpoints loaded by name (``tiny-qwen2-audio``...) are built into a temporary cache, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LALM_LENS_CACHE", str(tmp_path_factory.mktemp("lalm_lens_cache")))
        yield


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """``checkpoint(family)`` -> folder of a tiny checkpoint written with save_pretrained."""
    paths = {}

    def get(family: str):
        if family not in paths:
            paths[family] = FAMILIES[family](tmp_path_factory.mktemp(family))
        return paths[family]

    return get


@pytest.fixture(scope="module")
def toy():
    """The shipped, trained lalm-toy, loaded as a user loads it."""
    return ll.HookedLALM.from_pretrained("lalm-toy")


@pytest.fixture(scope="session", params=list(FAMILIES))
def family(request):
    return request.param


@pytest.fixture(scope="session")
def model(family, checkpoint):
    return ll.HookedLALM.from_pretrained(checkpoint(family))


def noise(seconds: float, seed: int = 0, rate: int = 16000) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * 0.1).astype(np.float32)


@pytest.fixture(scope="session")
def batch(model):
    """Two examples of different lengths, so the batch is padded."""
    return model.prepare([noise(2.0, 1), noise(3.5, 2)], "What sounds are in the audio?", sampling_rate=16000)


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield
