"""Kimi-Audio as a hooked model: offline loading, logits, every hook (mimo branch included), edits, generation,
prompt layout and special token ids, spans and input errors, on the tiny official-layout checkpoint."""

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

import lalm_lens as ll
from conftest import noise
from lalm_lens.adapters.kimi_audio import TOKEN_NAMES, KimiAudioAdapter, KimiAudioProcessor
from lalm_lens.models.kimi_audio import (
    TINY_CONFIG,
    KimiAudioConfig,
    load_kimi_audio,
    save_tiny_kimi_audio,
    special_token_layout,
)

PROMPT = [11, 12, 13]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_kimi_audio(tmp_path_factory.mktemp("kimi") / "tiny")


@pytest.fixture(scope="module")
def kimi(folder):
    return ll.HookedLALM.from_pretrained(folder)


@pytest.fixture(scope="module")
def reference(folder):
    """The colleague's model as a user loads it, with the Whisper attention the adapter asks for."""
    model = load_kimi_audio(folder)
    model.whisper_encoder.config._attn_implementation = "sdpa"
    return model


def codes(wave, seed=0):
    return np.random.default_rng(seed).integers(0, 48, math.ceil(len(wave) / 1280)).tolist()


@pytest.fixture(scope="module")
def clips():
    return [[noise(0.5, 1), noise(0.3, 3)], [noise(0.8, 2)]]


@pytest.fixture(scope="module")
def batch(kimi, clips):
    """Two examples (two clips, one clip), so the batch is left-padded and spans several chunks."""
    tokens = [[codes(w, i) for i, w in enumerate(example)] for example in clips]
    return kimi.prepare(clips, PROMPT, sampling_rate=16000, semantic_tokens=tokens)


def test_loads_offline_through_from_pretrained(kimi, folder):
    assert isinstance(kimi.adapter, KimiAudioAdapter) and kimi.cfg.arch == "kimi_audio"
    cfg = kimi.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.n_heads, cfg.n_kv_heads, cfg.d_vocab) == (4, 32, 64, 4, 2, 256)
    assert (cfg.audio_n_layers, cfg.audio_d_model, cfg.audio_d_mlp, cfg.audio_n_heads) == (2, 16, 32, 2)
    assert cfg.audio_tokens_per_second == 12.5 and cfg.audio_frames_per_second == 50
    assert cfg.window_seconds == pytest.approx(0.24) and cfg.sampling_rate == 16000
    assert kimi.adapter.language_model.config.max_position_embeddings == 512  # the tiny decoder's context
    assert kimi.hf_model.qwen2_config._attn_implementation == "lalm_lens_sdpa"
    assert kimi.hf_model.whisper_encoder.config._attn_implementation == "lalm_lens_sdpa"
    assert not kimi.processor.has_tokenizer
    with pytest.raises(ValueError, match="token ids"):
        kimi.to_tokens("hello")


def test_logits_equal_the_model_with_and_without_identity_hooks(kimi, reference, batch):
    expected = reference(**batch.inputs)
    assert torch.equal(kimi(batch), expected.text_logits)
    every_tensor = lambda name: not name.endswith("hook_pattern")
    with kimi.hooks(fwd_hooks=[(every_tensor, lambda t, hook: t)]):
        out = kimi(batch, return_type="output")
    assert torch.equal(out.logits, expected.text_logits) and torch.equal(out.audio_logits, expected.audio_logits)
    logits, cache = kimi.run_with_cache(batch, names_filter=every_tensor)
    assert torch.equal(logits, expected.text_logits) and "mimo.ln_final.hook_normalized" in cache


def test_pattern_hooks_match_eager_attention(folder, batch):
    eager = ll.HookedLALM.from_pretrained(folder, attn_implementation="eager")
    expected = eager(batch)
    logits, cache = eager.run_with_cache(batch, names_filter=lambda n: n.endswith("hook_pattern"))
    real = batch.inputs["attention_mask"].bool()
    # eager and sdpa sum in other orders: float32 logits of this d_model-32 model differ by ~1e-6
    torch.testing.assert_close(logits[real], expected[real], rtol=0, atol=1e-5)
    for name in ("blocks.0.attn.hook_pattern", "mimo.blocks.1.attn.hook_pattern"):
        pattern = cache[name]
        rows = real[:, None, :].expand(pattern.shape[:-1])
        torch.testing.assert_close((pattern * real[:, None, None, :]).sum(-1)[rows], torch.ones(int(rows.sum())))
        assert torch.all(pattern.triu(1)[rows] == 0)
    torch.testing.assert_close(cache["audio.blocks.1.attn.hook_pattern"].sum(-1), torch.ones(9, 2, 12))


