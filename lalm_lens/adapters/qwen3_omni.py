"""Qwen3-Omni thinker (30B-A3B): Qwen3-Omni's audio encoder (as Qwen3-ASR's), and a Qwen3-MoE decoder.

Encoder. The same encoder as Qwen3-ASR (:mod:`.qwen3_asr`): each clip's
log-mel is cut into 1 s chunks, downsampled by 8 with three stride-2
convolutions (**13 tokens per full second**, token ``j`` of a chunk covering
80 ms), kept packed as ``[total_tokens, d]`` without padding, attended inside
8 s windows (104 tokens), then ``ln_post`` and a two-layer GELU projector
(``audio_tower.proj1`` / ``proj2``, inside the tower). The thinker takes
Whisper features padded to the longest clip of the batch and no cap on a
clip's length (the decoder's positions are the limit), several clips per
prompt, placeholder ``<|audio_pad|>`` between ``<|audio_start|>`` and
``<|audio_end|>``. The ``audio.*`` hooks show ``[clip, token, ...]``
zero-padded to the longest clip (:class:`~.qwen2_5_omni.PackedTap`);
``audio.hook_features`` is ``[clip, mel, mel_frame]`` (real frames only);
``audio.blocks.{i}.attn.hook_pattern`` is ``[clip, window, head, q, k]``;
``audio.hook_out`` is ``ln_post``'s output and ``hook_audio_embeds`` the
projector's (``proj2``). Spans: one :class:`~lalm_lens.spans.AudioSpan` per
1 s chunk of each clip (``offset_s`` = the chunk's start, 0.08 s per token).

Decoder. Qwen3 attention (per-head RMSNorm on queries and keys; ``hook_q`` /
``hook_k`` are before that norm and RoPE) with interleaved multimodal RoPE,
and a sparse mixture-of-experts MLP in every layer (dense only in layers
listed in ``mlp_only_layers``, which keep the dense ``mlp.hook_pre/gate/post``).
The MoE block (``layer.mlp``) has a router ``gate`` (logits ``[token, expert]``
-> float32 softmax -> top-k -> renormalised when ``norm_topk_prob``) and
fused experts: one ``gate_up_proj [expert, 2 * d_expert, d_model]`` and one
``down_proj [expert, d_model, d_expert]`` parameter (transformers >= 5 stores
experts as 3-D tensors run by a grouped-GEMM kernel: no module per expert).
There is no shared expert. The hooks of an MoE layer ``i`` are:

================================================  =====================================================================
``blocks.{i}.mlp.hook_router_logits``              batch, pos, expert: router logits; an edit re-routes (softmax, top-k,
                                                   renormalise, as the model does)
``blocks.{i}.mlp.hook_router_weights``             batch, pos, expert: the weight of each expert's output in the sum
                                                   (renormalised top-k probability; 0 for experts not chosen).
                                                   Chosen experts are its non-zero entries. Set an entry to 0 to drop
                                                   that expert there; make one non-zero to run an expert not chosen
``blocks.{i}.mlp.experts.{e}.hook_pre``            batch, pos, d_expert: expert ``e``'s gate projection
``blocks.{i}.mlp.experts.{e}.hook_gate``           batch, pos, d_expert: act(gate)
``blocks.{i}.mlp.experts.{e}.hook_post``           batch, pos, d_expert: act(gate) * up, the input of ``down_proj[e]``
``blocks.{i}.hook_mlp_out``                        batch, pos, d_model: the MoE block's output
================================================  =====================================================================

Expert hooks are zero at positions not routed to the expert, and an edit
there has no effect (the expert does not run there). Zeroing neuron ``n``
through ``experts.{e}.hook_post`` equals zeroing ``down_proj[e, :, n]`` in
the HF model. Nothing costs anything while unused: the router and expert
hooks install PyTorch hooks on ``gate`` and ``experts`` only while one of
their points has a user hook. Then the activations of the hooked experts
are computed beside the model's kernel from the rows routed to them, with
HF's eager expert code (reading them leaves the output bit-identical); when
a hook edits one (or records gradients), the block's output is recomputed
with that eager loop (one expert at a time), so an edit equals the same
weight edit on HF run with ``experts_implementation="eager"`` bit for bit,
and on the default grouped-GEMM kernel up to float rounding. Caching every
expert of a layer costs ``n_experts`` times the memory of a dense MLP's
hooks: select the experts you read with ``names_filter``. Experts have names
of their own (as TransformerLens's Mixtral experts) rather than one tensor
with an expert axis, so that reading or editing one expert computes and keeps
that expert only (an expert axis would materialise 128 x 768 values per
token and layer at the released size). The price is the number of hook
points: 48 x 128 x 3 expert points in the released model.

Loading. A full Qwen3-Omni checkpoint (``model_type`` ``qwen3_omni_moe``:
thinker, talker, code2wav) loads only its thinker, with a logged note; a
thinker-only checkpoint (``qwen3_omni_moe_thinker``) loads directly. Where
torchvision is missing, ``Qwen3OmniMoeProcessor`` is built with a stand-in
video processor that refuses videos (audio, text and images work).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import nn
from transformers import Qwen3OmniMoeProcessor, Qwen3OmniMoeThinkerForConditionalGeneration
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
    Qwen3OmniMoeThinkerTextSparseMoeBlock,
    _get_feat_extract_output_lengths,
)

from ..attention import shared_query_rows
from ..config import LALMConfig
from ..hook_points import LazyHookPoint
from ..spans import AudioSpan
from .base import HookBuilder, HookContainer, HookFrames, place
from .qwen2_5_omni import AcceptsNoVideo, OmniThinker, Packing, omni_processor_without_video
from .qwen3_asr import CHUNK_TOKENS, Qwen3ASRAdapter


FULL_MODEL_TYPE = "qwen3_omni_moe"


class Qwen3OmniPacking(Packing):
    """Per-clip lengths of the encoder's packed tensors, read from the tower's ``feature_lens`` (frames = tokens here)."""

    def record(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        lens = kwargs["feature_lens"] if "feature_lens" in kwargs else args[1]
        self.mel = [int(n) for n in lens.tolist()]
        self.frames = self.tokens = [int(_get_feat_extract_output_lengths(n, self.tower.n_window)) for n in self.mel]


def _edited(point: LazyHookPoint, view: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Run ``point`` on ``view`` (a tensor computed beside the model); say whether a hook replaced or changed it.

    Hooks that declare they only read (``query_rows``, as the caching hooks do)
    never count; otherwise an in-place change counts too, and any change where
    it cannot be seen (inference tensors keep no version). Backward hooks count:
    the gradient has to flow through the hooked tensor.
    """
    readers_only = shared_query_rows(point) is not None
    version = None if view.is_inference() else view._version
    new = point.run(view)
    if readers_only:
        return new, False
    changed = new is not view or version is None or version != view._version
    return new, changed or bool(point.bwd_hooks)


