"""Qwen3-Omni thinker: the Qwen3-Omni encoder (13 tokens per 1 s chunk) and an MoE decoder with router and per-expert hooks."""

import logging
import re

import pytest
import torch
from transformers import Qwen3OmniMoeForConditionalGeneration

import lalm_lens as ll
from conftest import noise
from lalm_lens.adapters.qwen3_omni import route
from lalm_lens.cli import main
from lalm_lens.zoo.tiny import save_tiny_qwen3_omni

FAMILY = "qwen3_omni_moe_thinker"
LAST = 1  # the tiny checkpoint's last decoder layer


@pytest.fixture(scope="module")
def omni(checkpoint):
    return ll.HookedLALM.from_pretrained(checkpoint(FAMILY))


@pytest.fixture(scope="module")
def eager(checkpoint):
    """The same checkpoint with HF's eager expert loop instead of the grouped-GEMM kernel."""
    return ll.HookedLALM.from_pretrained(checkpoint(FAMILY), experts_implementation="eager")


@pytest.fixture(scope="module")
def batch(omni):
    return omni.prepare([noise(2.0, 1), noise(3.5, 2)], "What sounds are in the audio?", sampling_rate=16000)


def hf_model(model, **kwargs):
    return type(model.hf_model).from_pretrained(model.cfg.name, **kwargs).eval()


def busiest_expert(model, batch, layer: int) -> int:
    """The expert the most positions of ``batch`` are routed to in ``layer``."""
    name = f"blocks.{layer}.mlp.hook_router_weights"
    weights = model.run_with_cache(batch, names_filter=name)[1][name]
    return int((weights != 0).sum((0, 1)).argmax())


def test_router_hooks_hold_logits_and_the_top_k_weights_of_every_expert(omni, batch):
    names = [f"blocks.{LAST}.mlp.hook_router_logits", f"blocks.{LAST}.mlp.hook_router_weights"]
    _, cache = omni.run_with_cache(batch, names_filter=names)
    logits, weights = cache[names[0]], cache[names[1]]
    b, pos = batch.input_ids.shape
    assert logits.shape == weights.shape == (b, pos, omni.adapter.n_experts)
    assert torch.all((weights != 0).sum(-1) == omni.adapter.experts_per_token)
    torch.testing.assert_close(weights.sum(-1), torch.ones(b, pos))  # norm_topk_prob: the chosen weights sum to 1
    top, chosen = route(omni.adapter.language_model.layers[LAST].mlp.gate, logits.flatten(0, 1))
    assert torch.equal(weights.flatten(0, 1).gather(1, chosen), top), "the same float32 softmax and top-k"
    recorded = hf_model(omni)(**batch.inputs, output_router_logits=True).router_logits[LAST]
    assert torch.equal(logits.flatten(0, 1), recorded)


def test_an_expert_neuron_reads_act_gate_times_up_where_routed_and_zero_elsewhere(omni, batch):
    e = busiest_expert(omni, batch, LAST)
    names = [f"blocks.{LAST}.hook_resid_mid", f"blocks.{LAST}.mlp.hook_router_weights", f"blocks.{LAST}.mlp.experts.{e}.hook_post"]
    logits, cache = omni.run_with_cache(batch, names_filter=names)
    assert torch.equal(logits, omni(batch)), "reading an expert leaves the output as the kernel made it"
    routed = cache[names[1]][..., e] != 0
    post = cache[names[2]]
    assert routed.any() and torch.all(post[~routed] == 0) and torch.all(post[routed].abs().sum(-1) > 0)
    expert = omni.blocks[LAST].mlp.experts[e]
    x = omni.adapter.language_model.layers[LAST].post_attention_layernorm(cache[names[0]][routed])
    # act(x W_gate) * (x W_in): the same products as the fused projection, summed by another matmul call
    torch.testing.assert_close(post[routed], torch.nn.functional.silu(x @ expert.W_gate) * (x @ expert.W_in), rtol=0, atol=1e-6)


