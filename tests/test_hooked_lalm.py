"""HookedLALM as a user meets it: load, prepare, run, cache, hook, generate."""

import re
import shutil
import socket
from dataclasses import replace

import pytest
import torch

import lalm_lens as ll
from conftest import noise
from lalm_lens.hook_points import LazyHookPoint


def hf_model(model, **kwargs):
    return type(model.hf_model).from_pretrained(model.cfg.name, **kwargs).eval()


def test_logits_equal_hf_without_hooks(model, batch):
    assert torch.equal(model(batch), hf_model(model)(**batch.inputs).logits)


def test_logits_equal_hf_with_identity_hooks_on_every_tensor(model, batch):
    reference = hf_model(model)(**batch.inputs).logits
    every_tensor = lambda name: not name.endswith("hook_pattern")
    assert torch.equal(model.run_with_hooks(batch, fwd_hooks=[(every_tensor, lambda t, hook: t)]), reference)
    logits, _ = model.run_with_cache(batch, names_filter=every_tensor)
    assert torch.equal(logits, reference)


def test_caching_everything_patterns_included_leaves_logits_bit_identical(model, batch):
    logits, cache = model.run_with_cache(batch)
    assert torch.equal(logits, model(batch))
    assert len(cache) == len(model.hook_dict)


def test_pattern_hooks_match_hf_eager(model, batch):
    eager = hf_model(model, attn_implementation="eager")
    expected = eager(**batch.inputs, output_attentions=True)
    logits, cache = model.run_with_cache(batch, names_filter=lambda n: n.startswith("blocks") and "pattern" in n)
    real = batch.inputs["attention_mask"].bool()
    torch.testing.assert_close(logits[real], expected.logits[real], rtol=0, atol=1e-5)
    # the model runs sdpa, the reference eager: their fp32 residuals differ by a few ulps, which reach the
    # probabilities as 1e-6 on scores scaled by 1/sqrt(d_head); Gemma-3n does not scale its (RMS-normed) q.k,
    # so its scores, and the same relative differences, are sqrt(d_head) times larger
    scaling = getattr(model.adapter.language_model.layers[0].self_attn, "scaling", None) or model.cfg.d_head ** -0.5
    atol = 1e-6 * max(1.0, scaling * model.cfg.d_head ** 0.5)
    for layer, attentions in enumerate(expected.attentions):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        rows = real[:, None, :, None].expand_as(pattern)
        torch.testing.assert_close(pattern[rows], attentions[rows], rtol=0, atol=atol)


def test_pattern_rows_sum_to_one_over_unmasked_keys(model, batch):
    _, cache = model.run_with_cache(batch, names_filter=lambda n: n.endswith("hook_pattern"))
    real = batch.inputs["attention_mask"].bool()
    for layer in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        real_rows = real[:, None, :].expand(pattern.shape[:-1])
        on_real_keys = (pattern * real[:, None, None, :]).sum(-1)
        torch.testing.assert_close(on_real_keys[real_rows], torch.ones(int(real_rows.sum())))
        assert torch.all(pattern.triu(1)[real_rows] == 0), "causal: no attention to later positions"


