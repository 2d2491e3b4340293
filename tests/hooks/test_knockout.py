"""Knockout: cut chosen query → key attention in chosen layers and heads, renormalised, checked by hand."""

import pytest
import torch

from lalm_lens.hooks.knockout import Knockout

# renormalising one float32 softmax row (a few hundred keys): errors of a few ulp, far inside 1e-6
TOL = dict(rtol=0, atol=1e-6)
NAME = "blocks.1.attn.hook_pattern"


def patterns_with(model, batch, cut):
    """The full pattern at layer 1 as the model uses it after ``cut`` (a recorder placed after the knockout)."""
    seen = []
    model.run_with_hooks(batch, fwd_hooks=[*cut.fwd_hooks(), (NAME, lambda p, hook: seen.append(p.clone()))])
    return seen[0]


def test_knockout_equals_the_hand_computation(model, batch):
    _, cache = model.run_with_cache(batch, names_filter=NAME)
    full = cache[NAME]
    cut = Knockout.audio(batch, layers=[1], start_s=0.5, stop_s=1.5, queries=[-1], heads=[0])
    edited = patterns_with(model, batch, cut)

    expected = full.clone()
    for b in range(len(batch)):
        keys = batch.audio_positions(b, 0, 0.5, 1.5)
        row = expected[b, 0, -1]
        row[keys] = 0
        expected[b, 0, -1] = row / row.sum()
    torch.testing.assert_close(edited, expected, **TOL)
    assert torch.equal(edited[:, 1:], full[:, 1:]) and torch.equal(edited[:, :, :-1], full[:, :, :-1]), "other heads and queries untouched"
    torch.testing.assert_close(edited.sum(-1)[batch.inputs["attention_mask"].bool()[:, None, :].expand_as(edited[..., 0])],
                               torch.ones(()).expand(int(batch.inputs["attention_mask"].sum()) * edited.shape[1]), **TOL)


def test_without_renormalising_the_mass_is_simply_removed(model, batch):
    _, cache = model.run_with_cache(batch, names_filter=NAME)
    cut = Knockout.audio(batch, layers=[1], queries=[-1], renormalise=False)
    edited = patterns_with(model, batch, cut)
    for b in range(len(batch)):
        audio = batch.audio_positions(b)
        assert torch.all(edited[b, :, -1, audio] == 0)
        torch.testing.assert_close(edited[b, :, -1].sum(-1), 1 - cache[NAME][b, :, -1, audio].sum(-1), **TOL)


def test_knockout_changes_the_output_only_where_it_should(model, batch):
    plain = model(batch)
    cut = Knockout.audio(batch, layers=list(range(model.cfg.n_layers)), queries=[-1])
    logits = model.run_with_hooks(batch, fwd_hooks=cut.fwd_hooks())
    real = batch.inputs["attention_mask"].bool()
    real[:, -1] = False
    # an editing hook makes the layer run the materialised (eager) path: other real positions differ by kernel
    # rounding only (padding rows see no key at all, and the two kernels fill them differently)
    torch.testing.assert_close(logits[real], plain[real], rtol=1e-4, atol=1e-4)
    assert (logits[:, -1] - plain[:, -1]).abs().max() > 1e-3


def test_generated_queries_are_cut_at_decoding_steps_only(model, batch):
    seen = []
    cut = Knockout.audio(batch, layers=[1], queries="generated")
    model.generate(batch, max_new_tokens=3, min_new_tokens=3, fwd_hooks=[*cut.fwd_hooks(), (NAME, lambda p, hook: seen.append((hook.step.phase, p.clone())))])
    assert [phase for phase, _ in seen] == ["prefill", "decode", "decode"]
    for b in range(len(batch)):
        audio = batch.audio_positions(b)
        assert seen[0][1][b, :, -1, audio].sum() > 0
        assert all(torch.all(p[b, :, :, audio] == 0) for _, p in seen[1:])


def test_bad_arguments_are_refused(batch):
    with pytest.raises(ValueError, match="queries"):
        Knockout([0], [1, 2], queries="audio")
    with pytest.raises(ValueError, match="at least one layer"):
        Knockout([], [1])
    with pytest.raises(ValueError, match="start_s"):
        Knockout.audio(batch, [0], start_s=[0.0])
