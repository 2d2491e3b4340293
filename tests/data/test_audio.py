"""Every waveform goes through load_waveform: good input comes out mono float32 at the model's rate,
bad input fails loudly."""

import numpy as np
import pytest
import soundfile
import torch

import lalm_lens as ll
from lalm_lens.data import AudioError, load_waveform, read_audio, resample, to_mono, validate_waveform
from lalm_lens.data.audio import AudioWarning, as_examples, limit_length


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_file_is_read_and_resampled(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(0.5, 8000), 8000)
    wave = load_waveform(path, 16000)
    assert wave.dtype == np.float32 and wave.shape == (8000,)
    assert np.all(np.isfinite(wave)) and np.abs(wave).max() < 0.6


def test_read_audio_returns_samples_and_rate(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(0.1, 16000), 16000)
    samples, rate = read_audio(path)
    assert rate == 16000 and samples.shape == (1600,)


def test_arrays_and_tensors_need_their_rate():
    wave = tone(0.25, 16000)
    assert np.array_equal(load_waveform(wave, 16000, sampling_rate=16000), wave)
    assert load_waveform(torch.from_numpy(wave), 8000, sampling_rate=16000).shape == (2000,)
    with pytest.raises(AudioError, match="sampling rate"):
        load_waveform(wave, 16000)


def test_resample_changes_length_by_the_rate_ratio():
    assert resample(tone(1.0, 44100), 44100, 16000).shape == (16000,)
    wave = tone(0.1, 16000)
    assert resample(wave, 16000, 16000) is wave


def test_stereo_needs_an_explicit_mixdown(tmp_path):
    left, right = tone(0.2, 16000, 440), tone(0.2, 16000, 660)
    stereo = np.stack([left, right], axis=1)
    with pytest.raises(AudioError, match="2 channels"):
        load_waveform(stereo, 16000, sampling_rate=16000)
    mixed = load_waveform(stereo, 16000, sampling_rate=16000, mixdown=True)
    np.testing.assert_allclose(mixed, (left + right) / 2, atol=1e-6)
    np.testing.assert_allclose(to_mono(stereo.T, mixdown=True), (left + right) / 2, atol=1e-6)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, 16000)
    with pytest.raises(AudioError, match="mixdown=True"):
        load_waveform(path, 16000)
    assert load_waveform(path, 16000, mixdown=True).shape == (3200,)


def test_single_channel_2d_array_is_flattened():
    assert to_mono(np.zeros((1, 100), np.float32)).shape == (100,)
    assert to_mono(np.zeros((100, 1), np.float32)).shape == (100,)


@pytest.mark.parametrize(
    "wave, message",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.0, np.nan, 0.1], np.float32), "NaN"),
        (np.array([0.0, np.inf], np.float32), "NaN or Inf"),
        (np.zeros((2, 3, 4), np.float32), "1-D waveform"),
    ],
)
def test_bad_arrays_are_rejected(wave, message):
    with pytest.raises(AudioError, match=message):
        load_waveform(wave, 16000, sampling_rate=16000)


def test_other_bad_input_is_rejected(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_waveform(tmp_path / "missing.wav", 16000)
    with pytest.raises(AudioError, match="expected a file path"):
        load_waveform({"wave": [0.0, 0.1]}, 16000)
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(0.1, 8000), 8000)
    with pytest.raises(AudioError, match="stored at 8000 Hz"):
        load_waveform(path, 16000, sampling_rate=16000)
    with pytest.raises(AudioError, match="positive"):
        validate_waveform(tone(0.1, 16000), 0)
    with pytest.raises(AudioError, match="exceed"):
        validate_waveform(np.array([0.0, 1.5], np.float32), 16000, allow_clipping=False)
    with pytest.raises(AudioError, match="my_clip"):
        load_waveform(np.zeros(0, np.float32), 16000, sampling_rate=16000, name="my_clip")


# -- integer and mis-scaled audio ------------------------------------------------------------------------------