def expected_shapes(model, batch) -> dict:
    cfg, (b, pos) = model.cfg, batch.input_ids.shape
    rows, mel = batch.inputs["input_features"].shape[0], model.processor.feature_extractor.feature_size
    frames, enc, pattern, tokens, chunks = model.adapter.audio_hook_frames(batch.inputs)
    shapes = {
        "audio.hook_features": (rows, mel, frames),
        "audio.hook_out": (rows, tokens, cfg.audio_d_model),
        "hook_audio_embeds": (rows, model.adapter.embed_tokens(batch.inputs), cfg.d_model),
        "hook_embed": (b, pos, cfg.d_model),
        "ln_final.hook_normalized": (b, pos, cfg.d_model),
        "ln_final.hook_scale": (b, pos, 1),
    }
    for i in range(cfg.audio_n_layers):
        for name in ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out"):
            shapes[f"audio.blocks.{i}.{name}"] = (rows, enc, cfg.audio_d_model)
        per_chunk = (chunks,) if chunks else ()
        shapes[f"audio.blocks.{i}.attn.hook_pattern"] = (rows, *per_chunk, cfg.audio_n_heads, pattern, pattern)
        shapes[f"audio.blocks.{i}.mlp.hook_post"] = (rows, enc, cfg.audio_d_mlp)
    for i in range(cfg.n_layers):
        for name in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out"):
            shapes[f"blocks.{i}.{name}"] = (b, pos, cfg.d_model)
        shapes[f"blocks.{i}.attn.hook_pattern"] = (b, cfg.n_heads, pos, pos)
        for name, heads in (("hook_q", cfg.n_heads), ("hook_k", cfg.n_kv_heads), ("hook_v", cfg.n_kv_heads), ("hook_z", cfg.n_heads)):
            shapes[f"blocks.{i}.attn.{name}"] = (b, pos, heads, cfg.d_head)
        for name in ("hook_pre", "hook_gate", "hook_post"):
            shapes[f"blocks.{i}.mlp.{name}"] = (b, pos, cfg.d_mlp)
    return shapes


def test_every_hook_exists_with_documented_shape(model, batch):
    shapes = expected_shapes(model, batch)
    family_names = getattr(model.adapter, "family_hook_shapes", None)  # names a family adds to the vocabulary (README)
    if family_names is not None:
        shapes.update(family_names(batch.inputs))
        shapes = {name: shape for name, shape in shapes.items() if shape is not None}  # None: absent in this family
    assert set(model.hook_dict) == set(shapes)
    _, cache = model.run_with_cache(batch)
    for name, shape in shapes.items():
        assert tuple(cache[name].shape) == shape, name


def test_editing_any_hook_changes_the_logits(model, batch):
    clean = model(batch)

    def edit(tensor, hook):
        if hook.name.endswith("hook_pattern"):
            return torch.ones_like(tensor) / tensor.shape[-1]
        return tensor * 0.5 + 0.1

    weights = [n for n in model.hook_dict if n.endswith("mlp.hook_router_weights")]  # mixture-of-experts layers
    routing = model.run_with_cache(batch, names_filter=weights)[1] if weights else {}
    routed = {n.removesuffix("hook_router_weights"): w.ne(0).flatten(0, 1).any(0) for n, w in routing.items()}
    for name in model.hook_dict:
        if name == "ln_final.hook_scale":
            continue  # derived, read-only: see test_hook_scale_is_read_only
        edited = model.run_with_hooks(batch, fwd_hooks=[(name, edit)])
        expert = re.fullmatch(r"(blocks\.\d+\.mlp\.)experts\.(\d+)\.\w+", name)
        if expert and not routed[expert[1]][int(expert[2])]:
            assert torch.equal(edited, clean), f"{name}: an expert no position is routed to does not run"
            continue
        assert not torch.allclose(edited, clean), f"editing {name} left the logits unchanged"


def test_hook_scale_is_read_only(model, batch):
    with pytest.raises(ValueError, match="read-only"):
        model.run_with_hooks(batch, fwd_hooks=[("ln_final.hook_scale", lambda t, hook: t * 2)])


def test_a_reader_and_an_editor_on_one_pattern_each_get_what_they_asked(model, batch):
    name = "blocks.0.attn.hook_pattern"
    full = model.run_with_cache(batch, names_filter=name)[1][name]
    sharpen = lambda pattern, hook: (pattern ** 2) / (pattern ** 2).sum(-1, keepdim=True)
    with model.hooks(fwd_hooks=[(name, sharpen)]):
        logits, last = model.run_with_cache(batch, names_filter=name, pos_slice=-1)
    torch.testing.assert_close(last[name], sharpen(full, None)[:, :, -1:], rtol=0, atol=1e-6)
    assert not torch.allclose(logits, model(batch))


