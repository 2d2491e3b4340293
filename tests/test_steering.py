"""SteeringVector: built from contrasts with streaming means, centred across classes, saved with the model's fingerprint."""

import pytest
import torch

import lalm_lens as ll
from lalm_lens.steering import SteeringVector, read_index

from conftest import noise

LIST_Q = "What sounds are in the audio?"
PRESENCE_Q = "Is there a dog sound?"
# float32 means over a handful of 4-32-wide vectors, accumulated in float64: far inside 1e-5
TOL = dict(rtol=1e-5, atol=1e-5)


def last_token_resid(model, clips, prompt, layers):
    batch = model.prepare(clips, prompt, sampling_rate=16000)
    _, cache = model.run_with_cache(batch, names_filter=[f"blocks.{layer}.hook_resid_post" for layer in layers])
    return torch.stack([cache[f"blocks.{layer}.hook_resid_post"][:, -1] for layer in layers], dim=1)


def test_instruction_vector_is_the_mean_difference_of_the_last_token(model):
    if model.cfg.arch == "gemma3n":
        pytest.skip("Gemma-3n (HF): a clip's last audio token depends on the batch's padding (its subsampling "
                    "convolutions look ahead into it), so batches of 2 and 3 clips give different vectors")
    clips = [noise(1.0 + 0.5 * i, seed=i) for i in range(3)]
    layers = [0, model.cfg.n_layers - 1]
    vector = SteeringVector.from_instructions(model, clips, PRESENCE_Q, LIST_Q, layers=layers, sampling_rate=16000, batch_size=2)
    expected = (last_token_resid(model, clips, PRESENCE_Q, layers) - last_token_resid(model, clips, LIST_Q, layers)).mean(0)
    torch.testing.assert_close(vector.directions, expected, **TOL)
    assert vector.layers == layers and vector.info["n_positive"] == vector.info["n_negative"] == 3
    assert vector.info["method"] == "instructions" and vector.info["baseline"] == LIST_Q


def test_audio_vector_uses_one_instruction_and_two_audio_sets(model):
    loud = [noise(1.0, seed=i) * 3 for i in range(2)]  # peak stays under the loud-PCM check (2.0)
    quiet = [noise(1.5, seed=10 + i) for i in range(3)]
    vector = SteeringVector.from_audio(model, loud, quiet, LIST_Q, layers=[1], sampling_rate=16000)
    expected = last_token_resid(model, loud, LIST_Q, [1]).mean(0) - last_token_resid(model, quiet, LIST_Q, [1]).mean(0)
    torch.testing.assert_close(vector.directions, expected, **TOL)


def test_read_positions_last_text_and_a_named_phrase(model, batch):
    assert read_index(batch, "last") == [[batch.seq_len - 1]] * 2
    text = read_index(batch, "text")
    for b in range(2):
        audio = set(batch.audio_positions(b))
        assert text[b] and not audio & set(text[b])
        assert all(batch.inputs["attention_mask"][b, p] == 1 for p in text[b])
    assert read_index(batch, "phrase", "sounds") == [batch.find_text(0, "sounds"), batch.find_text(1, "sounds")]
    with pytest.raises(ValueError, match="phrase="):
        read_index(batch, "phrase")


def test_class_centred_vectors_remove_the_shared_direction(model):
    clips = [noise(1.0, seed=i) for i in range(2)]
    raw = {
        label: SteeringVector.from_instructions(model, clips, PRESENCE_Q.replace("dog", label), LIST_Q, layers=[0, 1], sampling_rate=16000)
        for label in ("dog", "bell", "rain")
    }
    centred = SteeringVector.centre(raw)
    torch.testing.assert_close(sum(v.directions for v in centred.values()), torch.zeros(2, model.cfg.d_model), rtol=0, atol=1e-5)
    for label, v in centred.items():
        torch.testing.assert_close(raw[label].directions - v.directions, torch.stack([r.directions for r in raw.values()]).mean(0))
        assert all(0.0 <= f <= 1.0 + 1e-6 for f in v.info["shared_fraction"]) and v.info["class_centred"]


def test_saved_and_loaded_vector_steers_identically(model, batch, tmp_path):
    vector = SteeringVector.from_instructions(model, [noise(1.0)], PRESENCE_Q, LIST_Q, layers=[0, 1], sampling_rate=16000)
    loaded = SteeringVector.load(vector.save(tmp_path / "dog.safetensors"), model)
    assert torch.equal(loaded.directions, vector.directions)
    assert (loaded.layers, loaded.hook_point, loaded.info) == (vector.layers, vector.hook_point, vector.info)
    a = model.run_with_hooks(batch, fwd_hooks=vector.hook(scale=3.0).fwd_hooks())
    b = model.run_with_hooks(batch, fwd_hooks=loaded.hook(scale=3.0).fwd_hooks())
    assert torch.equal(a, b), "same vector, same kernel, same data"
    assert not torch.equal(a, model(batch))


def test_loading_into_another_model_fails_clearly(model, checkpoint, family, tmp_path):
    other_family = next(f for f in ("qwen2_audio", "audioflamingo3") if f != family)
    other = ll.HookedLALM.from_pretrained(checkpoint(other_family))
    path = SteeringVector.from_instructions(other, [noise(1.0)], PRESENCE_Q, LIST_Q, layers=[0], sampling_rate=16000).save(
        tmp_path / "other.safetensors"
    )
    with pytest.raises(ValueError, match="cannot be used with a model"):
        SteeringVector.load(path, model)


def test_bad_layers_and_files_are_refused(model, tmp_path):
    with pytest.raises(ValueError, match="do not exist"):
        SteeringVector.from_instructions(model, [noise(1.0)], PRESENCE_Q, LIST_Q, layers=[99], sampling_rate=16000)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="no lalm_lens steering metadata"):
        SteeringVector.load(tmp_path / "plain.safetensors")


def test_text_and_phrase_positions_average_per_example_then_over_examples(model):
    clips = [noise(1.0, seed=1), noise(2.0, seed=2)]
    name = "blocks.0.hook_resid_post"
    for positions, phrase in (("text", None), ("phrase", "sound")):  # "sound" / "sounds" in both prompts
        vector = SteeringVector.from_instructions(
            model, clips, PRESENCE_Q, LIST_Q, layers=[0], positions=positions, phrase=phrase, sampling_rate=16000
        )
        means = []
        for prompt in (PRESENCE_Q, LIST_Q):
            batch = model.prepare(clips, prompt, sampling_rate=16000)
            _, cache = model.run_with_cache(batch, names_filter=name)
            rows = read_index(batch, positions, phrase)
            means.append(torch.stack([cache[name][b, rows[b]].mean(0) for b in range(2)]).mean(0))
        torch.testing.assert_close(vector.directions[0], means[0] - means[1], **TOL)
        assert vector.info["positions"] == positions
