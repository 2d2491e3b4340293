"""AudioSpan: decoder positions <-> seconds <-> encoder frames."""

import numpy as np
import pytest
import torch

from lalm_lens import AudioSpan, audio_positions, audio_slice, time_axis


def test_a_span_maps_positions_to_seconds_and_back():
    span = AudioSpan(start=10, stop=60, seconds_per_token=0.04, offset_s=30.0)
    assert len(span) == 50 and span.duration_s == pytest.approx(2.0)
    assert span.times()[:2] == pytest.approx([30.0, 30.04])
    assert span.position_at(30.5) == 10 + 12
    assert span.positions_between(30.2, 30.4) == range(15, 20)
    with pytest.raises(ValueError, match="outside"):
        span.position_at(10.0)


def test_audio_slice_follows_clip_time_across_windows():
    spans = [AudioSpan(20, 23, 0.04, 30.0, clip=0, encoder_row=1), AudioSpan(5, 8, 0.04, 0.0, clip=0, encoder_row=0)]
    cache = torch.arange(30.0).reshape(1, 30, 1)
    assert audio_positions(spans, clip=0) == [5, 6, 7, 20, 21, 22]
    assert audio_slice(cache, spans).flatten().tolist() == [5, 6, 7, 20, 21, 22]
    assert np.allclose(time_axis(spans, centre=False), [0, 0.04, 0.08, 30, 30.04, 30.08])
    pattern = torch.arange(30.0).expand(1, 2, 4, 30)
    assert audio_slice(pattern, spans, dim=-1).shape == (2, 4, 6)