def test_gradients_are_cached_with_a_loss(model, batch):
    loss = lambda logits: logits[:, -1].logsumexp(-1).sum()
    names = ["blocks.0.hook_resid_post", "blocks.0.attn.hook_pattern", "audio.blocks.0.attn.hook_pattern"]
    _, cache = model.run_with_cache(batch, names_filter=names, incl_bwd=True, loss_fn=loss)
    for name in names:
        assert cache[name + "_grad"].shape == cache[name].shape, name
        assert cache[name + "_grad"].abs().sum() > 0, name
    with pytest.raises(ValueError, match="loss_fn"):
        model.run_with_cache(batch, incl_bwd=True)


def test_misused_arguments_raise(model, batch):
    with pytest.raises(ValueError, match="return_type"):
        model(batch, return_type="logit")
    with pytest.raises(ValueError, match="return_type"):
        model.generate(batch, max_new_tokens=1, return_type="token")
    names = (n for n in ["blocks.0.hook_resid_post"])
    assert list(model.run_with_cache(batch, names_filter=names)[1]) == ["blocks.0.hook_resid_post"]
    with pytest.raises(ValueError, match="already wrapped"):
        ll.HookedLALM.from_hf(model.hf_model, model.processor)


def test_zeroing_a_neuron_equals_the_same_edit_on_hf_down_proj(model, batch):
    layer, neuron = model.cfg.n_layers - 1, 7

    def zero(tensor, hook=None):
        tensor = tensor.clone()
        tensor[..., neuron] = 0
        return tensor

    mlp = model.adapter.language_model.layers[layer].mlp
    if not hasattr(mlp, "down_proj"):
        pytest.skip("experts, no dense MLP: the family's own test zeroes an expert's neuron against HF's down_proj[e]")
    ours = model.run_with_hooks(batch, fwd_hooks=[(f"blocks.{layer}.mlp.hook_post", zero)])
    down_proj = mlp.down_proj
    handle = down_proj.register_forward_pre_hook(lambda module, args: (zero(args[0]),))
    try:
        theirs = model(batch)
    finally:
        handle.remove()
    assert torch.equal(ours, theirs)


def test_resid_mid_edit_reaches_the_mlp_and_the_residual(model, batch):
    if model.cfg.arch == "gemma3n":
        pytest.skip("Gemma-3n: hook_resid_post is the active AltUp stream after the correction step, not "
                    "resid_mid + mlp_out (tests/adapters/test_gemma3n.py checks what that sum feeds)")
    name = "blocks.0.hook_resid_mid"
    _, clean = model.run_with_cache(batch, names_filter=[name, "blocks.0.hook_resid_post", "blocks.0.hook_mlp_out"])
    shift = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    with model.hooks(fwd_hooks=[(name, lambda t, hook: t + shift)]):
        _, edited = model.run_with_cache(batch, names_filter=["blocks.0.hook_resid_post", "blocks.0.hook_mlp_out"])
    torch.testing.assert_close(edited["blocks.0.hook_resid_post"], clean[name] + shift + edited["blocks.0.hook_mlp_out"])
    assert not torch.allclose(edited["blocks.0.hook_mlp_out"], clean["blocks.0.hook_mlp_out"])


def test_unhooked_forward_leaves_no_torch_hooks_on_hf_modules(model, batch):
    model.run_with_cache(batch)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.hf_model.modules())


def test_hooks_are_removed_when_a_run_fails(model, batch):
    def broken(tensor, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(batch, fwd_hooks=[("blocks.0.hook_resid_post", broken), ("blocks.0.attn.hook_pattern", broken)])
    with pytest.raises(RuntimeError, match="boom"):
        model.generate(batch, max_new_tokens=2, fwd_hooks=[("hook_embed", broken)])
    assert not any(hp.active for hp in model.hook_dict.values())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.hf_model.modules())


def hooked_by_full_scan(model) -> set[str]:
    return {name for name, point in model.hook_dict.items() if point.fwd_hooks or point.bwd_hooks}