def expected_shapes(kimi, batch) -> dict:
    cfg, (b, pos) = kimi.cfg, batch.input_ids.shape
    chunks = sum(m.shape[0] for m in batch.inputs["input_features"])
    mel, frames = batch.inputs["input_features"][0].shape[1:]
    tokens, enc = int(batch.inputs["is_continuous_mask"].sum()), frames // 2
    shapes = {
        "audio.hook_features": (chunks, mel, frames),
        "audio.hook_out": (chunks, enc, cfg.audio_d_model),
        "hook_audio_embeds": (tokens, cfg.d_model),
        "hook_embed": (b, pos, cfg.d_model),
        "ln_final.hook_scale": (b, pos, 1),
        "ln_final.hook_normalized": (b, pos, cfg.d_model),
        "mimo.ln_final.hook_scale": (b, pos, 1),
        "mimo.ln_final.hook_normalized": (b, pos, cfg.d_model),
    }
    for i in range(cfg.audio_n_layers):
        for name in ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out"):
            shapes[f"audio.blocks.{i}.{name}"] = (chunks, enc, cfg.audio_d_model)
        shapes[f"audio.blocks.{i}.attn.hook_pattern"] = (chunks, cfg.audio_n_heads, enc, enc)
        shapes[f"audio.blocks.{i}.mlp.hook_post"] = (chunks, enc, cfg.audio_d_mlp)
    n_mimo = kimi.hf_model.config.kimia_mimo_layers
    for prefix, n in (("blocks", cfg.n_layers), ("mimo.blocks", n_mimo)):
        for i in range(n):
            for name in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out"):
                shapes[f"{prefix}.{i}.{name}"] = (b, pos, cfg.d_model)
            shapes[f"{prefix}.{i}.attn.hook_pattern"] = (b, cfg.n_heads, pos, pos)
            for name, heads in (("hook_q", cfg.n_heads), ("hook_k", cfg.n_kv_heads), ("hook_v", cfg.n_kv_heads),
                                ("hook_z", cfg.n_heads)):
                shapes[f"{prefix}.{i}.attn.{name}"] = (b, pos, heads, cfg.d_head)
            for name in ("hook_pre", "hook_gate", "hook_post"):
                shapes[f"{prefix}.{i}.mlp.{name}"] = (b, pos, cfg.d_mlp)
    return shapes


def test_every_hook_exists_with_its_documented_shape(kimi, batch):
    shapes = expected_shapes(kimi, batch)
    assert set(kimi.hook_dict) == set(shapes)
    assert (shapes["audio.hook_features"], shapes["hook_audio_embeds"]) == ((3 + 2 + 4, 8, 24), (7 + 4 + 10, 32))
    _, cache = kimi.run_with_cache(batch)
    for name, shape in shapes.items():
        assert tuple(cache[name].shape) == shape, name


def test_editing_any_hook_changes_its_output(kimi):
    wave = noise(0.3)
    batch = kimi.prepare(wave, PROMPT, sampling_rate=16000, semantic_tokens=codes(wave))
    clean = kimi(batch, return_type="output")
    branch = kimi.adapter.mimo_from_layer

    def edit(tensor, hook):
        if hook.name.endswith("hook_pattern"):
            return torch.ones_like(tensor) / tensor.shape[-1]
        return tensor * 0.5 + 0.1

    for name in kimi.hook_dict:
        if name.endswith("hook_scale"):  # the norm's scale is read-only: editing it raises instead
            with pytest.raises(ValueError, match="read-only"), kimi.hooks(fwd_hooks=[(name, edit)]):
                kimi(batch)
            continue
        with kimi.hooks(fwd_hooks=[(name, edit)]):
            out = kimi(batch, return_type="output")
        if name.startswith("mimo."):
            assert torch.equal(out.text_logits, clean.text_logits), name
            assert not torch.allclose(out.audio_logits, clean.audio_logits), f"editing {name} left the audio logits"
            continue
        assert not torch.allclose(out.text_logits, clean.text_logits), f"editing {name} left the text logits"
        after_branch = name == "ln_final.hook_normalized" or (name.startswith("blocks.") and int(name.split(".")[1]) > branch)
        assert torch.equal(out.audio_logits, clean.audio_logits) == after_branch, name


