"""Qwen2.5-Omni thinker: packed chunked encoder behind batch-shaped hooks, placeholder checks, spans, thinker-only loading."""

import contextlib
import logging
import re

import pytest
import torch
from transformers import Qwen2_5OmniForConditionalGeneration, Qwen2_5OmniThinkerForConditionalGeneration

import lalm_lens as ll
from conftest import noise
from lalm_lens.adapters.qwen2_5_omni import block_diagonal, chunk_placements
from lalm_lens.hook_points import LazyHookPoint
from lalm_lens.zoo.tiny import save_tiny_qwen2_5_omni

PROMPT = "What sounds are in the audio?"
CLIP_SECONDS = (2.0, 3.5)
MEL, FRAMES, TOKENS = (200, 350), (100, 175), (50, 87)


@pytest.fixture(scope="module")
def omni(checkpoint):
    return ll.HookedLALM.from_pretrained(checkpoint("qwen2_5_omni_thinker"))


@pytest.fixture(scope="module")
def batch(omni):
    """Clips of 2 s and 3.5 s (one and two 2 s chunks) in a left-padded batch."""
    return omni.prepare([noise(s, i + 1) for i, s in enumerate(CLIP_SECONDS)], PROMPT, sampling_rate=16000)


@contextlib.contextmanager
def torch_hook(module, pre: bool = False, **kwargs):
    """A plain PyTorch hook on an HF module, removed on exit."""
    register = module.register_forward_pre_hook if pre else module.register_forward_hook
    handle = register(kwargs.pop("fn"), **kwargs)
    try:
        yield
    finally:
        handle.remove()


def packed_rows(lengths, clip: int, rows: slice) -> slice:
    start = sum(lengths[:clip])
    return slice(start + rows.start, start + rows.stop)


def test_audio_hooks_unpack_clips_with_zero_padding(omni, batch):
    cfg = omni.cfg
    _, cache = omni.run_with_cache(batch, names_filter=lambda n: n.startswith("audio") or n == "hook_audio_embeds")
    assert cache["audio.hook_features"].shape == (2, 128, max(MEL))
    assert cache["audio.blocks.0.hook_resid_post"].shape == (2, max(FRAMES), cfg.audio_d_model)
    assert cache["audio.blocks.1.mlp.hook_post"].shape == (2, max(FRAMES), cfg.audio_d_mlp)
    assert cache["audio.hook_out"].shape == (2, max(TOKENS), cfg.audio_d_model)
    assert cache["hook_audio_embeds"].shape == (2, max(TOKENS), cfg.d_model)
    assert torch.all(cache["audio.hook_features"][0, :, MEL[0] :] == 0)
    assert torch.all(cache["audio.blocks.0.hook_resid_post"][0, FRAMES[0] :] == 0)
    assert torch.all(cache["hook_audio_embeds"][0, TOKENS[0] :] == 0)
    assert cache["audio.blocks.0.hook_resid_post"][0, : FRAMES[0]].abs().sum(-1).min() > 0
    features = batch.inputs["input_features"]
    assert torch.equal(cache["audio.hook_features"][1], features[1, :, : MEL[1]])
    embeds = omni.hf_model.model.language_model.embed_tokens
    _, decoder = omni.run_with_cache(batch, names_filter="hook_embed")
    for b, (span,) in enumerate(batch.audio_spans):
        torch.testing.assert_close(decoder["hook_embed"][b, span.start : span.stop], cache["hook_audio_embeds"][b, : len(span)])
        assert not torch.allclose(decoder["hook_embed"][b, span.start], embeds.weight[omni.adapter.audio_token_id])