def test_integer_pcm_is_scaled_by_its_types_convention():
    # Exact: every value below is a power of two over a power of two, so float32 holds it exactly.
    int16 = np.array([-32768, -16384, 0, 16384, 32767], np.int16)
    assert load_waveform(int16, 16000, sampling_rate=16000).tolist() == [-1.0, -0.5, 0.0, 0.5, 32767 / 32768]
    int32 = np.array([-(2**31), 2**30, 0], np.int32)
    assert load_waveform(int32, 16000, sampling_rate=16000).tolist() == [-1.0, 0.5, 0.0]
    int8 = np.array([-128, 64, 0], np.int8)
    assert load_waveform(torch.from_numpy(int8), 16000, sampling_rate=16000).tolist() == [-1.0, 0.5, 0.0]


def test_8_bit_wav_is_offset_binary_and_keeps_no_dc_offset(tmp_path):
    wave = tone(0.5, 16000)
    uint8 = np.round(wave * 127 + 128).astype(np.uint8)
    assert load_waveform(uint8, 16000, sampling_rate=16000)[[0]].tolist() == [0.0], "128 is silence in 8-bit PCM"
    # A whole number of 440 Hz periods has zero mean; 8-bit rounding adds at most 1/256 per sample.
    assert abs(load_waveform(uint8, 16000, sampling_rate=16000).mean()) < 1 / 256
    path = tmp_path / "eight_bit.wav"
    soundfile.write(path, wave, 16000, subtype="PCM_U8")
    np.testing.assert_allclose(load_waveform(path, 16000), load_waveform(uint8, 16000, sampling_rate=16000), atol=1 / 128)


def test_int64_holding_int16_values_is_refused_with_the_conversion_to_make():
    pcm = np.array((tone(0.25, 16000) * 32767).round(), dtype=np.int64)  # what np.array(list_of_ints) gives
    with pytest.raises(AudioError, match=r"int64 .*no standard PCM scale.*wave\.astype\(np\.int16\)"):
        load_waveform(pcm, 16000, sampling_rate=16000, name="example 0 clip 0")
    with pytest.raises(AudioError, match="uint16"):
        load_waveform(torch.zeros(10, dtype=torch.uint16), 16000, sampling_rate=16000)
    # Converted as the message says, it is the same clip as the int16 one (exact: the same samples, same scale).
    assert np.array_equal(load_waveform(pcm.astype(np.int16), 16000, sampling_rate=16000), pcm.astype(np.float32) / 32768)


def test_float_audio_at_integer_scale_is_refused_unless_allowed():
    loud = tone(0.25, 16000) * 32767
    with pytest.raises(AudioError, match=r"peak at 16383.*divide by 32768.*allow_loud=True"):
        load_waveform(loud, 16000, sampling_rate=16000)
    with pytest.raises(AudioError, match="allow_loud"):
        load_waveform(torch.from_numpy(loud), 16000, sampling_rate=16000)
    assert np.array_equal(load_waveform(loud, 16000, sampling_rate=16000, allow_loud=True), loud)
    hot = tone(0.25, 16000) * 3.0  # a peak of 1.5: clipped but plausibly float audio, kept as it is
    assert np.array_equal(load_waveform(hot, 16000, sampling_rate=16000), hot)


# -- clips in unusual containers ---------------------------------------------------------------------------------


def test_a_bfloat16_tensor_is_read_as_float32():
    wave = tone(0.25, 16000)
    loaded = load_waveform(torch.from_numpy(wave).bfloat16(), 16000, sampling_rate=16000)
    assert loaded.dtype == np.float32 and loaded.shape == wave.shape
    np.testing.assert_allclose(loaded, wave, atol=2**-9)  # bfloat16 keeps 8 significant bits: |x| <= 0.5 -> 2^-9


def test_a_python_list_of_floats_is_one_clip():
    wave = tone(0.05, 16000)
    samples = wave.tolist()
    assert np.array_equal(load_waveform(samples, 16000, sampling_rate=16000), wave)
    assert as_examples(samples) == [[samples]], "one waveform, not one clip per sample"
    assert as_examples([samples, samples]) == [[samples], [samples]]
    with pytest.raises(AudioError, match="sampling rate"):
        load_waveform(samples, 16000)
    with pytest.raises(AudioError, match="an empty list"):
        load_waveform([], 16000, sampling_rate=16000)