@pytest.mark.parametrize("stack", ["blocks", "mimo.blocks"])
def test_zeroing_a_neuron_equals_the_same_edit_on_down_proj(kimi, batch, stack):
    layer, neuron = 1, 7
    decoder = kimi.adapter.language_model
    down_proj = (decoder.layers if stack == "blocks" else decoder.mimo_layers)[layer].mlp.down_proj

    def zero(tensor, hook=None):
        tensor = tensor.clone()
        tensor[..., neuron] = 0
        return tensor

    with kimi.hooks(fwd_hooks=[(f"{stack}.{layer}.mlp.hook_post", zero)]):
        ours = kimi(batch, return_type="output")
    handle = down_proj.register_forward_pre_hook(lambda module, args: (zero(args[0]),))
    try:
        theirs = kimi(batch, return_type="output")
    finally:
        handle.remove()
    assert torch.equal(ours.text_logits, theirs.text_logits) and torch.equal(ours.audio_logits, theirs.audio_logits)
    assert not torch.equal(ours.audio_logits, kimi(batch, return_type="output").audio_logits)


def test_generate_runs_hooks_on_prefill_and_every_step(kimi, reference, batch):
    plain = kimi.generate(batch, max_new_tokens=4, return_type="tokens")
    inputs = {k: v for k, v in batch.inputs.items() if k != "input_ids"}
    assert torch.equal(plain, reference.generate_text(batch.input_ids, max_new_tokens=4, **inputs))
    calls = []
    record = lambda t, hook: calls.append((hook.name, t.shape[1]))
    hooked = kimi.generate(
        batch, max_new_tokens=4, return_type="tokens",
        fwd_hooks=[("blocks.3.hook_resid_post", record), ("hook_audio_embeds", lambda t, hook: t)],
    )
    assert torch.equal(plain, hooked)
    assert calls[0] == ("blocks.3.hook_resid_post", batch.seq_len) and len(calls) == plain.shape[1]
    assert all(length == 1 for _, length in calls[1:])
    steered = kimi.generate(batch, 4, [("ln_final.hook_normalized", lambda t, hook: -t)], return_type="tokens")
    assert not torch.equal(steered, plain)
    with pytest.raises(ValueError, match="return_type='tokens'"):
        kimi.generate(batch, max_new_tokens=2)
    with pytest.raises(NotImplementedError, match="greedy"):
        kimi.generate(batch, max_new_tokens=2, do_sample=True, return_type="tokens")


def test_spans_are_at_12_5_hz_and_cover_the_code_positions(kimi, batch, clips):
    mask = batch.inputs["is_continuous_mask"]
    for b, spans in enumerate(batch.audio_spans):
        assert sorted(p for s in spans for p in s.positions) == mask[b].nonzero().flatten().tolist()
        assert all(s.seconds_per_token == pytest.approx(0.08) and s.frames_per_token == 4 for s in spans)
    first = batch.audio_spans[0]
    assert [len(s) for s in first] == [3, 3, 1, 3, 1] and [s.clip for s in first] == [0, 0, 0, 1, 1]
    assert [s.offset_s for s in first] == pytest.approx([0, 0.24, 0.48, 0, 0.24])
    rows = [s.encoder_row for spans in batch.audio_spans for s in spans]
    assert rows == list(range(sum(m.shape[0] for m in batch.inputs["input_features"])))
    assert batch.clip_seconds == [[0.5, 0.3], [0.8]]
    clip_samples = [[round(t * 16000) for t in example] for example in batch.clip_seconds]
    assert kimi.adapter.audio_spans(batch.inputs, clip_samples) == batch.audio_spans  # recomputed from the ids
    assert first[1].position_at(0.3) == first[1].start == first[0].stop


# A config.json shaped like the release's, with the four kimia_* ids it holds (num_base_tokens left to its
# default, 151643, as the official config class has it).
RELEASE_IDS = {"kimia_media_begin": 151661, "kimia_media_end": 151663, "kimia_text_blank": 151666,
               "kimia_text_eos": 151667, "kimia_token_offset": 152064, "vocab_size": 168448}