def test_encoder_pattern_holds_each_2_s_chunk_softmax(omni, batch):
    layer = omni.adapter.audio_tower.layers[1]
    seen = {}

    def grab(module, args, kwargs):
        seen["x"], seen["cu"] = kwargs["hidden_states"], kwargs["cu_seqlens"]

    with torch_hook(layer.self_attn, pre=True, fn=grab, with_kwargs=True):
        _, cache = omni.run_with_cache(batch, names_filter="audio.blocks.1.attn.hook_pattern")
    pattern = cache["audio.blocks.1.attn.hook_pattern"]
    assert pattern.shape == (2, 2, omni.cfg.audio_n_heads, 100, 100), "[clip, chunk, head, q, k]"
    assert seen["cu"].tolist() == [0, 100, 200, 275], "chunks: clip 0 [0, 100), clip 1 [0, 100) and [100, 175)"
    attn, x = layer.self_attn, seen["x"]
    q = attn.q_proj(x).reshape(len(x), attn.num_heads, -1).transpose(0, 1)
    k = attn.k_proj(x).reshape(len(x), attn.num_heads, -1).transpose(0, 1)
    expected = torch.zeros_like(pattern)
    for clip, chunk, start, n in [(0, 0, 0, 100), (1, 0, 100, 100), (1, 1, 200, 75)]:
        scores = q[:, start : start + n] @ k[:, start : start + n].transpose(-1, -2) * attn.scaling
        expected[clip, chunk, :, :n, :n] = scores.softmax(-1)
    torch.testing.assert_close(pattern, expected, rtol=0, atol=1e-6)
    assert torch.all(pattern[0, 1] == 0), "clip 0 has one chunk: the second is padding"

    logits, sliced = omni.run_with_cache(batch, names_filter="audio.blocks.1.attn.hook_pattern", pos_slice=-1)
    assert torch.equal(sliced["audio.blocks.1.attn.hook_pattern"], pattern), "pos_slice is about decoder positions"
    assert torch.equal(logits, omni(batch)), "caching a pattern leaves the logits bit-identical"


def test_block_diagonal_lays_the_chunks_out_over_frames(omni, batch):
    _, cache = omni.run_with_cache(batch, names_filter="audio.blocks.0.attn.hook_pattern")
    pattern = cache["audio.blocks.0.attn.hook_pattern"]
    full = block_diagonal(pattern, frames=max(FRAMES))
    assert full.shape == (2, omni.cfg.audio_n_heads, 175, 175)
    assert torch.equal(full[1, :, 100:, 100:], pattern[1, 1, :, :75, :75])
    assert torch.all(full[1, :, :100, 100:] == 0) and torch.all(full[0, :, 100:] == 0)
    torch.testing.assert_close(full[1].sum(-1), torch.ones(omni.cfg.audio_n_heads, 175))


def test_chunk_placements_follow_clips_of_any_length():
    # clips of 250, 100 (exactly one chunk), 30 and 201 frames; the encoder cuts each into chunks of 100
    bounds = [0, 100, 200, 250, 350, 380, 480, 580, 581]
    assert chunk_placements(bounds, [250, 100, 30, 201]) == [
        (0, 100, 0, 0), (100, 100, 0, 1), (200, 50, 0, 2),
        (250, 100, 1, 0),
        (350, 30, 2, 0),
        (380, 100, 3, 0), (480, 100, 3, 1), (580, 1, 3, 2),
    ]


def test_a_pattern_reader_gets_rows_of_every_chunk(omni, batch):
    class LastRow(ll.PatternReader):
        query_rows = -1

        def read(self, pattern, hook):
            self.seen = pattern

    reader = LastRow()
    _, cache = omni.run_with_cache(batch, names_filter="audio.blocks.0.attn.hook_pattern")
    logits = omni.run_with_hooks(batch, fwd_hooks=[("audio.blocks.0.attn.hook_pattern", reader)])
    full = cache["audio.blocks.0.attn.hook_pattern"]
    assert torch.equal(reader.seen, full[..., -1:, :]) and reader.seen.shape == (2, 2, omni.cfg.audio_n_heads, 1, 100)
    assert torch.equal(logits, omni(batch))


def test_an_encoder_pattern_of_the_wrong_shape_is_refused(omni, batch):
    with pytest.raises(ValueError, match="audio.blocks.0.attn.hook_pattern returned shape"):
        omni.run_with_hooks(batch, fwd_hooks=[("audio.blocks.0.attn.hook_pattern", lambda p, hook: block_diagonal(p))])
    assert not omni.adapter.audio_tower.layers[0].self_attn._forward_hooks, "hooks are removed after the failed run"


def test_encoder_attention_goes_through_the_registered_function(omni, batch):
    attention = omni.adapter.audio_tower.layers[0].self_attn
    assert attention.config._attn_implementation == "lalm_lens_sdpa"
    assert isinstance(attention.__dict__["_lalm_pattern"], LazyHookPoint)
    calls = []
    with omni.hooks(fwd_hooks=[("audio.blocks.0.attn.hook_pattern", lambda t, hook: None)]):
        attention.__dict__["_lalm_pattern"].add_hook(lambda t, hook: calls.append(tuple(t.shape)))
        omni(batch)
        attention.__dict__["_lalm_pattern"].remove_hooks()
    heads = omni.cfg.audio_n_heads
    assert calls == [(1, heads, 100, 100), (1, heads, 100, 100), (1, heads, 75, 75)]


