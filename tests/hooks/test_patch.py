"""PatchFromCache: writing a source run's activations into another run, per position, row and head."""

import pytest
import torch

from lalm_lens.data import make_scene
from lalm_lens.hooks.patch import Patch, PatchFromCache


@pytest.fixture(scope="module")
def runs(toy):
    """A clip and the same clip with its second event silenced: same duration, so the same token layout."""
    scene = make_scene(seed=3)
    event = scene.events[1]
    silenced = scene.wave.copy()
    silenced[int(event.start_s * 16000) : int(event.stop_s * 16000)] = 0
    prompt = f"Is there a {event.label} sound?"
    return toy.prepare(scene.wave, prompt, sampling_rate=16000), toy.prepare(silenced, prompt, sampling_rate=16000)


def test_patching_every_position_of_the_last_layer_gives_the_source_logits_bit_for_bit(toy, runs):
    clean, corrupted = runs
    name = f"blocks.{toy.cfg.n_layers - 1}.hook_resid_pre"
    clean_logits, cache = toy.run_with_cache(clean, names_filter=name)
    patch = PatchFromCache(cache, [Patch(name, tuple(range(corrupted.seq_len)))])
    patched = toy.run_with_hooks(corrupted, fwd_hooks=patch.fwd_hooks())
    # the last block runs the same kernels on the same inputs as in the clean run
    assert torch.equal(patched, clean_logits)
    assert not torch.equal(toy(corrupted), clean_logits)


def test_each_patch_writes_only_its_row_positions_and_head(toy, runs):
    clean, corrupted = runs
    name = "blocks.2.attn.hook_z"
    _, source = toy.run_with_cache(clean, names_filter=name)
    _, destination = toy.run_with_cache(corrupted, names_filter=name)
    patch = PatchFromCache(source, [Patch(name, (5, 7), head=1)])
    written = patch(destination[name].clone(), toy.hook_dict[name])
    expected = destination[name].clone()
    expected[0, [5, 7], 1] = source[name][0, [5, 7], 1]
    assert torch.equal(written, expected)


def test_a_patch_may_target_another_row_of_a_batched_run(toy, runs):
    clean, _ = runs
    name = "blocks.0.hook_resid_pre"
    _, source = toy.run_with_cache(clean, names_filter=name)
    running = torch.zeros(2, *source[name].shape[1:])
    written = PatchFromCache(source, [Patch(name, (3,), row=0, dest_row=1)])(running, toy.hook_dict[name])
    assert torch.equal(written[1, 3], source[name][0, 3])
    assert written[0].abs().sum() == 0 and written[1, 4].abs().sum() == 0


def test_layouts_that_differ_are_refused(toy, runs):
    clean, _ = runs
    short = toy.prepare(make_scene(seed=3, duration_s=4.0).wave, "Is there a dog sound?", sampling_rate=16000)
    name = "blocks.1.hook_resid_pre"
    _, cache = toy.run_with_cache(clean, names_filter=name)
    with pytest.raises(ValueError, match="same token layout"):
        toy.run_with_hooks(short, fwd_hooks=PatchFromCache(cache, [Patch(name, (0,))]).fwd_hooks())


def test_a_name_missing_from_the_source_is_refused(toy, runs):
    _, cache = toy.run_with_cache(runs[0], names_filter="blocks.0.hook_resid_pre")
    with pytest.raises(KeyError, match="cache it in the source run"):
        PatchFromCache(cache, [Patch("blocks.1.hook_resid_pre", (0,))])