def test_special_ids_of_a_release_checkpoint_follow_the_tokenizer_ordering():
    processor = KimiAudioProcessor(KimiAudioConfig.from_dict(RELEASE_IDS), whisper=None)
    assert processor.special_ids == {
        "msg_end": 151645, "media_begin": 151661, "media_end": 151663, "text_blank": 151666, "text_eos": 151667,
        "user_msg_start": 151670, "assistant_msg_start": 151671, "speech_ct": 151675, "speech_ctd": 151676,
    }
    layout = special_token_layout(151643)
    assert (layout["[BOS]"], layout["[EOS]"], layout["<|reserved_token_0|>"]) == (151643, 151644, 151648)
    explicit = KimiAudioConfig.from_dict({**RELEASE_IDS, "num_base_tokens": 151643})
    assert KimiAudioProcessor(explicit, whisper=None).special_ids == processor.special_ids


def test_special_ids_off_the_ordering_are_not_guessed(folder, tmp_path):
    shifted = KimiAudioConfig.from_dict({**RELEASE_IDS, "num_base_tokens": 151600})
    ids = KimiAudioProcessor(shifted, whisper=None).special_ids
    assert ids == {"media_begin": 151661, "media_end": 151663, "text_blank": 151666, "text_eos": 151667}
    copy = shutil.copytree(folder, tmp_path / "shifted")
    (copy / "config.json").write_text(json.dumps({**TINY_CONFIG, "num_base_tokens": 160}))
    model = ll.HookedLALM.from_pretrained(copy)
    with pytest.raises(ValueError, match=r"<\|im_msg_end\|>.*unknown.*num_base_tokens=160"):
        model.prepare(noise(0.2), PROMPT, sampling_rate=16000, semantic_tokens="blank")


def test_prompt_layout_follows_the_official_prompt_manager(kimi):
    ids = kimi.processor.special_ids
    # The tiny checkpoint's num_base_tokens is 170: the same ordering as the release's from 151643.
    assert ids == {"msg_end": 172, "media_begin": 188, "media_end": 190, "text_blank": 193, "text_eos": 194,
                   "user_msg_start": 197, "assistant_msg_start": 198, "speech_ct": 202, "speech_ctd": 203}
    layout = special_token_layout(kimi.hf_model.config.num_base_tokens)
    assert ids == {key: layout[name] for key, name in TOKEN_NAMES.items()}
    wave = noise(0.2)
    tokens = codes(wave)
    _ = 193
    batch = kimi.prepare(wave, [21, 22], sampling_rate=16000, semantic_tokens=tokens)
    audio = [197, _, _, 188, *[c + 208 for c in tokens], 190, 202, 172, 198]
    text = [_, 21, 22, _, _, _, _, _, _, _, _]
    assert batch.inputs["audio_input_ids"].tolist() == [audio]
    assert batch.inputs["input_ids"].tolist() == [text]
    assert batch.inputs["is_continuous_mask"].tolist() == [[False] * 4 + [True] * 3 + [False] * 4]
    assert batch.prompts[0].startswith(TOKEN_NAMES["user_msg_start"]) and "[3 audio tokens]" in batch.prompts[0]

    messages = [
        {"role": "user", "message_type": "audio"},
        {"role": "assistant", "message_type": "text", "content": [31]},
        {"role": "user", "message_type": "text", "content": [32]},
    ]
    raw = kimi.prepare(wave, messages, sampling_rate=16000, semantic_tokens=tokens, raw_prompt=True, output_type="both")
    audio = [197, 188, *[c + 208 for c in tokens], 190, 203, 172, 198, _, _, 172, 197, _, 172, 198]
    text = [_, _, _, _, _, _, _, _, _, 31, 194, _, _, 32, _, _]
    assert raw.inputs["audio_input_ids"].tolist() == [audio] and raw.inputs["input_ids"].tolist() == [text]
    assert torch.isfinite(kimi(raw)).all()