def test_zeroing_an_expert_neuron_equals_zeroing_its_down_proj_column(eager, omni, batch):
    e, neuron = busiest_expert(eager, batch, LAST), 5

    def zero(tensor, hook):
        tensor = tensor.clone()
        tensor[..., neuron] = 0
        return tensor

    for model in (eager, omni):
        ours = model.run_with_hooks(batch, fwd_hooks=[(f"blocks.{LAST}.mlp.experts.{e}.hook_post", zero)])
        implementation = model.hf_model.config.text_config._experts_implementation
        hf = hf_model(model, experts_implementation=implementation)
        hf.model.language_model.layers[LAST].mlp.experts.down_proj[e, :, neuron] = 0
        theirs = hf(**batch.inputs).logits
        assert not torch.allclose(ours, model(batch))
        if implementation == "eager":
            assert torch.equal(ours, theirs), "the eager loop both sides: the same kernels on the same data"
        else:  # grouped GEMM in HF, the eager loop for the edited layer here: float32 sums of d_expert products
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_in_place_edits_and_gradients_reach_an_expert(eager, batch):
    name = f"blocks.{LAST}.mlp.hook_router_weights"
    weights = eager.run_with_cache(batch, names_filter=name)[1][name]
    e = int(weights[0, -1].nonzero()[0])  # an expert the last position of example 0 is routed to
    post = f"blocks.{LAST}.mlp.experts.{e}.hook_post"

    def in_place(tensor, hook):
        tensor[..., 5] = 0

    def returned(tensor, hook):
        return torch.cat([tensor[..., :5], torch.zeros_like(tensor[..., 5:6]), tensor[..., 6:]], -1)

    assert torch.equal(eager.run_with_hooks(batch, fwd_hooks=[(post, in_place)]), eager.run_with_hooks(batch, fwd_hooks=[(post, returned)]))
    loss = lambda logits: logits[0, -1].logsumexp(-1)
    _, cache = eager.run_with_cache(batch, names_filter=[post, name], incl_bwd=True, loss_fn=loss)
    grad = cache[post + "_grad"]
    assert grad[0, -1].abs().sum() > 0 and torch.all(grad[0, :-1] == 0), "the last layer's MLP reaches the loss at its position only"
    assert cache[name + "_grad"][0, -1].abs().sum() > 0


def test_an_expert_no_token_reaches_is_inert_and_a_reached_one_is_not(omni, batch):
    name = f"blocks.{LAST}.mlp.hook_router_weights"
    counts = (omni.run_with_cache(batch, names_filter=name)[1][name] != 0).sum((0, 1))
    clean, shift = omni(batch), lambda t, hook: t * 0.5 + 0.1
    for e, count in enumerate(counts.tolist()):
        edited = omni.run_with_hooks(batch, fwd_hooks=[(f"blocks.{LAST}.mlp.experts.{e}.hook_pre", shift)])
        assert torch.equal(edited, clean) == (count == 0), f"expert {e}, reached by {count} positions"


def test_dropping_an_expert_by_its_router_weight_equals_zeroing_its_weights(eager, batch):
    e = busiest_expert(eager, batch, LAST)

    def drop(weights, hook):
        weights = weights.clone()
        weights[..., e] = 0
        return weights

    ours = eager.run_with_hooks(batch, fwd_hooks=[(f"blocks.{LAST}.mlp.hook_router_weights", drop)])
    hf = hf_model(eager, experts_implementation="eager")
    hf.model.language_model.layers[LAST].mlp.experts.down_proj[e] = 0
    assert torch.equal(ours, hf(**batch.inputs).logits), "a zero weight and a zero expert both add exact zeros"