def test_removing_hooks_visits_only_the_points_that_hold_them(model, batch, monkeypatch):
    visited = []
    remove_hooks = LazyHookPoint.remove_hooks

    def counting(point, *args, **kwargs):
        visited.append(point.name)
        return remove_hooks(point, *args, **kwargs)

    monkeypatch.setattr(LazyHookPoint, "remove_hooks", counting)
    assert len(model.hook_dict) > 20  # a full scan would visit every one of them
    model.run_with_hooks(batch, fwd_hooks=[("blocks.0.hook_resid_post", lambda t, hook: t)])
    assert visited == ["blocks.0.hook_resid_post"]
    visited.clear()
    model.run_with_cache(batch, names_filter=["blocks.0.hook_mlp_out", "blocks.1.hook_resid_post"])
    assert sorted(visited) == ["blocks.0.hook_mlp_out", "blocks.1.hook_resid_post"]
    visited.clear()
    model.reset_hooks()
    assert visited == [] and hooked_by_full_scan(model) == set()


def test_permanent_hooks_levels_directions_and_contexts_behave_as_in_transformer_lens(model, batch):
    resid, mlp = "blocks.0.hook_resid_post", "blocks.0.hook_mlp_out"
    counting = lambda t, hook: hook.ctx.__setitem__("calls", hook.ctx.get("calls", 0) + 1)
    try:
        model.add_perma_hook(resid, counting)
        model.add_hook(mlp, counting)  # no context level: the end of a hooks() context leaves it
        model.add_hook(mlp, counting, dir="bwd")
        with model.hooks(fwd_hooks=[(resid, counting)]):
            with model.hooks(fwd_hooks=[(mlp, counting)]):
                assert len(model.hook_dict[mlp].fwd_hooks) == 2
            assert len(model.hook_dict[mlp].fwd_hooks) == 1 and len(model.hook_dict[resid].fwd_hooks) == 2
            model(batch)
        assert model.hook_dict[resid].ctx == {"calls": 2} and model.hook_dict[mlp].ctx == {"calls": 1}
        assert hooked_by_full_scan(model) == {resid, mlp}
        model.reset_hooks(direction="fwd", clear_contexts=False)
        assert len(model.hook_dict[resid].fwd_hooks) == 1, "a permanent hook stays"
        assert not model.hook_dict[mlp].fwd_hooks and len(model.hook_dict[mlp].bwd_hooks) == 1
        assert model.hook_dict[resid].ctx == {"calls": 2}
        model.hook_dict["blocks.1.hook_resid_post"].ctx["note"] = "set by hand on a point without hooks"
        model.reset_hooks()
        assert all(not point.ctx for point in model.hook_dict.values()), "every context is cleared"
        assert hooked_by_full_scan(model) == {resid}
    finally:
        model.reset_hooks(including_permanent=True)
    assert hooked_by_full_scan(model) == set()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.hf_model.modules())


def test_unknown_hook_name_suggests_the_nearest(model, batch):
    with pytest.raises(KeyError, match="Did you mean: blocks.0.hook_resid_post"):
        model.run_with_hooks(batch, fwd_hooks=[("blocks.0.hook_resid_psot", lambda t, hook: t)])
    with pytest.raises(KeyError, match="hook_audio_embeds"):
        model.run_with_cache(batch, names_filter=["hook_audio_embed"])


def test_run_with_cache_takes_editing_hooks_and_caches_their_result(model, batch):
    double = lambda t, hook: 2 * t
    logits, cache = model.run_with_cache(batch, names_filter="blocks.0.hook_mlp_out", fwd_hooks=[("blocks.0.hook_mlp_out", double)])
    _, plain = model.run_with_cache(batch, names_filter="blocks.0.hook_mlp_out")
    assert torch.equal(cache["blocks.0.hook_mlp_out"], 2 * plain["blocks.0.hook_mlp_out"])
    assert torch.equal(logits, model.run_with_hooks(batch, fwd_hooks=[("blocks.0.hook_mlp_out", double)]))
    with pytest.raises(TypeError, match="run_with_hooks"):
        model(batch, fwd_hooks=[("blocks.0.hook_mlp_out", double)])