def test_missing_or_wrong_inputs_raise_clear_errors(kimi, batch):
    wave = noise(0.5)
    with pytest.raises(ValueError, match="semantic_tokens=.*semantic_tokenizer=.*'blank'"):
        kimi.prepare(wave, PROMPT, sampling_rate=16000)
    with pytest.raises(ValueError, match="5 semantic codes for 0.50 s of audio, which gives 7"):
        kimi.prepare(wave, PROMPT, sampling_rate=16000, semantic_tokens=[1] * 5)
    with pytest.raises(ValueError, match=r"1 code sequence\(s\) for 2 clip"):
        kimi.prepare([wave, wave], PROMPT, sampling_rate=16000, semantic_tokens=[codes(wave)])
    with pytest.raises(ValueError, match=r"must lie in \[0, 48\)"):
        kimi.prepare(wave, PROMPT, sampling_rate=16000, semantic_tokens=[60] * 7)
    with pytest.raises(ValueError, match="token ids"):
        kimi.prepare(wave, "What is said?", sampling_rate=16000, semantic_tokens=codes(wave))
    with pytest.raises(ValueError, match="no system role"):
        kimi.prepare(wave, PROMPT, sampling_rate=16000, semantic_tokens=codes(wave), system_prompt="Be brief.")
    with pytest.raises(ll.AudioError, match="truncate=True"):
        kimi.prepare(noise(41.0), PROMPT, sampling_rate=16000, semantic_tokens="blank")
    with pytest.raises(ValueError, match="more audio messages"):
        kimi.prepare(wave, [{"role": "user", "message_type": "audio"}] * 2, sampling_rate=16000,
                     semantic_tokens="blank", raw_prompt=True)

    inputs = dict(batch.inputs)
    with pytest.raises(ValueError, match="differ in shape"):
        kimi({**inputs, "input_ids": inputs["input_ids"][:, 1:]})
    with pytest.raises(ValueError, match=r"3 media segment\(s\) but 2 feature"):
        kimi({**inputs, "input_features": inputs["input_features"][:2]})
    short = [m[:1] for m in inputs["input_features"]]
    with pytest.raises(ValueError, match="spans 7 positions but its 1 log-mel chunk"):
        kimi({**inputs, "input_features": short})
    unmatched = inputs["audio_input_ids"].clone()
    unmatched[0, -1] = kimi.hf_model.config.kimia_media_begin
    with pytest.raises(ValueError, match="needs its own kimia_media_end"):
        kimi.generate({**inputs, "audio_input_ids": unmatched}, 2, return_type="tokens")


def test_a_position_deleted_inside_an_audio_span_is_refused(kimi):
    """The misuse: cutting positions out of a clip's span in every stream, so the shapes still agree."""
    wave = noise(0.4)  # 5 positions: log-mel chunks of 3 and 2 positions in the tiny encoder
    batch = kimi.prepare(wave, PROMPT, sampling_rate=16000, semantic_tokens=codes(wave))
    span = batch.audio_spans[0][0]

    def without(*positions, inputs=batch.inputs):
        keep = [p for p in range(batch.seq_len) if p not in positions]
        return {k: v[:, keep] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}

    with pytest.raises(ValueError, match="spans no longer match"):  # a batch keeps its spans to compare
        kimi(replace(batch, inputs=without(span.start)))
    # A dict has only its features to tell: 4 positions still take 2 chunks, 3 positions would take 1.
    with pytest.raises(ValueError, match=r"media segment 0 .* spans 3 positions but its 2 log-mel chunk\(s\) give 4 to 6"):
        kimi(without(span.start, span.start + 1))

    rows = kimi.hf_model.whisper_features(batch.inputs["input_features"][0], 5)
    precomputed = {k: v for k, v in batch.inputs.items() if k != "input_features"}
    assert torch.equal(kimi({**precomputed, "whisper_input_feature": [rows]}), kimi(batch))  # same encoder run
    with pytest.raises(ValueError, match="spans 4 positions but its whisper_input_feature has 5 rows"):
        kimi({**without(span.start, inputs=precomputed), "whisper_input_feature": [rows]})


def test_a_prompt_id_past_the_vocabulary_is_refused(kimi):
    wave = noise(0.2)
    with pytest.raises(ValueError, match=r"input_ids\[0, 2\] is 300, outside the vocabulary of 256 ids"):
        kimi.prepare(wave, [11, 300], sampling_rate=16000, semantic_tokens=codes(wave))
    batch = kimi.prepare(wave, [11, 12], sampling_rate=16000, semantic_tokens=codes(wave))
    ids = batch.inputs["input_ids"].clone()
    ids[0, 2] = 256
    with pytest.raises(ValueError, match=r"input_ids\[0, 2\] is 256, outside the vocabulary of 256 ids"):
        kimi({**batch.inputs, "input_ids": ids})