def test_a_router_weight_given_to_an_unchosen_expert_runs_it_there_only(omni, batch):
    name = f"blocks.{LAST}.mlp.hook_router_weights"
    weights = omni.run_with_cache(batch, names_filter=name)[1][name]
    e = int((weights[0, -1] == 0).nonzero()[0])

    def add(tensor, hook):
        tensor = tensor.clone()
        tensor[0, -1, e] = 0.5
        return tensor

    clean = omni(batch)
    edited = omni.run_with_hooks(batch, fwd_hooks=[(name, add)])
    assert torch.equal(edited[:, :-1], clean[:, :-1]) and torch.equal(edited[1], clean[1])
    assert not torch.allclose(edited[0, -1], clean[0, -1])


def test_a_router_logit_edit_reroutes(omni, batch):
    force = lambda logits, hook: logits + 100 * torch.nn.functional.one_hot(torch.tensor(3), logits.shape[-1])
    names = [f"blocks.{LAST}.mlp.hook_router_logits", f"blocks.{LAST}.mlp.hook_router_weights"]
    with omni.hooks(fwd_hooks=[(names[0], force)]):
        _, cache = omni.run_with_cache(batch, names_filter=names[1])
    weights = cache[names[1]]
    assert torch.all(weights.argmax(-1) == 3) and torch.all((weights != 0).sum(-1) == omni.adapter.experts_per_token)
    torch.testing.assert_close(weights[..., 3], torch.ones(weights.shape[:2]), rtol=0, atol=1e-6)  # softmax of a +100 logit


def test_expert_hooks_cost_nothing_unused_and_fire_in_generation(omni, batch):
    experts = omni.adapter.language_model.layers[LAST].mlp.experts
    steps = []
    record = lambda t, hook: steps.append((hook.step.phase, t.shape[1]))
    tokens = omni.generate(batch, max_new_tokens=3, return_type="tokens", fwd_hooks=[(f"blocks.{LAST}.mlp.experts.0.hook_post", record)])
    assert steps[0] == ("prefill", batch.seq_len) and steps[1:] == [("decode", 1)] * (len(steps) - 1) and len(steps) == 3
    assert torch.equal(tokens, omni.generate(batch, max_new_tokens=3, return_type="tokens"))
    assert not experts._forward_hooks and not omni.adapter.language_model.layers[LAST].mlp.gate._forward_hooks


def test_spans_give_each_clip_one_span_per_second_at_13_tokens(omni):
    batch = omni.prepare([[noise(9.5), noise(1.0, 1)], [noise(2.0, 2)]], "Compare the clips.", sampling_rate=16000)
    first, second = batch.audio_spans
    assert [(len(s), s.offset_s, s.clip, s.encoder_row) for s in first] == (
        [(13, float(i), 0, 0) for i in range(9)] + [(7, 9.0, 0, 0), (13, 0.0, 1, 1)]
    )
    assert [(len(s), s.clip, s.encoder_row) for s in second] == [(13, 0, 2), (13, 0, 2)]
    assert ll.time_axis(first, clip=0, centre=False)[13 * 9 + 1] == pytest.approx(9.08)
    placeholder, start = omni.adapter.audio_token_id, omni.tokenizer.convert_tokens_to_ids("<|audio_start|>")
    for b, spans in enumerate(batch.audio_spans):
        assert sorted(p for s in spans for p in s.positions) == (batch.input_ids[b] == placeholder).nonzero().flatten().tolist()
    assert [int(batch.input_ids[0, s.start - 1]) for s in first if s.offset_s == 0] == [start, start]