def test_generate_runs_hooks_on_prefill_and_every_step(model, batch):
    calls = []
    plain = model.generate(batch, max_new_tokens=4, return_type="tokens")
    hooked = model.generate(
        batch, max_new_tokens=4, return_type="tokens", fwd_hooks=[("blocks.0.hook_resid_post", lambda t, hook: calls.append(t.shape[1]))]
    )
    assert torch.equal(plain, hooked)
    assert calls[0] == batch.seq_len and calls[1:] == [1] * (len(calls) - 1) and len(calls) >= 2
    texts = model.generate(batch, max_new_tokens=4)
    assert len(texts) == len(batch) and all(isinstance(t, str) for t in texts)


def test_pos_slice_caches_last_position_and_last_query_row(model, batch):
    names = ["blocks.1.hook_resid_post", "audio.blocks.0.hook_resid_post"]
    _, full = model.run_with_cache(batch, names_filter=names)
    _, last = model.run_with_cache(batch, names_filter=names, pos_slice=-1)
    assert torch.equal(last["blocks.1.hook_resid_post"], full["blocks.1.hook_resid_post"][:, -1:])
    assert torch.equal(last["audio.blocks.0.hook_resid_post"], full["audio.blocks.0.hook_resid_post"])

    pattern = "blocks.1.attn.hook_pattern"
    full_pattern = model.run_with_cache(batch, names_filter=pattern)[1][pattern]
    logits, last = model.run_with_cache(batch, names_filter=pattern, pos_slice=-1)
    torch.testing.assert_close(last[pattern], full_pattern[:, :, -1:], rtol=0, atol=1e-6)
    assert torch.equal(logits, model(batch)), "a row-sliced pattern is read beside the fast kernel"


def test_explicit_device_map_and_bfloat16_load_and_run(model, batch):
    device_map = {f"model.{name}": "cpu" for name, _ in model.hf_model.model.named_children()} | {"lm_head": "cpu"}
    mapped = ll.HookedLALM.from_pretrained(model.cfg.name, device_map=device_map)
    assert torch.equal(mapped(batch), model(batch))
    half = ll.HookedLALM.from_pretrained(model.cfg.name, dtype=torch.bfloat16)
    patterns = ["blocks.0.attn.hook_pattern", "audio.blocks.0.attn.hook_pattern"]
    small = half.prepare(noise(1.0), "What sounds are in the audio?", 16000)
    logits, cache = half.run_with_cache(small, names_filter=patterns)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert all(cache[name].dtype == torch.bfloat16 for name in patterns)
    edited = half.run_with_hooks(small, fwd_hooks=[(patterns[1], lambda pattern, hook: pattern.clone())])
    assert edited.dtype == torch.bfloat16 and torch.isfinite(edited).all()


def test_from_hf_wraps_a_loaded_model(model, batch):
    hf = hf_model(model)
    wrapped = ll.HookedLALM.from_hf(hf, model.processor)
    assert torch.equal(wrapped(batch), model(batch))


def test_cfg_holds_the_documented_fields(model):
    for field in ("arch", "n_layers", "d_model", "d_mlp", "n_heads", "n_kv_heads", "audio_n_layers",
                  "audio_d_model", "audio_d_mlp", "audio_n_heads", "audio_tokens_per_second"):
        assert getattr(model.cfg, field)
    documented = {"qwen2_audio": 25, "audioflamingo3": 25, "qwen2_5_omni_thinker": 25, "musicflamingo": 25,
                  "voxtral": 12.5, "glmasr": 12.5, "qwen3_asr": 13, "granite_speech": 10, "gemma3n": 6.25,
                  "qwen3_omni_moe_thinker": 13}
    assert model.cfg.audio_tokens_per_second == documented[model.cfg.arch]


# -- misuse that used to give silent wrong results ------------------------------------------------

def _text_position(batch, example: int) -> int:
    """A real (unpadded) text position of ``example``: the last prompt token."""
    return batch.seq_len - 1