def route(router: nn.Module, logits: Float[torch.Tensor, "token expert"]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weights, experts)`` of the top-k routing from ``logits``, as the Qwen3-MoE router computes them."""
    probs = torch.nn.functional.softmax(logits, dtype=torch.float, dim=-1)
    weights, experts = torch.topk(probs, router.top_k, dim=-1)
    if router.norm_topk_prob:
        weights /= weights.sum(dim=-1, keepdim=True)
    return weights.to(logits.dtype), experts


def dense_weights(
    weights: Float[torch.Tensor, "token k"], experts: Int[torch.Tensor, "token k"], n_experts: int
) -> Float[torch.Tensor, "token expert"]:
    """The routing as one weight per expert (zero for experts not chosen)."""
    return weights.new_zeros(weights.shape[0], n_experts).scatter(1, experts, weights)


def sparse_weights(
    dense: Float[torch.Tensor, "token expert"], experts: Int[torch.Tensor, "token k"]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weights, experts)`` slots for a per-expert weight tensor: the chosen ``experts`` first, in their slots
    (weight possibly edited to 0), then any expert made non-zero, padded with zero-weight slots."""
    weights = dense.gather(1, experts)
    extra = dense != 0
    extra.scatter_(1, experts, False)
    n_extra = int(extra.sum(1).max())
    if n_extra == 0:
        return weights, experts
    added = extra.to(dense.dtype).topk(n_extra, dim=1).indices
    added_weights = dense.gather(1, added) * extra.gather(1, added)
    return torch.cat([weights, added_weights], 1), torch.cat([experts, added], 1)