def test_encoder_hooks_unpack_clips_and_attend_in_8_s_windows(omni):
    batch = omni.prepare([noise(9.5), noise(2.0, 1)], "hi", sampling_rate=16000)
    names = ["audio.hook_features", "audio.blocks.0.hook_resid_post", "audio.blocks.0.attn.hook_pattern", "hook_audio_embeds"]
    _, cache = omni.run_with_cache(batch, names_filter=names)
    assert cache[names[0]].shape == (2, 128, 950) and torch.all(cache[names[0]][1, :, 200:] == 0)
    resid, pattern = cache[names[1]], cache[names[2]]
    assert resid.shape[:2] == (2, 124) and torch.all(resid[1, 26:] == 0), "the 2 s clip's 26 tokens, then padding"
    assert pattern.shape[:2] == (2, 2) and pattern.shape[-1] == 104, "windows of 8 chunks x 13 tokens"
    torch.testing.assert_close(pattern[0, 1, :, :20].sum(-1), torch.ones(pattern.shape[2], 20))  # the 20-token last window
    inputs = batch.inputs
    flat = omni.hf_model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"]).pooler_output
    assert torch.equal(torch.cat([cache[names[3]][0, :124], cache[names[3]][1, :26]]), flat)


def test_placeholders_that_split_clips_wrongly_are_refused(omni):
    batch = omni.prepare([[noise(1.0), noise(2.0, 1)]], "hi", sampling_rate=16000)
    ids = batch.input_ids.clone()
    second = batch.audio_spans[0][1]  # the second clip's first span
    ids[0, second.start - 2] = ids[0, second.start]  # <|audio_end|> of clip 0 becomes a placeholder...
    ids[0, second.stop - 1] = omni.tokenizer.convert_tokens_to_ids("hi")  # ...and clip 1 loses one: same total
    with pytest.raises(ValueError, match="does not match whole clips"):
        omni({**batch.inputs, "input_ids": ids})
    raw = "<|audio_start|><|audio_pad|><|audio_end|>hi"
    with pytest.raises(ValueError, match=re.escape("holds 1 <|audio_pad|> placeholder(s) for 2 clip(s)")):
        omni.prepare([[noise(1.0), noise(1.0, 1)]], raw, sampling_rate=16000, raw_prompt=True)


def test_neuron_studies_take_the_encoder_and_refuse_decoder_sites_of_a_moe(omni, batch):
    stats = ll.neurons.NeuronStats.for_model(omni, ["a", "b"], site="audio.mlp.hook_post")
    stats.accumulate(omni, batch, ["a", "b"])
    assert stats.d_mlp == omni.cfg.audio_d_mlp
    decoder = ll.neurons.NeuronStats.for_model(omni, ["a", "b"], site="mlp.hook_gate")
    with pytest.raises(ValueError, match="mixtures of experts.*audio.mlp.hook_post"):
        decoder.accumulate(omni, batch, ["a", "b"])


def test_loads_by_name_and_lists_its_hooks(capsys):
    model = ll.HookedLALM.from_pretrained("tiny-qwen3-omni-thinker")
    cfg, adapter = model.cfg, model.adapter
    assert (cfg.arch, cfg.audio_tokens_per_second, cfg.d_mlp) == (FAMILY, 13, adapter.d_expert)
    assert adapter.moe_layers == list(range(cfg.n_layers)) and adapter.projector is adapter.audio_tower.proj2
    assert main(["hooks", "tiny-qwen3-omni-thinker", "--seconds", "1"]) == 0
    printed = capsys.readouterr().out
    assert "blocks.1.mlp.hook_router_weights" in printed and "blocks.1.mlp.experts.7.hook_post" in printed


def test_a_full_qwen3_omni_checkpoint_loads_only_the_thinker(tmp_path_factory, omni, caplog):
    path = save_tiny_qwen3_omni(tmp_path_factory.mktemp("qwen3_omni_full"))
    with caplog.at_level(logging.WARNING, logger="lalm_lens"):
        model = ll.HookedLALM.from_pretrained(path)
    assert "loading only its thinker" in caplog.text and model.cfg.arch == FAMILY
    full = Qwen3OmniMoeForConditionalGeneration.from_pretrained(path).eval()
    batch = model.prepare(noise(1.5), "hi", sampling_rate=16000)
    assert torch.equal(model(batch), full.thinker(**batch.inputs).logits)
    with pytest.raises(ValueError, match=re.escape("HookedLALM.from_hf(model.thinker, processor)")):
        ll.HookedLALM.from_hf(full, model.processor)