def test_semantic_tokenizer_and_blank_runs(kimi):
    wave = noise(0.6, 4)
    seen = []

    def tokenizer(wave_16k):
        seen.append(len(wave_16k))
        return torch.tensor([codes(wave_16k)])

    given = kimi.prepare(wave, PROMPT, sampling_rate=16000, semantic_tokens=codes(wave))
    called = kimi.prepare(torch.from_numpy(wave), PROMPT, sampling_rate=16000, semantic_tokenizer=tokenizer)
    assert seen == [len(wave)] and torch.equal(called.inputs["audio_input_ids"], given.inputs["audio_input_ids"])
    assert torch.equal(kimi(called), kimi(given))

    blank = kimi.prepare(wave, PROMPT, sampling_rate=16000, semantic_tokens="blank")
    span = blank.audio_spans[0]
    assert (blank.inputs["audio_input_ids"][0, span[0].start : span[-1].stop] == kimi.processor.special_ids["text_blank"]).all()
    _, cache = kimi.run_with_cache(blank, names_filter=["hook_audio_embeds"])
    assert cache["hook_audio_embeds"].shape == (8, 32) and torch.isfinite(kimi(blank)).all()

    # The tiny decoder has 512 positions: alone in a turn (6 control tokens) a clip keeps 506 tokens (40.48 s);
    # beside 3 prompt tokens, 503 (40.24 s).
    assert kimi.cfg.max_audio_seconds == pytest.approx(40.48)
    for prompt, kept in (([], 506), (PROMPT, 503)):
        truncated = kimi.prepare(noise(42.0), prompt, sampling_rate=16000, semantic_tokens=[1] * 525, truncate=True)
        assert truncated.clip_seconds[0][0] == pytest.approx(kept / 12.5) and truncated.seq_len == 512
        assert int(truncated.inputs["is_continuous_mask"].sum()) == kept
    with pytest.raises(ValueError, match="514 positions"):  # 505 codes + 9: refused without truncate
        kimi.prepare(noise(40.4), PROMPT, sampling_rate=16000, semantic_tokens="blank")


def test_device_maps_and_wrapping_a_loaded_model(kimi, folder, batch):
    with pytest.raises(NotImplementedError, match="one device"):
        ll.HookedLALM.from_pretrained(folder, device_map={"model": "cpu", "lm_head": "cuda:0"})
    with pytest.raises(NotImplementedError, match="one device"):
        ll.HookedLALM.from_pretrained(folder, device_map="auto")
    mapped = ll.HookedLALM.from_pretrained(folder, device_map={"": "cpu"})
    assert torch.equal(mapped(batch), kimi(batch))
    loaded = load_kimi_audio(folder)
    wrapped = ll.HookedLALM.from_hf(loaded, KimiAudioProcessor.from_model(loaded))
    assert isinstance(wrapped.adapter, KimiAudioAdapter) and set(wrapped.hook_dict) == set(kimi.hook_dict)
    torch.testing.assert_close(wrapped(batch), kimi(batch))


def test_a_tokenizer_in_the_folder_gives_string_prompts_and_text(folder, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"what": 40, "is": 41, "said": 42, "?": 43, "<unk>": 0}
    specials = {TOKEN_NAMES[k]: v for k, v in {"media_begin": 188, "media_end": 190, "text_blank": 193,
                                                 "text_eos": 194, "msg_end": 172}.items()}
    backend = Tokenizer(models.WordLevel({**words, **specials}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>",
                                        additional_special_tokens=list(specials))
    copy = shutil.copytree(folder, tmp_path / "with_tokenizer")
    tokenizer.save_pretrained(copy)
    kimi = ll.HookedLALM.from_pretrained(copy)
    assert kimi.processor.has_tokenizer and kimi.processor.special_ids["user_msg_start"] == 197
    wave = noise(0.3)
    batch = kimi.prepare(wave, "what is said ?", sampling_rate=16000, semantic_tokens=codes(wave))
    assert batch.input_ids[0, 1:5].tolist() == [40, 41, 42, 43]
    texts = kimi.generate(batch, max_new_tokens=3)
    assert len(texts) == 1 and isinstance(texts[0], str)


def test_a_remote_code_tokenizer_is_never_run(folder, tmp_path):
    copy = shutil.copytree(folder, tmp_path / "official_tokenizer")
    auto_map = {"AutoTokenizer": ["tokenization_kimia.TikTokenTokenizer", None]}
    (copy / "tokenizer_config.json").write_text(json.dumps({"auto_map": auto_map, "tokenizer_class": "TikTokenTokenizer"}))
    (copy / "tokenization_kimia.py").write_text("raise RuntimeError('remote code ran')\n")
    with pytest.warns(UserWarning, match="prompts as token ids"):
        kimi = ll.HookedLALM.from_pretrained(copy)
    assert not kimi.processor.has_tokenizer
