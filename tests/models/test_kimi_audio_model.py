"""Kimi-Audio: checkpoint layout and loading, equivalence with transformers' Qwen2 and Whisper, the
stream combination formula, the mimo branch point, cached generation and input errors."""

import copy
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import Qwen2Config, Qwen2ForCausalLM, WhisperConfig
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from lalm_lens.models.kimi_audio import (
    TINY_CONFIG,
    KimiAudioConfig,
    KimiAudioForCausalLM,
    audio_segment,
    load_kimi_audio,
    save_tiny_kimi_audio,
    stack_whisper_frames,
)

# config.json values of moonshotai/Kimi-Audio-7B-Instruct as reported by public integrations.
RELEASE = {
    "architectures": ["MoonshotKimiaForCausalLM"],
    "model_type": "moonshot_kimia",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-6,
    "vocab_size": 168448,
    "kimia_mimo_layers": 6,
    "kimia_mimo_transformer_from_layer_index": 21,
    "kimia_audio_output_vocab": 16896,
    "kimia_text_output_vocab": 152064,
    "kimia_token_offset": 152064,
    "kimia_mimo_audiodelaytokens": 6,
    "kimia_adaptor_input_dim": 5120,
    "use_whisper_feature": True,
    "torch_dtype": "bfloat16",
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_kimi_audio(tmp_path_factory.mktemp("kimi") / "tiny", seed=0)


@pytest.fixture(scope="module")
def model(tiny_dir):
    return load_kimi_audio(tiny_dir)


def prompt(cfg, n_audio=5, seed=0):
    """[text token, <audio segment of n_audio codes>, two text tokens] in both streams, batch 1."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 40, (n_audio,), generator=g).tolist()
    audio, text, mask = audio_segment(cfg, n_audio, codes)
    audio = [cfg.kimia_text_blank, *audio, cfg.kimia_text_blank, cfg.kimia_text_blank]
    text = [11, *text, 12, 13]
    mask = [False, *mask, False, False]
    return torch.tensor([text]), torch.tensor([audio]), torch.tensor([mask])


def test_checkpoint_layout_and_load(tiny_dir, model):
    index = json.loads((tiny_dir / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2
    on_disk = {}
    for shard in shards:
        on_disk.update(load_file(str(tiny_dir / shard)))
    assert set(on_disk) == set(index["weight_map"])
    n, m = TINY_CONFIG["num_hidden_layers"], TINY_CONFIG["kimia_mimo_layers"]
    for name in [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.mimo_norm.weight",
        "lm_head.weight",
        "mimo_output.weight",
        f"model.layers.{n - 1}.self_attn.q_proj.bias",
        f"model.layers.{n - 1}.mlp.gate_proj.weight",
        f"model.mimo_layers.{m - 1}.post_attention_layernorm.weight",
        "model.vq_adaptor.layers.0.weight",
        "model.vq_adaptor.layers.3.bias",
        "model.vq_adaptor.layers.4.weight",
    ]:
        assert name in on_disk, name
    state = model.state_dict()
    for name, tensor in on_disk.items():
        assert torch.equal(state[name], tensor), name
    whisper = load_file(str(tiny_dir / "whisper-large-v3" / "model.safetensors"))
    for name, tensor in whisper.items():
        assert torch.equal(state["whisper_encoder." + name.removeprefix("model.encoder.")], tensor), name
    config_json = json.loads((tiny_dir / "config.json").read_text())
    assert KimiAudioConfig.from_json(tiny_dir / "config.json").to_dict() == config_json
    assert config_json["architectures"] == ["MoonshotKimiaForCausalLM"]


def test_load_reports_missing_and_unexpected(tiny_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["mimo_output.weight"]
    tensors = load_file(str(bad / shard))
    del tensors["mimo_output.weight"]
    save_file(tensors, str(bad / shard))
    with pytest.raises(ValueError, match=r"1 missing tensor\(s\) \['mimo_output.weight'\]"):
        load_kimi_audio(bad)
    tensors["mimo_output.weight"] = torch.zeros(256, 32)
    tensors["model.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(bad / shard))
    with pytest.raises(ValueError, match=r"unexpected tensor\(s\) \['model.extra.weight'\]"):
        load_kimi_audio(bad)
    with pytest.warns(UserWarning, match="model.extra.weight"):
        load_kimi_audio(bad, strict=False)
    for f in bad.glob("model*.safetensors*"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        load_kimi_audio(bad)


def test_release_config_shapes():
    config = KimiAudioConfig.from_dict(RELEASE)
    assert config.extra["torch_dtype"] == "bfloat16"
    with torch.device("meta"):
        m = KimiAudioForCausalLM(config)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["model.embed_tokens.weight"] == (168448, 3584)
    assert shapes["model.layers.27.self_attn.k_proj.weight"] == (512, 3584)
    assert shapes["model.layers.0.self_attn.q_proj.bias"] == (3584,)
    assert "model.layers.0.self_attn.o_proj.bias" not in shapes
    assert shapes["model.mimo_layers.5.mlp.down_proj.weight"] == (3584, 18944)
    assert "model.mimo_layers.6.mlp.down_proj.weight" not in shapes
    assert shapes["model.vq_adaptor.layers.0.weight"] == (3584, 5120)
    assert shapes["model.vq_adaptor.layers.4.bias"] == (3584,)
    assert shapes["mimo_output.weight"] == shapes["lm_head.weight"] == (168448, 3584)
    assert m.model.vq_adaptor.layers[4].eps == 1e-6
    assert m.qwen2_config.layer_types == ["full_attention"] * 34
    assert m.model.config.max_position_embeddings == 8192  # the decoder's context, read by length checks
    assert round(sum(p.numel() for p in m.parameters()) / 1e9, 2) == 9.77


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_text_path_equals_qwen2(tiny_dir, attn):
    model = load_kimi_audio(tiny_dir, attn_implementation=attn)
    cfg = model.config
    reference = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads,
            rms_norm_eps=cfg.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
            attn_implementation=attn,
        )
    ).eval()
    shared = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith(shared)})
    ids = torch.randint(1, cfg.vocab_size, (2, 7), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    with torch.no_grad():
        assert torch.equal(model(ids, output_audio=False).text_logits, reference(ids).logits)
        ours = model(ids, attention_mask=attention_mask, output_audio=False).text_logits
        theirs = reference(ids, attention_mask=attention_mask).logits
    assert torch.equal(ours[:, 2:], theirs[:, 2:])


def test_attention_dispatch_and_module_names(model):
    names = dict(model.named_modules())
    for i in range(model.config.num_hidden_layers):
        for sub in ("q_proj", "k_proj", "v_proj", "o_proj"):
            assert f"model.layers.{i}.self_attn.{sub}" in names
        mlp = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "mlp.act_fn")
        for sub in (*mlp, "input_layernorm", "post_attention_layernorm"):
            assert f"model.layers.{i}.{sub}" in names
    assert "model.mimo_layers.0.self_attn.q_proj" in names
    calls = []
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def counting(module, *args, **kwargs):
        calls.append(module.layer_idx)
        return sdpa(module, *args, **kwargs)

    ALL_ATTENTION_FUNCTIONS["sdpa"] = counting
    try:
        with torch.no_grad():
            model(torch.tensor([[5, 6, 7]]))
    finally:
        del ALL_ATTENTION_FUNCTIONS["sdpa"]
    n, m = model.config.num_hidden_layers, model.config.kimia_mimo_layers
    assert calls == list(range(n + m))


def test_whisper_features_and_adaptor(tiny_dir, model):
    whisper_dir = tiny_dir / "whisper-large-v3"
    encoder = WhisperEncoder(WhisperConfig.from_json_file(str(whisper_dir / "config.json"))).eval()
    weights = load_file(str(whisper_dir / "model.safetensors"))
    encoder.load_state_dict({k.removeprefix("model.encoder."): v for k, v in weights.items()})
    mel = torch.randn(2, 8, 24, generator=torch.Generator().manual_seed(2))  # two padded 30 s chunks
    with torch.no_grad():
        frames = encoder(mel).last_hidden_state  # [2, 12, 16]: 3 tokens per chunk
        kept = torch.cat([frames[0], frames[1, :8]])  # 5 tokens = 3 + 2
        stacked = torch.stack([torch.cat([kept[4 * i + k] for k in range(4)]) for i in range(5)])
        assert torch.equal(stack_whisper_frames(kept), stacked)
        assert torch.equal(model.whisper_features(mel, 5), stacked)

        layers = model.model.vq_adaptor.layers
        x = F.silu(F.linear(stacked, layers[0].weight, layers[0].bias))
        x = F.linear(x, layers[3].weight, layers[3].bias)
        x = F.layer_norm(x, (model.config.hidden_size,), layers[4].weight, layers[4].bias, model.config.rms_norm_eps)
        assert torch.equal(model.model.vq_adaptor(stacked), x)

        text, audio, mask = prompt(model.config, n_audio=5)
        from_mel = model(text, audio, input_features=[mel])
        from_features = model(text, audio, [stacked], mask)
    assert torch.equal(from_mel.text_logits, from_features.text_logits)
    assert torch.equal(from_mel.audio_logits, from_features.audio_logits)


def test_stream_combination(model):
    cfg = model.config
    E = model.model.embed_tokens.weight
    text0, audio0, mask0 = prompt(cfg, n_audio=4, seed=0)
    a, t, c = audio_segment(cfg, 2)  # continuous-only second segment (blanks in the span)
    text1 = torch.cat([text0, torch.tensor([t])], 1)
    audio1 = torch.cat([audio0, torch.tensor([a])], 1)
    mask1 = torch.cat([mask0, torch.tensor([c])], 1)
    pad = text1.shape[1] - text0.shape[1]
    blank = torch.full((1, pad), cfg.kimia_text_blank)
    text = torch.cat([torch.cat([text0, blank], 1), text1])
    audio = torch.cat([torch.cat([audio0, blank], 1), audio1])
    mask = torch.cat([torch.cat([mask0, torch.zeros(1, pad, dtype=torch.bool)], 1), mask1])
    g = torch.Generator().manual_seed(3)
    feats = [torch.randn(4, 64, generator=g), torch.randn(6, 64, generator=g), torch.randn(2, 64, generator=g)]

    with torch.no_grad():
        got = model.embed_inputs(text, audio, feats, mask)
        # The model runs the adaptor once over every segment's rows (the second one's cut to its 4 positions);
        # doing the same here runs the same kernels on the same data, so the formula must hold bit for bit.
        adapted = model.model.vq_adaptor(torch.cat([feats[0], feats[1][:4], feats[2]])).split([4, 4, 2])
        reference = E[audio].clone()
        for row, begin, a in [(0, 2, adapted[0]), (1, 2, adapted[1]), (1, 10, adapted[2])]:
            span = slice(begin, begin + a.shape[0])
            reference[row, span] = (reference[row, span] + a) * math.sqrt(2)
        reference = reference + E[text]
        assert torch.equal(got, reference)
        assert torch.equal(model.embed_inputs(text, audio, feats), got)  # default mask = media spans
        assert torch.equal(model.embed_inputs(torch.zeros_like(text), audio), E[audio])  # upstream sum()==0 rule
        from_streams = model(text, audio, feats, mask)
        from_embeds = model(inputs_embeds=reference)
    assert torch.equal(from_streams.text_logits, from_embeds.text_logits)
    assert torch.equal(from_streams.audio_logits, from_embeds.audio_logits)


def test_mimo_branch(model):
    m = copy.deepcopy(model)
    cfg = m.config
    k = cfg.kimia_mimo_transformer_from_layer_index
    text, audio, mask = prompt(cfg)
    feats = [torch.randn(5, 64, generator=torch.Generator().manual_seed(4))]
    with torch.no_grad():
        out = m(text, audio, feats, mask)
        assert out.audio_logits.shape == out.text_logits.shape == (1, text.shape[1], cfg.vocab_size)
        x = m.embed_inputs(text, audio, feats, mask)
        rope = m.model.rotary_emb(x, torch.arange(x.shape[1])[None])
        h = x
        for layer in [*m.model.layers[: k + 1], *m.model.mimo_layers]:
            h = layer(h, attention_mask=None, position_embeddings=rope)
        assert torch.equal(out.audio_logits, m.mimo_output(m.model.mimo_norm(h)))

        m.model.layers[k + 1].mlp.down_proj.weight.mul_(2)
        after = m(text, audio, feats, mask)
        assert torch.equal(after.audio_logits, out.audio_logits)
        assert not torch.allclose(after.text_logits, out.text_logits)
        m.model.layers[k].mlp.down_proj.weight.mul_(2)
        assert not torch.allclose(m(text, audio, feats, mask).audio_logits, out.audio_logits)
        assert m(text, audio, feats, mask, output_audio=False).audio_logits is None


def assert_greedy(model, new, text, audio=None, attention_mask=None, **features):
    """``new`` is what greedy decoding gives: each token's logit, in one forward over the prompt and the tokens
    fed back (blanks in the audio stream), is within 1e-4 of the row's maximum.

    Cached and uncached steps multiply matrices of other shapes than this forward, so logits may differ in
    the last float32 bits (well under 1e-5 at d_model 32 over 6 layers); 1e-4 only lets a near-tie go either way.
    """
    blank = model.config.kimia_text_blank
    full_text = torch.cat([text, new[:, :-1]], 1)
    full_audio = None if audio is None else torch.cat([audio, torch.full_like(new[:, :-1], blank)], 1)
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask, torch.ones_like(new[:, :-1])], 1)
    if "is_continuous_mask" in features:
        mask = features["is_continuous_mask"]
        features["is_continuous_mask"] = torch.cat([mask, torch.zeros_like(new[:, :-1], dtype=torch.bool)], 1)
    with torch.no_grad():
        logits = model(full_text, full_audio, attention_mask=attention_mask, output_audio=False, **features)
    steps = logits.text_logits[:, text.shape[1] - 1 :]
    done = torch.cumsum(new == model.config.kimia_text_eos, 1) - (new == model.config.kimia_text_eos).long() > 0
    chosen = steps.gather(-1, new[..., None])[..., 0]
    assert bool(((chosen >= steps.max(-1).values - 1e-4) | done).all()), (new, steps.argmax(-1))
    assert bool((new[done] == blank).all())


def test_generation_with_cache_equals_without(model):
    cfg = model.config
    rows = [prompt(cfg, seed=s) for s in (0, 1)]
    text, audio, mask = (torch.cat(parts) for parts in zip(*rows))
    feats = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(5))
    for use_cache in (True, False):
        new = model.generate_text(
            text, audio, 8, whisper_input_feature=feats, is_continuous_mask=mask, use_cache=use_cache
        )
        assert new.shape == (2, 8)
        assert_greedy(model, new, text, audio, whisper_input_feature=feats, is_continuous_mask=mask)

    attention_mask = torch.ones_like(text)
    attention_mask[1, :1] = 0
    for use_cache in (True, False):
        new = model.generate_text(
            text, audio, 4, whisper_input_feature=feats, attention_mask=attention_mask, use_cache=use_cache
        )
        assert_greedy(model, new, text, audio, attention_mask, whisper_input_feature=feats)
    text_only = text[:, :4]
    for use_cache in (True, False):
        assert_greedy(model, model.generate_text(text_only, None, 5, use_cache=use_cache), text_only)


def test_generation_stops_at_text_eos(model):
    cfg = model.config
    script = iter([[cfg.kimia_text_eos, 7], [9, 8], [9, cfg.kimia_text_eos], [9, 9]])

    def force(module, args, logits):
        forced = torch.full_like(logits, -1e4)
        for row, token in enumerate(next(script)):
            forced[row, -1, token] = 0
        return forced

    handle = model.lm_head.register_forward_hook(force)
    try:
        out = model.generate_text(torch.tensor([[5, 6], [5, 6]]), torch.full((2, 2), cfg.kimia_text_blank), 10)
    finally:
        handle.remove()
    blank, eos = cfg.kimia_text_blank, cfg.kimia_text_eos
    assert out.tolist() == [[eos, blank, blank], [7, 8, eos]]


def test_missing_inputs_raise_clear_errors(model, tiny_dir):
    cfg = model.config
    text, audio, mask = prompt(cfg)
    g = torch.Generator().manual_seed(6)
    feats = torch.randn(1, 5, 64, generator=g)
    with pytest.raises(ValueError, match="pass input_ids"):
        model()
    with pytest.raises(ValueError, match="aligned position by position"):
        model(text, audio[:, 1:])
    with pytest.raises(ValueError, match="need audio_input_ids"):
        model(text, whisper_input_feature=feats)
    with pytest.raises(ValueError, match="no whisper_input_feature"):
        model(text, audio, is_continuous_mask=mask)
    with pytest.raises(ValueError, match="1 audio segment.* but 2 feature"):
        model(text, audio, [feats[0], feats[0]])
    with pytest.raises(ValueError, match="stack_whisper_frames"):
        model(text, audio, torch.randn(1, 20, 16, generator=g))
    with pytest.raises(ValueError, match="spans 5 positions but has only 3"):
        model(text, audio, feats[:, :3])
    unmatched = audio.clone()
    unmatched[0, -1] = cfg.kimia_media_begin
    with pytest.raises(ValueError, match="needs its own kimia_media_end"):
        model(text, unmatched, feats)
    with pytest.raises(ValueError, match="inside media spans"):
        model(text, audio, feats, torch.ones_like(mask))
    with pytest.raises(ValueError, match="not both"):
        model(text, inputs_embeds=torch.zeros(1, text.shape[1], cfg.hidden_size))
    mel = torch.randn(8, 24, generator=g)
    with pytest.raises(ValueError, match="pass whisper_input_feature .* or input_features"):
        model(text, audio, feats, input_features=[mel])
    with pytest.raises(ValueError, match="need a Whisper encoder"):
        KimiAudioForCausalLM(cfg)(text, audio, input_features=[mel])
    with pytest.raises(FileNotFoundError, match="whisper_path"):
        load_kimi_audio(tiny_dir, whisper_path=tiny_dir / "nowhere")
    with torch.no_grad():
        cache = model(text, audio, feats, use_cache=True, output_audio=False).past_key_values
        with pytest.raises(ValueError, match="no audio-branch keys"):
            model(torch.tensor([[5]]), past_key_values=cache, use_cache=True)
    past_vocab = text.clone()
    past_vocab[0, 1] = cfg.vocab_size + 3
    with pytest.raises(ValueError, match=r"input_ids \(text stream\)\[0, 1\] is 259, outside the vocabulary of 256"):
        model(past_vocab, audio, feats)
    with pytest.raises(ValueError, match=r"audio_input_ids \(audio stream\)\[0, 0\] is -1"):
        model(text, torch.cat([torch.tensor([[-1]]), audio[:, 1:]], 1), feats)
    with pytest.raises(ValueError, match="must index one of the 4 shared layers"):
        KimiAudioConfig.from_dict({**TINY_CONFIG, "kimia_mimo_transformer_from_layer_index": 4})
