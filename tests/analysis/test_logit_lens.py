"""The logit lens: each layer's residual stream through the final norm and unembedding, at audio and text positions."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from lalm_lens.analysis.logit_lens import logit_lens
from lalm_lens.data import make_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene(seed=3)


@pytest.fixture(scope="module")
def batch(toy, scene):
    return toy.prepare(scene.wave, f"Is there a {scene.events[0].label} sound?", sampling_rate=16000)


def test_the_last_row_is_the_models_own_prediction(toy, batch):
    lens = logit_lens(toy, batch, tokens=["yes", "no"], top_k=3)
    probs = toy(batch)[0].softmax(-1)
    assert lens.layers == ["embed", "0", "1", "2", "3", "4", "5"]
    assert lens.probs.shape == (7, batch.seq_len, 2) and lens.top_ids.shape == (7, batch.seq_len, 3)
    # the final norm and lm_head on a slice of the positions: the same fp32 ops, rows reduced over d_model = 128
    yes, no = toy.to_single_token("yes"), toy.to_single_token("no")
    torch.testing.assert_close(torch.from_numpy(lens.probs[-1]), probs[:, [yes, no]], atol=1e-5, rtol=1e-4)
    assert lens.top(-1, -1)[0][0] == "yes"


def test_audio_positions_carry_their_seconds_and_text_positions_their_tokens(toy, batch):
    lens = logit_lens(toy, batch, tokens=["yes"], positions=[*batch.audio_positions(0)[:3], -1])
    np.testing.assert_allclose(lens.seconds[:3], [0.02, 0.06, 0.10])
    assert lens.clips == [0, 0, 0, None] and np.isnan(lens.seconds[-1])
    assert lens.labels[-1] == "assistant" and lens.positions[-1] == batch.seq_len - 1


def test_an_event_word_rises_at_the_audio_where_the_event_sounds(toy, scene, batch):
    """Audio positions of the toy name some of the classes they hold: on this clip, the dog's."""
    labels = [e.label for e in scene.events]
    lens = logit_lens(toy, batch, tokens=labels, positions=batch.audio_positions(0))
    inside = np.array([scene.events[1].start_s <= t < scene.events[1].stop_s for t in lens.seconds])
    best = lens.probs.max(0)  # [pos, token]: the highest probability over layers
    assert labels[1] == "dog" and best[inside, 1].mean() > 10 * best[~inside, 1].mean()


def test_the_plot_has_a_time_axis_and_a_token_axis(toy, scene, batch):
    lens = logit_lens(toy, batch, tokens=["yes"])
    fig = lens.plot("yes", events=scene.events)
    assert fig.axes[0].get_xlabel() == "time in the clip (s)" and fig.axes[1].get_xlabel() == "text position"
    with pytest.raises(KeyError, match="chosen tokens"):
        lens.plot("dog")


def test_bad_input_is_refused(toy, batch):
    with pytest.raises(ValueError, match="not one"):
        logit_lens(toy, batch, tokens=["is there"])
    with pytest.raises(ValueError, match="outside the sequence"):
        logit_lens(toy, batch, positions=[batch.seq_len])
    with pytest.raises(TypeError, match="LALMBatch"):
        logit_lens(toy, batch.inputs)