def _moved_placeholder(model, batch):
    """input_ids with one audio placeholder of example 0 moved into example 1's text (same total)."""
    ids = batch.input_ids.clone()
    placeholder = model.adapter.audio_token_id
    first = int((ids[0] == placeholder).nonzero()[0])
    ids[0, first] = ids[0, first - 1]
    ids[1, _text_position(batch, 1)] = placeholder
    return ids


def test_placeholders_moved_between_examples_are_refused(model, batch):
    ids = _moved_placeholder(model, batch)
    edited = replace(batch, inputs={**batch.inputs, "input_ids": ids})
    for inputs in (edited, dict(edited.inputs)):
        with pytest.raises(ValueError, match="placeholder"):
            model(inputs)
        with pytest.raises(ValueError, match="placeholder"):
            model.generate(inputs, max_new_tokens=1)


def test_a_deleted_or_an_extra_placeholder_is_refused(model, batch):
    placeholder = model.adapter.audio_token_id
    deleted, extra = batch.input_ids.clone(), batch.input_ids.clone()
    first = int((deleted[0] == placeholder).nonzero()[0])
    deleted[0, first] = deleted[0, first - 1]
    extra[1, _text_position(batch, 1)] = placeholder
    for ids in (deleted, extra):
        with pytest.raises(ValueError, match="placeholder"):
            model(replace(batch, inputs={**batch.inputs, "input_ids": ids}))
        with pytest.raises(ValueError, match="placeholder"):
            model({**batch.inputs, "input_ids": ids})


def test_remove_batch_dim_refuses_a_batch_of_two(model, batch):
    with pytest.raises(ValueError, match="one example"):
        model.run_with_cache(batch, names_filter="blocks.0.hook_resid_post", remove_batch_dim=True)
    single = model.prepare(noise(1.0), "Hi", sampling_rate=16000)
    _, cache = model.run_with_cache(single, names_filter="blocks.0.hook_resid_post", remove_batch_dim=True)
    assert cache["blocks.0.hook_resid_post"].shape == (single.seq_len, model.cfg.d_model)


def test_remove_batch_dim_refuses_two_clips_in_one_prompt(model):
    if model.adapter.clips_per_prompt_max == 1:
        pytest.skip("one clip per prompt")
    two_clips = model.prepare([[noise(1.0), noise(1.0, 1)]], "Hi", sampling_rate=16000)
    with pytest.raises(ValueError, match="encoded clips"):
        model.run_with_cache(two_clips, names_filter="audio.blocks.0.hook_resid_post", remove_batch_dim=True)


def test_pos_slice_past_the_sequence_raises_for_every_hook(model, batch):
    for name in ("blocks.0.attn.hook_pattern", "blocks.0.hook_resid_post"):
        with pytest.raises(IndexError):
            model.run_with_cache(batch, names_filter=name, pos_slice=batch.seq_len + 4)


def test_a_hook_that_returns_a_smaller_tensor_or_a_non_tensor_is_refused(model, batch):
    cases = [("blocks.0.hook_attn_out", lambda t, hook: t[0], ValueError),
             ("blocks.0.attn.hook_pattern", lambda t, hook: t[:, :1], ValueError),
             (min(n for n in model.hook_dict if re.fullmatch(r"blocks\.0\.mlp\.(experts\.0\.)?hook_post", n)), lambda t, hook: 0, TypeError),
             ("blocks.0.hook_resid_pre", lambda t, hook: t.numpy(), TypeError)]
    for name, hook, error in cases:
        with pytest.raises(error, match=name.replace(".", r"\.")):
            model.run_with_hooks(batch, fwd_hooks=[(name, hook)])
    assert torch.equal(model(batch), hf_model(model)(**batch.inputs).logits), "hooks were removed after each failure"


def test_a_sequence_longer_than_the_position_embeddings_is_refused(toy):
    five_long_clips = [[noise(9.9, seed) for seed in range(5)]]
    with pytest.raises(ValueError, match=f"cover {toy.cfg.n_ctx}"):
        toy.prepare(five_long_clips, "What sounds are in the audio?", sampling_rate=16000)