class Expert(HookContainer):
    """``blocks.{i}.mlp.experts.{e}``: the hook points of one expert and its weights (views of the fused tensors).

    ``W_gate`` / ``W_in`` ``[d_model, d_expert]`` (gate and up projections), ``W_out [d_expert, d_model]``.
    """

    SITES = ("hook_pre", "hook_gate", "hook_post")

    def __init__(self, experts: nn.Module, index: int, on_change):
        """``on_change(index, point)`` is called when ``point`` gains its first hook or loses its last."""
        super().__init__()
        object.__setattr__(self, "experts", experts)
        self.index = index
        for site in self.SITES:
            point = LazyHookPoint()
            point.on_change = partial(on_change, index, point)
            self.add_module(site, point)

    W_gate = property(lambda self: self.experts.gate_up_proj[self.index].chunk(2, dim=0)[0].T)
    W_in = property(lambda self: self.experts.gate_up_proj[self.index].chunk(2, dim=0)[1].T)
    W_out = property(lambda self: self.experts.down_proj[self.index].T)


class MoEHooks:
    """The router and expert hook points of one sparse MoE block, and the PyTorch hooks that feed them while used.

    A pre-hook on the block records ``[batch, pos]``; a hook on ``gate``
    serves the router points and may change the routing it returns; a hook
    on ``experts`` computes the hooked experts' activations beside the
    kernel and, after an edit, recomputes the block's output with HF's eager
    expert loop.
    """

    def __init__(self, block: nn.Module):
        self.block, self.router, self.experts = block, block.gate, block.experts
        self.router_logits = LazyHookPoint(self.sync)
        self.router_weights = LazyHookPoint(self.sync)
        self.expert_points = [Expert(self.experts, e, self._expert_changed) for e in range(self.experts.num_experts)]
        self.active_points: set[LazyHookPoint] = set()
        self.active_experts: set[int] = set()
        self.handles: dict[str, Any] = {}
        self.shape: tuple[int, int] = (0, 0)

    def place(self, root: nn.Module, prefix: str) -> None:
        """Put the points under ``{prefix}.hook_router_logits``, ``...hook_router_weights``, ``...experts.{e}.*``."""
        place(root, f"{prefix}.hook_router_logits", self.router_logits)
        place(root, f"{prefix}.hook_router_weights", self.router_weights)
        for e, expert in enumerate(self.expert_points):
            place(root, f"{prefix}.experts.{e}", expert)

    def _expert_changed(self, e: int, point: LazyHookPoint) -> None:
        """Keep the set of experts with a hooked point, so a forward finds the hooked experts without scanning them all."""
        if point.active == (point in self.active_points):
            return
        if point.active:
            self.active_points.add(point)
        else:
            self.active_points.discard(point)
        expert = self.expert_points[e]
        if any(getattr(expert, site) in self.active_points for site in Expert.SITES):
            self.active_experts.add(e)
        else:
            self.active_experts.discard(e)
        self.sync()

    def sync(self) -> None:
        """Install the PyTorch hooks the used points need (block, router, experts), remove the others."""
        wanted = {"router": self.router_logits.active or self.router_weights.active, "experts": bool(self.active_experts)}
        wanted["block"] = any(wanted.values())
        installers = {
            "block": lambda: self.block.register_forward_pre_hook(self._record_shape),
            "router": lambda: self.router.register_forward_hook(self._on_router),
            "experts": lambda: self.experts.register_forward_hook(self._on_experts, with_kwargs=True),
        }
        for key, on in wanted.items():
            if on and key not in self.handles:
                self.handles[key] = installers[key]()
            elif not on and key in self.handles:
                self.handles.pop(key).remove()

    def _record_shape(self, module: nn.Module, args: tuple) -> None:
        self.shape = tuple(args[0].shape[:2])

    def _view(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.view(*self.shape, flat.shape[-1])

    def _on_router(self, module: nn.Module, args: tuple, output: tuple) -> tuple | None:
        logits, weights, experts = output
        changed = False
        if self.router_logits.active:
            new, edited = _edited(self.router_logits, self._view(logits))
            if edited:
                logits = new.reshape(logits.shape)
                weights, experts = route(module, logits)
                changed = True
        if self.router_weights.active:
            dense = dense_weights(weights, experts, module.num_experts)
            new, edited = _edited(self.router_weights, self._view(dense))
            if edited:
                weights, experts = sparse_weights(new.reshape(dense.shape), experts)
                changed = True
        return (logits, weights, experts) if changed else None

    def _on_experts(self, module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor | None:
        names = ("hidden_states", "top_k_index", "top_k_weights")
        hidden, index, weights = (*args, *(kwargs[n] for n in names[len(args) :]))
        mask = torch.nn.functional.one_hot(index, num_classes=module.num_experts + 1).permute(2, 1, 0)
        posts, edited = {}, False
        for e in sorted(self.active_experts):
            posts[e], changed = self._run_expert(module, self.expert_points[e], hidden, torch.where(mask[e]))
            edited |= changed
        return self._recompute(module, hidden, mask, weights, posts) if edited else None

    def _scatter(self, rows: torch.Tensor, values: torch.Tensor, n_tokens: int) -> torch.Tensor:
        return self._view(values.new_zeros(n_tokens, values.shape[-1]).index_copy(0, rows, values))

    def _run_expert(self, module: nn.Module, expert: Expert, hidden: torch.Tensor, rows) -> tuple[torch.Tensor, bool]:
        """Expert ``e``'s ``act(gate) * up`` on its routed rows, through its hook points; and whether a hook edited."""
        _, tokens = rows
        edited = False

        def through(point: LazyHookPoint, values: torch.Tensor) -> torch.Tensor:
            nonlocal edited
            if not point.active:
                return values
            new, changed = _edited(point, self._scatter(tokens, values, hidden.shape[0]))
            edited |= changed
            return new.flatten(0, 1)[tokens] if changed else values

        gate, up = nn.functional.linear(hidden[tokens], module.gate_up_proj[expert.index]).chunk(2, dim=-1)
        post = through(expert.hook_post, through(expert.hook_gate, module.act_fn(through(expert.hook_pre, gate))) * up)
        return post, edited

    @staticmethod
    def _recompute(module: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor, posts: dict) -> torch.Tensor:
        """The experts' output by HF's eager loop, with the hooked experts' ``act(gate) * up`` as the hooks left it."""
        final = torch.zeros_like(hidden)
        hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for e in hit.flatten().tolist():
            if e == module.num_experts:
                continue
            slot, tokens = torch.where(mask[e])
            if e in posts:
                post = posts[e]
            else:
                gate, up = nn.functional.linear(hidden[tokens], module.gate_up_proj[e]).chunk(2, dim=-1)
                post = module.act_fn(gate) * up
            out = nn.functional.linear(post, module.down_proj[e]) * weights[tokens, slot, None]
            final.index_add_(0, tokens, out.to(final.dtype))
        return final


class _Qwen3OmniProcessorWithoutVideo(AcceptsNoVideo, Qwen3OmniMoeProcessor):
    """``Qwen3OmniMoeProcessor`` that accepts the video-less stand-in."""


def qwen3_omni_processor_without_video(path, **kwargs) -> Qwen3OmniMoeProcessor:
    """A ``Qwen3OmniMoeProcessor`` for audio, text and images, built without torchvision (as
    :func:`~.qwen2_5_omni.omni_processor_without_video`: parts not given load from ``path``)."""
    return omni_processor_without_video(path, processor_class=_Qwen3OmniProcessorWithoutVideo, **kwargs)


class Qwen3OmniAdapter(OmniThinker, Qwen3ASRAdapter):
    hf_class = Qwen3OmniMoeThinkerForConditionalGeneration
    model_types = ("qwen3_omni_moe_thinker", FULL_MODEL_TYPE)
    arch = "qwen3_omni_moe_thinker"
    placeholder = "<|audio_pad|>"
    feature_mask_key = "feature_attention_mask"
    clips_per_prompt_max = None
    full_model_type, family, speech_decoder = FULL_MODEL_TYPE, "Qwen3-Omni", "code2wav"
    processor_without_video = staticmethod(qwen3_omni_processor_without_video)

    # -- where things are -------------------------------------------------
    @property
    def projector(self) -> nn.Module:
        """The projector's last layer (``proj1 -> GELU -> proj2`` live inside the tower)."""
        return self.audio_tower.proj2

    @property
    def moe_layers(self) -> list[int]:
        """Decoder layers whose MLP is a sparse mixture of experts."""
        return [i for i, layer in enumerate(self.language_model.layers) if isinstance(layer.mlp, Qwen3OmniMoeThinkerTextSparseMoeBlock)]

    @property
    def n_experts(self) -> int:
        return self.language_model.config.num_experts

    @property
    def experts_per_token(self) -> int:
        return self.language_model.config.num_experts_per_tok

    @property
    def d_expert(self) -> int:
        """Neurons per expert (``moe_intermediate_size``)."""
        return self.language_model.config.moe_intermediate_size

    def config(self, name: str = "") -> LALMConfig:
        """``d_mlp`` is the neurons of one expert (as TransformerLens's MoE configs), where the decoder has experts."""
        cfg = super().config(name)
        return replace(cfg, d_mlp=self.d_expert) if self.moe_layers else cfg

    # -- hook points ------------------------------------------------------
    def build_hooks(self, root: nn.Module) -> None:
        hooks = HookBuilder(root)
        self.encoder_hooks(hooks, Qwen3OmniPacking(self.audio_tower), packed_features=True)
        hooks.point("hook_embed", self.language_model, "input", arg="inputs_embeds")
        self.moe: dict[int, MoEHooks] = {}
        for i, layer in enumerate(self.language_model.layers):
            self.decoder_layer_hooks(hooks, i, layer)
        hooks.final_norm(self.language_model.norm)

    def decoder_layer_hooks(self, hooks: HookBuilder, i: int, layer: nn.Module) -> None:
        """``blocks.{i}.*``: the MoE sites on a sparse layer (see the module docstring), the dense ones otherwise."""
        p = f"blocks.{i}"
        hooks.point(f"{p}.hook_resid_pre", layer, "input", arg="hidden_states")
        hooks.attention(p, layer.self_attn)
        hooks.point(f"{p}.hook_attn_out", layer.self_attn, "output")
        hooks.point(f"{p}.hook_resid_mid", layer.post_attention_layernorm, "input", in_place=True)
        if isinstance(layer.mlp, Qwen3OmniMoeThinkerTextSparseMoeBlock):
            self.moe[i] = MoEHooks(layer.mlp)
            self.moe[i].place(hooks.root, f"{p}.mlp")
        else:
            hooks.gated_mlp(p, layer.mlp)
        hooks.point(f"{p}.hook_mlp_out", layer.mlp, "output")
        hooks.point(f"{p}.hook_resid_post", layer, "output")

    def family_hook_shapes(self, inputs: dict) -> dict[str, tuple[int, ...] | None]:
        """Shapes of the MoE names, and of the dense MLP names (None where a layer has experts instead), for these inputs."""
        batch, pos = inputs["input_ids"].shape
        moe, shapes = set(self.moe_layers), {}
        for i in range(len(self.language_model.layers)):
            p = f"blocks.{i}.mlp"
            dense = None if i in moe else (batch, pos, self.language_model.config.intermediate_size)
            shapes |= {f"{p}.{site}": dense for site in ("hook_pre", "hook_gate", "hook_post")}
            if i in moe:
                shapes |= {f"{p}.{site}": (batch, pos, self.n_experts) for site in ("hook_router_logits", "hook_router_weights")}
                shapes |= {
                    f"{p}.experts.{e}.{site}": (batch, pos, self.d_expert)
                    for e in range(self.n_experts) for site in Expert.SITES
                }
        return shapes

    # -- inputs -----------------------------------------------------------
    def audio_hook_frames(self, inputs: dict) -> HookFrames:
        rows = self.encoder_rows(inputs)
        tokens = max(n for _, n in rows)
        windows = self.attention_windows(inputs)
        return HookFrames(max(m for m, _ in rows), tokens, max(max(w) for w in windows), tokens, chunks=max(map(len, windows)))

    def audio_spans(self, inputs: dict, clip_samples: list[list[int]]) -> list[list[AudioSpan]]:
        """One span per 1 s convolution chunk of each clip (13 tokens of 0.08 s; fewer in a last partial chunk)."""
        spans = []
        for clips in self.clip_placeholders(inputs, clip_samples):
            example_spans = []
            for clip, (row, run) in enumerate(clips):
                for second, start in enumerate(range(0, len(run), CHUNK_TOKENS)):
                    stop = min(start + CHUNK_TOKENS, len(run))
                    example_spans.append(AudioSpan(run[start], run[stop - 1] + 1, 8 / 100, float(second), clip, row, 1))
            spans.append(example_spans)
        return spans