def test_identity_pattern_hooks_match_hf_eager(omni, batch):
    eager = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(omni.cfg.name, attn_implementation="eager").eval()
    expected = eager(**batch.inputs).logits
    logits = omni.run_with_hooks(batch, fwd_hooks=[(lambda n: n.endswith("hook_pattern"), lambda t, hook: t.clone())])
    real = batch.inputs["attention_mask"].bool()
    torch.testing.assert_close(logits[real], expected[real], rtol=0, atol=1e-5)


def test_editing_the_encoder_pattern_equals_the_same_edit_in_hf(omni, batch):
    layer = omni.adapter.audio_tower.layers[0]

    def uniform_in_chunk(pattern, hook):
        return (pattern > 0).to(pattern.dtype) / (pattern > 0).sum(-1, keepdim=True).clamp(min=1)

    ours = omni.run_with_hooks(batch, fwd_hooks=[("audio.blocks.0.attn.hook_pattern", uniform_in_chunk)])
    seen = {}

    def chunk_means(module, args, kwargs, output):
        x, bounds = kwargs["hidden_states"], kwargs["cu_seqlens"].tolist()
        v = module.v_proj(x)
        mean = torch.cat([v[a:b].mean(0, keepdim=True).expand(b - a, -1) for a, b in zip(bounds[:-1], bounds[1:])])
        seen["called"] = True
        return module.out_proj(mean)

    with torch_hook(layer.self_attn, fn=chunk_means, with_kwargs=True):
        theirs = omni(batch)
    assert seen and not torch.allclose(ours, omni(batch))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_encoder_and_embed_edits_equal_the_same_edit_on_packed_hf_tensors(omni, batch):
    tower = omni.adapter.audio_tower
    shift = torch.randn(omni.cfg.audio_d_model, generator=torch.Generator().manual_seed(0))

    def edit_clip(clip, rows, fn):
        def hook(tensor, hook):
            tensor = tensor.clone()
            tensor[clip, rows] = fn(tensor[clip, rows])
            return tensor

        return hook

    def on_packed(lengths, clip, rows, fn):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            out = out.clone()
            out[packed_rows(lengths, clip, rows)] = fn(out[packed_rows(lengths, clip, rows)])
            return (out, *output[1:]) if isinstance(output, tuple) else out

        return hook

    def on_packed_input(lengths, clip, rows, fn):
        def hook(module, args):
            x = args[0].clone()
            x[packed_rows(lengths, clip, rows)] = fn(x[packed_rows(lengths, clip, rows)])
            return (x, *args[1:])

        return hook

    add = lambda t: t + shift
    zero5 = lambda t: t.index_fill(-1, torch.tensor([5]), 0.0)
    zero, double = (lambda t: 0 * t), (lambda t: 2 * t)
    cases = [  # hook, clip, rows, edit, HF module, packed lengths, on the module's input
        ("audio.blocks.0.hook_resid_post", 1, slice(120, 150), add, tower.layers[0], FRAMES, False),
        ("audio.blocks.1.mlp.hook_post", 0, slice(0, 100), zero5, tower.layers[1].fc2, FRAMES, True),
        ("audio.blocks.1.hook_attn_out", 1, slice(0, 10), zero, tower.layers[1].self_attn, FRAMES, False),
        ("hook_audio_embeds", 1, slice(3, 4), zero, tower.proj, TOKENS, False),
        ("audio.hook_out", 0, slice(10, 20), double, tower.proj, TOKENS, True),
    ]
    clean = omni(batch)
    for name, clip, rows, fn, module, lengths, pre in cases:
        theirs_fn = (on_packed_input if pre else on_packed)(lengths, clip, rows, fn)
        ours = omni.run_with_hooks(batch, fwd_hooks=[(name, edit_clip(clip, rows, fn))])
        with torch_hook(module, pre=pre, fn=theirs_fn):
            theirs = omni(batch)
        assert not torch.allclose(ours, clean), name
        assert torch.equal(ours, theirs), name

    def scale_features(module, args, kwargs):
        x = args[0].clone()
        x[:, MEL[0] + 50 : MEL[0] + 120] *= 0.5
        return (x, *args[1:]), kwargs

    def halve_features(tensor, hook):
        tensor = tensor.clone()
        tensor[1, :, 50:120] *= 0.5
        return tensor

    ours = omni.run_with_hooks(batch, fwd_hooks=[("audio.hook_features", halve_features)])
    with torch_hook(tower, pre=True, fn=scale_features, with_kwargs=True):
        theirs = omni(batch)
    assert not torch.allclose(ours, clean) and torch.equal(ours, theirs)


