"""SteeringHook: adds a direction at chosen layers and positions, in forward and generate, composing with other hooks."""

import pytest
import torch

from lalm_lens.hooks.knockout import Knockout
from lalm_lens.hooks.steering import SteeringHook

# one float32 add (and for "norm" one rescale) per element of a small residual: 1e-5 is generous
TOL = dict(rtol=1e-5, atol=1e-5)


def direction(model, seed=0):
    return torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed))


class Recorder:
    """Keeps every tensor a hook point sees, with the generation phase it was seen in."""

    def __init__(self):
        self.seen = []

    def __call__(self, tensor, hook):
        self.seen.append((hook.step.phase, tensor.clone()))


def around(model, batch, hook, name, run="forward", **kwargs):
    """What ``name`` holds before and after ``hook`` (recorders placed on both sides of it)."""
    before, after = Recorder(), Recorder()
    hooks = [(name, before), *hook.fwd_hooks(), (name, after)]
    if run == "forward":
        model.run_with_hooks(batch, fwd_hooks=hooks)
    else:
        model.generate(batch, max_new_tokens=3, min_new_tokens=3, fwd_hooks=hooks, **kwargs)  # no early stop: 3 steps
    return before.seen, after.seen


def test_additive_steering_adds_the_scaled_vector_everywhere(model, batch):
    v = direction(model)
    before, after = around(model, batch, SteeringHook({1: v}, scale=2.5), "blocks.1.hook_resid_post")
    torch.testing.assert_close(after[0][1], before[0][1] + 2.5 * v, **TOL)


def test_norm_preserving_steering_keeps_each_position_norm(model, batch):
    v = direction(model)
    before, after = around(model, batch, SteeringHook({0: v}, scale=4.0, mode="norm"), "blocks.0.hook_resid_post")
    torch.testing.assert_close(after[0][1].norm(dim=-1), before[0][1].norm(dim=-1), **TOL)
    cos_before = torch.cosine_similarity(before[0][1], v.expand_as(before[0][1]), dim=-1)
    cos_after = torch.cosine_similarity(after[0][1], v.expand_as(after[0][1]), dim=-1)
    assert torch.all(cos_after > cos_before), "the direction is turned toward the vector"


def test_text_positions_leave_audio_and_padding_alone(model, batch):
    v = direction(model)
    before, after = around(model, batch, SteeringHook({0: v}, positions="text", batch=batch), "blocks.0.hook_resid_post")
    changed = (after[0][1] - before[0][1]).abs().amax(-1) > 0
    for b in range(len(batch)):
        audio = batch.audio_positions(b)
        text = [p for p in range(batch.seq_len) if p not in set(audio) and batch.inputs["attention_mask"][b, p]]
        assert not changed[b, audio].any() and changed[b, text].all()
        assert changed[b].sum() == len(text), "padding positions are left alone"


def test_explicit_positions_count_from_the_end_of_the_prompt(model, batch):
    before, after = around(model, batch, SteeringHook({0: direction(model)}, positions=[-1]), "blocks.0.hook_resid_post")
    changed = (after[0][1] - before[0][1]).abs().amax(-1) > 0
    assert changed[:, -1].all() and not changed[:, :-1].any()


def test_prefill_only_steering_leaves_generated_positions_untouched(model, batch):
    v = direction(model)
    before, after = around(model, batch, SteeringHook({1: v}, positions="prefill"), "blocks.1.hook_resid_post", run="generate")
    assert [phase for phase, _ in after] == ["prefill", "decode", "decode"]
    torch.testing.assert_close(after[0][1], before[0][1] + v, **TOL)
    for (_, b), (_, a) in zip(before[1:], after[1:]):
        assert torch.equal(a, b), "decoding steps must pass through unedited"


def test_generated_only_steering_touches_decoding_steps_only(model, batch):
    v = direction(model)
    before, after = around(model, batch, SteeringHook({1: v}, positions="generated"), "blocks.1.hook_resid_post", run="generate")
    assert torch.equal(after[0][1], before[0][1])
    for (_, b), (_, a) in zip(before[1:], after[1:]):
        torch.testing.assert_close(a, b + v, **TOL)


def test_steering_changes_generation_and_composes_with_other_hooks(model, batch):
    v = direction(model) * 50
    one, two = SteeringHook({0: v}, scale=1.0), SteeringHook({0: v}, scale=2.0)
    both = model.run_with_hooks(batch, fwd_hooks=one.fwd_hooks() + two.fwd_hooks())
    combined = model.run_with_hooks(batch, fwd_hooks=SteeringHook({0: v}, scale=3.0).fwd_hooks())
    torch.testing.assert_close(both, combined, rtol=1e-4, atol=1e-4)  # (x + v) + 2v vs x + 3v: rounding of large adds
    cut = Knockout.audio(batch, layers=[1], queries=[-1])
    _, cache = model.run_with_cache(batch, names_filter="blocks.0.hook_resid_post", fwd_hooks=one.fwd_hooks() + cut.fwd_hooks())
    _, plain = model.run_with_cache(batch, names_filter="blocks.0.hook_resid_post")
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], plain["blocks.0.hook_resid_post"] + v, **TOL)
    steered = model.generate(batch, max_new_tokens=4, fwd_hooks=one.fwd_hooks(), return_type="tokens")
    assert not torch.equal(steered, model.generate(batch, max_new_tokens=4, return_type="tokens"))


def test_bad_arguments_are_refused(model, batch):
    v = direction(model)
    with pytest.raises(ValueError, match="no steering direction"):
        SteeringHook({0: v}, layers=[1])
    with pytest.raises(ValueError, match="positions"):
        SteeringHook({0: v}, positions="audio")
    with pytest.raises(ValueError, match="needs the batch"):
        SteeringHook({0: v}, positions="text")
    with pytest.raises(ValueError, match="mode"):
        SteeringHook({0: v}, mode="multiply")
