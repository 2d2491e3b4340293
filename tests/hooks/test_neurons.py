"""Neuron interventions: deactivation and gain as hook objects, in forwards and in generation."""

import pytest
import torch

import lalm_lens as ll
from conftest import noise
from lalm_lens.hooks.neurons import Deactivate, Gain
from lalm_lens.neurons import NeuronSet, NeuronStats, Site
from lalm_lens.zoo.tiny import save_tiny_qwen2_5_omni_thinker, save_tiny_qwen2_audio


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ll.HookedLALM.from_pretrained(save_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny_qwen2_audio")))


@pytest.fixture(scope="module")
def batch(tiny):
    return tiny.prepare([noise(1.0, 1), noise(1.6, 2)], "What emotion does the speaker express?", sampling_rate=16000)


def neuron_set(model, site="mlp.hook_gate", neurons=None):
    fingerprint = Site.parse(site).fingerprint(model.cfg)
    return NeuronSet(neurons or {"happy": {0: [1, 5]}, "sad": {1: [2]}}, fingerprint)


def gate(model, batch, hooks, layer):
    _, cache = model.run_with_cache(batch, names_filter=f"blocks.{layer}.mlp.hook_gate", fwd_hooks=hooks)
    return cache[f"blocks.{layer}.mlp.hook_gate"]


def test_deactivate_zeroes_exactly_the_chosen_neurons(tiny, batch):
    chosen = neuron_set(tiny)
    plain = gate(tiny, batch, [], 0)
    edited = gate(tiny, batch, Deactivate(chosen, tiny, classes="happy").fwd_hooks(), 0)
    assert torch.all(edited[..., [1, 5]] == 0)
    keep = [n for n in range(tiny.cfg.d_mlp) if n not in (1, 5)]
    assert torch.equal(edited[..., keep], plain[..., keep])
    by_hand = lambda t, hook: t.index_fill(-1, torch.tensor([1, 5]), 0.0)
    expected = tiny.run_with_hooks(batch, fwd_hooks=[("blocks.0.mlp.hook_gate", by_hand)])
    assert torch.equal(tiny.run_with_hooks(batch, fwd_hooks=Deactivate(chosen, tiny, "happy").fwd_hooks()), expected)
    assert not torch.equal(expected, tiny(batch)) and not torch.equal(plain, edited)


def test_mean_deactivation_sets_the_identification_mean(tiny, batch):
    chosen = neuron_set(tiny)
    stats = NeuronStats.for_model(tiny, ["happy", "sad"]).accumulate(tiny, batch, ["happy", "sad"])
    edited = gate(tiny, batch, Deactivate(chosen, tiny, mean=stats).fwd_hooks(), 1)
    expected = stats.overall_mean[1, 2].float().expand(edited.shape[:2])
    assert torch.equal(edited[..., 2], expected)


def test_gain_multiplies_or_adds_and_composes(tiny, batch):
    chosen = neuron_set(tiny)
    plain = gate(tiny, batch, [], 0)
    assert torch.equal(tiny.run_with_hooks(batch, fwd_hooks=Gain(chosen, tiny, 1.0).fwd_hooks()), tiny(batch))
    # one float32 multiply per element: exact up to one rounding
    torch.testing.assert_close(gate(tiny, batch, Gain(chosen, tiny, 3.0, "happy").fwd_hooks(), 0)[..., 1], 3 * plain[..., 1])
    torch.testing.assert_close(gate(tiny, batch, Gain(chosen, tiny, 0.5, "happy", additive=True).fwd_hooks(), 0)[..., 5],
                               plain[..., 5] + 0.5)
    both = Gain(chosen, tiny, 2.0, "happy").fwd_hooks() + Deactivate(chosen, tiny, "sad").fwd_hooks()
    _, cache = tiny.run_with_cache(batch, names_filter=lambda n: n.endswith("mlp.hook_gate"), fwd_hooks=both)
    assert torch.all(cache["blocks.1.mlp.hook_gate"][..., 2] == 0)
    torch.testing.assert_close(cache["blocks.0.mlp.hook_gate"][..., 1], 2 * plain[..., 1])


def test_edits_apply_at_every_generation_step(tiny, batch):
    chosen = neuron_set(tiny, neurons={"happy": {l: list(range(tiny.cfg.d_mlp)) for l in range(tiny.cfg.n_layers)}})
    seen = []
    record = lambda t, hook: seen.append(bool(torch.all(t == 0)))
    hooks = Deactivate(chosen, tiny).fwd_hooks() + [("blocks.0.mlp.hook_gate", record)]
    tiny.generate(batch, max_new_tokens=3, fwd_hooks=hooks)
    assert len(seen) == 3 and all(seen), "the prefill and both decoding steps see the edit"


def test_encoder_neurons_are_edited_too(tiny, batch):
    chosen = neuron_set(tiny, "audio.mlp.hook_post", {"happy": {0: [0, 3]}})
    _, cache = tiny.run_with_cache(batch, names_filter="audio.blocks.0.mlp.hook_post",
                                   fwd_hooks=Deactivate(chosen, tiny).fwd_hooks())
    assert torch.all(cache["audio.blocks.0.mlp.hook_post"][..., [0, 3]] == 0)


def test_a_set_from_another_model_is_refused(tiny, tmp_path):
    omni = ll.HookedLALM.from_pretrained(save_tiny_qwen2_5_omni_thinker(tmp_path / "omni"))
    with pytest.raises(ValueError, match="select neurons on this model"):
        Deactivate(neuron_set(omni), tiny)
    with pytest.raises(TypeError, match="strength must be a number"):
        Gain(neuron_set(tiny), tiny, "3")