def test_decoder_edits_equal_the_same_edit_on_hf_modules(omni, batch):
    layer = omni.adapter.language_model.layers[1]
    shift = torch.randn(omni.cfg.d_model, generator=torch.Generator().manual_seed(0))
    neurons = torch.tensor([3, 17])
    ablate = lambda t, hook=None: t.index_fill(-1, neurons, 0.0)
    cases = [
        ("blocks.1.hook_resid_post", lambda t, hook: t + shift, layer, lambda m, a, out: out + shift, False),
        ("blocks.1.mlp.hook_gate", ablate, layer.mlp.act_fn, lambda m, a, out: ablate(out), False),
        ("blocks.1.mlp.hook_post", lambda t, hook: 3 * t, layer.mlp.down_proj, lambda m, a: (3 * a[0],), True),
    ]
    clean = omni(batch)
    for name, ours_fn, module, theirs_fn, pre in cases:
        ours = omni.run_with_hooks(batch, fwd_hooks=[(name, ours_fn)])
        with torch_hook(module, pre=pre, fn=theirs_fn):
            theirs = omni(batch)
        assert not torch.allclose(ours, clean), name
        assert torch.equal(ours, theirs), name


def test_generation_with_identity_hooks_matches_hf_and_keeps_mrope(omni, batch):
    hf = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(omni.cfg.name).eval()
    expected = hf.generate(**batch.inputs, max_new_tokens=5, do_sample=False, pad_token_id=omni.tokenizer.pad_token_id)
    every = lambda n: not n.endswith("hook_pattern")
    before = omni(batch)
    ours = omni.generate(batch, max_new_tokens=5, return_type="tokens", fwd_hooks=[(every, lambda t, hook: t)])
    assert torch.equal(ours, expected[:, batch.seq_len :])
    assert torch.equal(omni(batch), before), "rope_deltas kept by the thinker after generate must not change a forward"

    positions = {}
    with torch_hook(omni.adapter.language_model, pre=True, fn=lambda m, a, kw: positions.update(ids=kw["position_ids"]), with_kwargs=True):
        omni(batch)
    ids = positions["ids"]
    real = batch.inputs["attention_mask"].bool()
    assert ids.shape[0] == 3 and torch.equal(ids[0], ids[1]) and torch.equal(ids[0], ids[2])
    assert torch.equal(ids[0][real], torch.cat([torch.arange(int(n)) for n in real.sum(-1)]))


def test_placeholder_mismatch_raises_where_the_thinker_would_not(omni, batch):
    audio = omni.adapter.audio_token_id
    fewer = dict(batch.inputs, input_ids=batch.input_ids.clone())
    fewer["input_ids"][1, batch.audio_spans[1][0].start] = omni.tokenizer.convert_tokens_to_ids("sound")
    omni.hf_model(**fewer)
    with pytest.raises(ValueError, match="136 audio placeholder tokens but the audio features give 137"):
        omni(fewer)
    with pytest.raises(ValueError, match="placeholder tokens"):
        omni.generate(fewer, max_new_tokens=1)

    shifted = dict(batch.inputs, input_ids=batch.input_ids.clone())
    shifted["input_ids"][0, batch.audio_spans[0][0].start] = omni.tokenizer.convert_tokens_to_ids("sound")
    shifted["input_ids"][1, batch.audio_spans[1][0].stop] = audio
    with pytest.raises(ValueError, match="example 0: a run of 49 audio placeholder tokens does not match whole clips"):
        omni(shifted)

    raw = "<|audio_bos|><|AUDIO|><|audio_eos|><|audio_bos|><|AUDIO|><|audio_eos|>hi"
    with pytest.raises(ValueError, match=re.escape("holds 2 <|AUDIO|> placeholder")):
        omni.prepare(noise(1.0), raw, sampling_rate=16000, raw_prompt=True)
    two = omni.prepare([[noise(1.0), noise(2.0)]], raw, sampling_rate=16000, raw_prompt=True)
    assert [len(s) for s in two.audio_spans[0]] == [25, 50]