def test_the_tuple_soundfile_read_returns_is_refused_with_what_to_pass(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(0.1, 8000), 8000)
    with pytest.raises(AudioError, match=r"\(samples, rate\).*sampling_rate=8000"):
        as_examples(soundfile.read(path))


def test_an_example_without_clips_is_refused():
    with pytest.raises(AudioError, match="example 0 holds no audio clip"):
        as_examples([[]])
    with pytest.raises(AudioError, match="example 1 holds no audio clip"):
        as_examples([[tone(0.1, 16000)], []])


def test_prepare_takes_a_list_of_floats_and_refuses_an_empty_example(checkpoint):
    model = ll.HookedLALM.from_pretrained(checkpoint("qwen2_audio"))
    wave = tone(1.0, 16000)
    from_list = model.prepare(wave.tolist(), "What sounds are in the audio?", sampling_rate=16000)
    from_array = model.prepare(wave, "What sounds are in the audio?", sampling_rate=16000)
    assert from_list.inputs.keys() == from_array.inputs.keys()
    assert all(torch.equal(from_list.inputs[k], from_array.inputs[k]) for k in from_array.inputs)
    with pytest.raises(AudioError, match="example 0 holds no audio clip"):
        model.prepare([[]], "What sounds are in the audio?", sampling_rate=16000)


def test_two_stacked_clips_get_the_list_hint_as_well_as_mixdown():
    two = np.stack([tone(0.2, 16000, 440), tone(0.2, 16000, 660)])
    with pytest.raises(AudioError, match=r"mixdown=True.*separate clips.*\[\[clip_a, clip_b\]\]"):
        load_waveform(two, 16000, sampling_rate=16000)


# -- files libsndfile cannot read --------------------------------------------------------------------------------


def folder(path):
    path.mkdir()
    return path


def text_file(path):
    path.write_text("not audio\n")
    return path


def broken_header(path):
    soundfile.write(path, tone(0.1, 16000), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[:36] + b"junk" + data[40:])  # the 'data' chunk marker overwritten
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (folder, "is a folder"),
        (text_file, "cannot decode"),
        (broken_header, "cannot decode"),
    ],
    ids=["folder", "text_file", "broken_header"],
)
def test_unreadable_files_raise_audio_error_naming_the_clip(tmp_path, make, message):
    path = make(tmp_path / "clip.wav")
    with pytest.raises(AudioError, match=message) as error:
        load_waveform(path, 16000, name="example 1 clip 0")
    assert "example 1 clip 0" in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_a_truncated_file_warns_with_the_length_its_header_announces(tmp_path, subtype):
    path = tmp_path / "cut.wav"
    soundfile.write(path, tone(1.0, 16000), 16000, subtype=subtype)
    path.write_bytes(path.read_bytes()[: 44 + 16000])  # 44-byte header, then the first bytes of the samples
    with pytest.warns(AudioWarning, match=r"example 0 clip 0: .* but its header announces 16000 \(1\.000 s\)"):
        wave = load_waveform(path, 16000, name="example 0 clip 0")
    assert len(wave) < 16000


def test_an_intact_file_does_not_warn(tmp_path, recwarn):
    path = tmp_path / "whole.wav"
    soundfile.write(path, tone(1.0, 16000), 16000)
    assert load_waveform(path, 16000).shape == (16000,)
    assert not [w for w in recwarn if issubclass(w.category, AudioWarning)]


def test_one_sample_too_long_says_so_in_samples():
    wave = np.zeros(160_001, np.float32)
    with pytest.raises(AudioError, match=r"is 10.00006 s long \(160001 samples at 16000 Hz\).*at most 10 s \(160000 samples\)"):
        limit_length(wave, 16000, 10, name="example 0 clip 0")
    assert limit_length(wave, 16000, 10, truncate=True).shape == (160_000,)
    assert limit_length(wave[:-1], 16000, 10).shape == (160_000,)