def test_from_pretrained_returns_an_eval_model(model):
    assert model.training is False and model.hf_model.training is False


def test_a_folder_without_config_and_pickled_weights_are_refused(tmp_path, checkpoint):
    with pytest.raises(ll.CheckpointNotFound, match="config.json"):
        ll.HookedLALM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="safetensors only"):
        ll.HookedLALM.from_pretrained(checkpoint("qwen2_audio"), use_safetensors=False)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("lalm-lens touched the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_a_hub_id_loads_from_the_local_cache_without_the_network(tmp_path, monkeypatch, checkpoint, no_network):
    import huggingface_hub

    snapshot = tmp_path / "models--someone--tiny-audio" / "snapshots" / ("0" * 40)
    shutil.copytree(checkpoint("qwen2_audio"), snapshot)
    (tmp_path / "models--someone--tiny-audio" / "refs").mkdir()
    (tmp_path / "models--someone--tiny-audio" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    model = ll.HookedLALM.from_pretrained("someone/tiny-audio")
    assert model.cfg.arch == "qwen2_audio"
    with pytest.raises(ll.CheckpointNotFound, match="allow_download=True"):
        ll.HookedLALM.from_pretrained("someone/not-downloaded")


# -- generation: hooks know the prefill from the decoding steps --------------------------------------

def test_hooks_during_generate_see_which_positions_they_cover(model, batch):
    seen = []
    record = lambda t, hook: seen.append((hook.step.phase, hook.step.index, hook.step.positions, t.shape[1]))
    model.generate(batch, max_new_tokens=3, fwd_hooks=[("blocks.0.hook_resid_post", record)])
    length = batch.seq_len
    assert [s[:3] for s in seen] == [("prefill", 0, range(0, length)), ("decode", 1, range(length, length + 1)),
                                    ("decode", 2, range(length + 1, length + 2))]
    assert all(len(positions) == n for *_, positions, n in seen)
    model(batch)
    assert model.blocks[0].hook_resid_post.step.phase == "forward"


def test_prefill_only_steering_leaves_decoding_steps_alone(model, batch):
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 50
    calls = []

    def steer_prefill(resid, hook):
        calls.append(hook.step.phase)
        if hook.step.phase == "decode":
            return None
        resid = resid.clone()
        resid[:, -1] += vector
        return resid

    steered = model.generate(batch, max_new_tokens=2, return_type="tokens",
                             fwd_hooks=[("blocks.0.hook_resid_post", steer_prefill)])
    assert calls == ["prefill", "decode"] and steered.shape == (len(batch), 2)


# -- encode once, reuse the audio embeddings under many prompts ---------------------------------------------------
PROMPTS = ["Hi?", "What sounds are in the audio, from the first second to the last?", "Is there a dog?"]


def test_reusing_the_audio_embeddings_gives_the_logits_of_the_full_model(model, batch):
    emb = model.encode_audio(batch)
    reused = batch.with_audio_embeds(emb)
    assert "input_features" not in reused.inputs and reused.audio_spans == batch.audio_spans
    assert torch.equal(model(reused), model(batch))  # same batch: the decoder runs the same kernels on the same inputs
    logits, cache = model.run_with_cache(reused)  # every decoder hook; audio.* left out, the encoder does not run
    assert torch.equal(logits, model(batch))
    assert "blocks.0.hook_resid_post" in cache and not any(ll.names.is_audio(n) for n in cache)
    assert torch.equal(cache["hook_embed"], model.run_with_cache(batch, names_filter="hook_embed")[1]["hook_embed"])


def test_one_clip_encoded_once_serves_a_padded_batch_of_prompts(model):
    clip = noise(2.0, 7)
    emb = model.encode_audio(model.prepare(clip, "Describe the audio.", sampling_rate=16000))
    batch = model.prepare([clip] * len(PROMPTS), PROMPTS, sampling_rate=16000)
    reused = batch.with_audio_embeds(emb)  # one example, repeated for every prompt
    assert len(reused) == 3 and reused.inputs["attention_mask"].eq(0).any()  # prompts of different lengths: padded
    # The encoder ran on one row here and on three in `batch`; in float32 that may move the last bits of a few
    # embeddings (packed encoders choose kernels by size), so the logits agree to float32 rounding of ~1e-7 relative.
    torch.testing.assert_close(model(reused), model(batch), rtol=1e-5, atol=1e-5)
    if not model.adapter.generates_from_embeds:  # Gemma-3n: HF's generate rebuilds per-layer inputs from token ids
        with pytest.raises(NotImplementedError, match="reused audio embeddings"):
            model.generate(reused, 4)
        return
    assert torch.equal(model.generate(reused, 4, return_type="tokens"), model.generate(batch, 4, return_type="tokens"))
    assert emb.nbytes < batch.inputs["input_features"].nbytes


def test_encoder_hooks_act_while_encoding_and_are_refused_on_the_reuse_path(model, batch):
    if model.cfg.arch == "gemma3n":
        pytest.skip("Gemma-3n: a clip's 188 audio positions end in padding embeddings that bypass hook_audio_embeds")
    zero = lambda tensor, hook: torch.zeros_like(tensor)
    with model.hooks(fwd_hooks=[("hook_audio_embeds", zero)]):
        silenced = model.encode_audio(batch)
    assert all(e.abs().sum() == 0 for e in silenced.embeds)
    reused = batch.with_audio_embeds(model.encode_audio(batch))
    with pytest.raises(ValueError, match="precomputed audio embeddings"):
        model.run_with_hooks(reused, fwd_hooks=[("audio.hook_out", lambda t, hook: t)])
    with pytest.raises(ValueError, match="precomputed audio embeddings"):
        model.generate(reused, 1, fwd_hooks=[("hook_audio_embeds", lambda t, hook: t)])
    with pytest.raises(ValueError, match="cannot be cached"):
        model.run_with_cache(reused, names_filter=["audio.hook_out", "blocks.0.hook_resid_post"])


def test_embeddings_of_another_clip_shape_count_or_model_are_refused(model, batch, family, checkpoint):
    emb = model.encode_audio(batch)
    same_lengths = model.prepare([noise(2.0, 11), noise(3.5, 12)], "What sounds are in the audio?", sampling_rate=16000)
    with pytest.raises(ValueError, match="another clip"):
        same_lengths.with_audio_embeds(emb)
    with pytest.raises(ValueError, match="audio shaped"):
        model.prepare([noise(3.5, 2), noise(2.0, 1)], "What sounds?", sampling_rate=16000).with_audio_embeds(emb)
    three = model.prepare([noise(2.0, 1)] * 3, "What sounds?", sampling_rate=16000)
    with pytest.raises(ValueError, match="2 example"):
        three.with_audio_embeds(emb)
    with pytest.raises(ValueError, match="already carries"):
        batch.with_audio_embeds(emb).with_audio_embeds(emb)
    other = ll.HookedLALM.from_pretrained(checkpoint(family))
    with pytest.raises(ValueError, match="another model"):
        other(batch.with_audio_embeds(emb))
    assert torch.equal(other(batch.with_audio_embeds(other.encode_audio(batch))), model(batch))


def test_a_family_whose_decoder_takes_no_embeddings_says_so(tmp_path):
    import math

    import numpy as np
    from lalm_lens.models.kimi_audio import save_tiny_kimi_audio

    kimi = ll.HookedLALM.from_pretrained(save_tiny_kimi_audio(tmp_path / "tiny"))
    clip = noise(0.8, 2)
    codes = np.random.default_rng(0).integers(0, 48, math.ceil(len(clip) / 1280)).tolist()
    batch = kimi.prepare([[clip]], [11, 12, 13], sampling_rate=16000, semantic_tokens=[[codes]])
    with pytest.raises(NotImplementedError, match="kimi_audio"):
        kimi.encode_audio(batch)