def test_spans_for_two_clips_in_one_prompt_and_a_padded_batch(omni):
    batch = omni.prepare([[noise(2.0), noise(1.0, 1)], [noise(3.5, 2)]], "Compare the clips.", sampling_rate=16000)
    placeholder = omni.adapter.audio_token_id
    for b, spans in enumerate(batch.audio_spans):
        covered = sorted(p for s in spans for p in s.positions)
        assert covered == (batch.input_ids[b] == placeholder).nonzero().flatten().tolist()
        assert all(s.seconds_per_token == pytest.approx(0.04) for s in spans)
        for s in spans:
            assert batch.input_ids[b, s.start - 1] == omni.tokenizer.convert_tokens_to_ids("<|audio_bos|>")
            assert batch.input_ids[b, s.stop] == omni.tokenizer.convert_tokens_to_ids("<|audio_eos|>")
    assert [(len(s), s.clip, s.encoder_row) for s in batch.audio_spans[0]] == [(50, 0, 0), (25, 1, 1)]
    assert [(len(s), s.clip, s.encoder_row) for s in batch.audio_spans[1]] == [(87, 0, 2)]
    padding = (batch.inputs["attention_mask"] == 0).sum(-1).tolist()
    assert padding[0] > 0 == padding[1] and batch.audio_spans[0][0].start > padding[0]
    assert ll.time_axis(batch.audio_spans[0], clip=1, centre=False)[-1] == pytest.approx(0.96)
    _, cache = omni.run_with_cache(batch, names_filter="hook_audio_embeds")
    assert cache["hook_audio_embeds"].shape[:2] == (3, 87)


def test_full_omni_checkpoint_loads_only_the_thinker(tmp_path_factory, batch, caplog):
    path = save_tiny_qwen2_5_omni(tmp_path_factory.mktemp("qwen2_5_omni_full"))
    with caplog.at_level(logging.WARNING, logger="lalm_lens"):
        model = ll.HookedLALM.from_pretrained(path)
    assert "loading only its thinker" in caplog.text
    assert isinstance(model.hf_model, Qwen2_5OmniThinkerForConditionalGeneration)
    assert model.cfg.arch == "qwen2_5_omni_thinker"
    full = Qwen2_5OmniForConditionalGeneration.from_pretrained(path).eval()
    assert torch.equal(model(batch), full.thinker(**batch.inputs).logits)
    with pytest.raises(ValueError, match=re.escape("HookedLALM.from_hf(model.thinker, processor)")):
        ll.HookedLALM.from_hf(full, model.processor)
    assert torch.equal(ll.HookedLALM.from_hf(full.thinker, model.processor)(batch), model(batch))
    _, cache = model.run_with_cache(batch, names_filter="audio.blocks.0.attn.hook_pattern")
    assert cache["audio.blocks.0.attn.hook_pattern"].shape[:2] == (2, 2)


def test_cfg_and_processor(omni, checkpoint):
    assert omni.cfg.audio_tokens_per_second == 25 and omni.cfg.max_audio_seconds == 30 and omni.cfg.window_seconds is None
    assert omni.adapter.chunk_seconds == 2.0
    assert omni.adapter.projector is omni.adapter.audio_tower.proj
    config = (checkpoint("qwen2_5_omni_thinker") / "processor_config.json").read_text()
    assert '"processor_class": "Qwen2_5OmniProcessor"' in config and "Qwen2VLVideoProcessor" in config
    with pytest.raises(ImportError, match="torchvision"):
        omni.processor.video_processor([])


@pytest.mark.parametrize("clips", [1, 2])
def test_in_place_edits_of_packed_encoder_hooks_reach_the_output(omni, clips):
    waves = [noise(1.5, seed) for seed in range(clips)]
    batch = omni.prepare([waves], "hi", sampling_rate=16000)
    clean = omni(batch)

    def zero_in_place(tensor, hook):
        tensor[..., :8] = 0
        return tensor

    def zero_copy(tensor, hook):
        tensor = tensor.clone()
        tensor[..., :8] = 0
        return tensor

    for name in ("audio.blocks.0.hook_resid_post", "audio.blocks.1.mlp.hook_post", "audio.blocks.0.attn.hook_pattern"):
        in_place = omni.run_with_hooks(batch, fwd_hooks=[(name, zero_in_place)])
        copied = omni.run_with_hooks(batch, fwd_hooks=[(name, zero_copy)])
        assert not torch.allclose(in_place, clean), name
        torch.testing.assert_close(in_place, copied, rtol=0, atol=1e-6)
