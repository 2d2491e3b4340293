"""What an adapter states about a model family, and the shared Whisper-encoder + Qwen2-decoder wiring.

An adapter says where the audio encoder, projector and decoder live in the HF
module tree, which token is the audio placeholder, how fast audio tokens come,
how audio is windowed, and how to turn processor output into
:class:`~lalm_lens.spans.AudioSpan` s. Adding a family means adding one such
file and its tiny-checkpoint test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, NamedTuple

import einops
import torch
from jaxtyping import Float
from torch import nn

from ..config import LALMConfig
from ..hook_points import LazyHookPoint, ReadTap, Tap, ViewTap
from ..spans import AudioSpan


class HookContainer(nn.Module):
    """A named node of the hook tree (``blocks``, ``blocks.3``, ``blocks.3.mlp``...); ``container[3]`` works."""

    def __getitem__(self, key: int | str) -> nn.Module:
        return getattr(self, str(key))

    def __len__(self) -> int:
        return len(self._modules)


class FinalNorm(HookContainer):
    """``model.ln_final``: the decoder's final RMSNorm, callable as in TransformerLens (its weight included).

    It holds ``hook_scale`` (``[batch, pos, 1]``, the RMS the norm divides by,
    read-only) and ``hook_normalized`` (the norm's output, what the unembedding
    reads). The HF module stays in the HF tree; this only refers to it.
    """

    def __init__(self, norm: nn.Module):
        super().__init__()
        object.__setattr__(self, "norm", norm)

    @property
    def weight(self) -> torch.Tensor:
        return self.norm.weight

    @property
    def eps(self) -> float:
        return self.norm.variance_epsilon

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """``sqrt(mean(x^2) + eps)`` over the last axis, ``[..., 1]``, as the norm computes it (in float32)."""
        return x.float().pow(2).mean(-1, keepdim=True).add(self.eps).sqrt().to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class DecoderAttention(HookContainer):
    """``blocks.{i}.attn``: the hook points of one decoder attention layer, and its weights in TransformerLens layout.

    ``W_Q [head, d_model, d_head]``, ``W_K`` / ``W_V [kv_head, d_model, d_head]``
    (grouped-query attention keeps its key/value heads), ``W_O [head, d_head, d_model]``;
    biases the projections lack are zeros. Views of the HF weights, not copies.
    """

    output_scale = 1.0
    """The factor between ``o_proj``'s output and ``hook_attn_out`` (Granite: its ``residual_multiplier``)."""

    def __init__(self, attention: nn.Module):
        super().__init__()
        object.__setattr__(self, "attention", attention)

    def _in(self, proj: nn.Module) -> torch.Tensor:
        return einops.rearrange(proj.weight, "(h d) m -> h m d", d=self.attention.head_dim)

    def _bias(self, proj: nn.Module, per_head: bool = True) -> torch.Tensor:
        bias = proj.bias if proj.bias is not None else proj.weight.new_zeros(proj.out_features)
        return bias.unflatten(-1, (-1, self.attention.head_dim)) if per_head else bias

    W_Q = property(lambda self: self._in(self.attention.q_proj))
    W_K = property(lambda self: self._in(self.attention.k_proj))
    W_V = property(lambda self: self._in(self.attention.v_proj))
    W_O = property(lambda self: einops.rearrange(self.attention.o_proj.weight, "m (h d) -> h d m", d=self.attention.head_dim))
    b_Q = property(lambda self: self._bias(self.attention.q_proj))
    b_K = property(lambda self: self._bias(self.attention.k_proj))
    b_V = property(lambda self: self._bias(self.attention.v_proj))
    b_O = property(lambda self: self._bias(self.attention.o_proj, per_head=False))


def place(root: nn.Module, name: str, module: nn.Module) -> None:
    """Attach ``module`` under ``root`` at the dotted ``name``, creating containers on the way."""
    *path, leaf = name.split(".")
    node = root
    for part in path:
        if part not in node._modules:
            node.add_module(part, HookContainer())
        node = node._modules[part]
    node.add_module(leaf, module)


class HookBuilder:
    """Creates hook points under ``root``; points on the same side of the same module share one :class:`Tap`."""

    def __init__(self, root: nn.Module):
        self.root = root
        self.taps: dict[tuple[int, str, bool], Tap] = {}

    def point(self, name: str, module: nn.Module, where: str, arg: str | None = None, in_place: bool = False) -> None:
        """A hook point ``name`` fed from ``module``'s input or output (see :class:`Tap`)."""
        key = (id(module), where, in_place)
        if key not in self.taps:
            self.taps[key] = Tap(module, where, arg, in_place)
        place(self.root, name, self.taps[key].new_point())

    def view_point(self, name: str, module: nn.Module, where: str, view, unview, arg: str | None = None) -> None:
        """A hook point ``name`` that sees ``view(tensor)`` of ``module``'s input or output (see :class:`ViewTap`)."""
        key = (id(module), where, "view", id(view))
        if key not in self.taps:
            self.taps[key] = ViewTap(module, where, view, unview, arg)
        place(self.root, name, self.taps[key].new_point())

    def head_point(self, name: str, module: nn.Module, where: str, head_dim: int) -> None:
        """A hook point ``name`` that sees the last axis of a fused projection split into heads, ``[..., head, head_dim]``."""
        self.view_point(
            name, module, where, view=lambda t: t.unflatten(-1, (-1, head_dim)), unview=lambda new, t: new.flatten(-2)
        )

    def final_norm(self, norm: nn.Module, prefix: str = "ln_final", kind: type[FinalNorm] = FinalNorm) -> None:
        """``{prefix}`` as a ``kind`` (a :class:`FinalNorm`) with ``hook_scale`` (read from the norm's input) and
        ``hook_normalized``."""
        final = kind(norm)
        place(self.root, prefix, final)
        place(self.root, f"{prefix}.hook_scale", ReadTap(norm, "input", final.scale).new_point())
        self.point(f"{prefix}.hook_normalized", norm, "output")

    def attention(
        self, prefix: str, attention: nn.Module, weights: DecoderAttention | None = None,
        sites: tuple[str, ...] = ("q", "k", "v"),
    ) -> None:
        """``{prefix}.attn`` (``weights``, by default a :class:`DecoderAttention` of ``attention``) and its
        ``hook_{site}`` (``[batch, pos, head, d_head]``, from ``{site}_proj``), ``hook_pattern`` and ``hook_z``
        points, on a Qwen2-style attention module (``q_proj`` ... ``o_proj``, ``head_dim``)."""
        place(self.root, f"{prefix}.attn", weights if weights is not None else DecoderAttention(attention))
        for site in sites:
            self.head_point(f"{prefix}.attn.hook_{site}", getattr(attention, f"{site}_proj"), "output", attention.head_dim)
        self.pattern(f"{prefix}.attn.hook_pattern", attention)
        self.head_point(f"{prefix}.attn.hook_z", attention.o_proj, "input", attention.head_dim)

    def gated_mlp(self, prefix: str, mlp: nn.Module) -> None:
        """``{prefix}.mlp.hook_pre`` / ``hook_gate`` / ``hook_post`` (``[batch, pos, d_mlp]``) on a gated MLP
        (``gate_proj``, ``act_fn``, ``down_proj``)."""
        self.point(f"{prefix}.mlp.hook_pre", mlp.gate_proj, "output")
        self.point(f"{prefix}.mlp.hook_gate", mlp.act_fn, "output")
        self.point(f"{prefix}.mlp.hook_post", mlp.down_proj, "input")

    def pattern(self, name: str, attention: nn.Module) -> None:
        """A pattern point, read by the registered attention function from ``attention.__dict__``."""
        claim_attention(attention)
        point = LazyHookPoint()
        attention.__dict__["_lalm_pattern"] = point
        place(self.root, name, point)


def scaled(factor: float) -> dict:
    """``view`` / ``unview`` for :meth:`HookBuilder.view_point`: the point shows ``factor`` times the HF tensor (an
    edit is divided back)."""
    return dict(view=lambda t: t * factor, unview=lambda new, t: (new / factor).to(t.dtype))


def transposed() -> dict:
    """``view`` / ``unview`` for :meth:`HookBuilder.view_point`: a channel-first ``[clip, channel, frame]`` tensor
    shown as ``[clip, frame, channel]``."""
    return dict(view=lambda t: t.transpose(1, 2), unview=lambda new, t: new.transpose(1, 2))


def read_model_type(path: str, **files) -> str | None:
    """The ``model_type`` in a checkpoint's ``config.json`` (a folder or the local hub cache), without building a config."""
    from transformers.utils import cached_file

    return json.loads(Path(cached_file(path, "config.json", **files)).read_text()).get("model_type")


def claim_attention(attention: nn.Module) -> None:
    """Refuse to hook an attention module that another HookedLALM already hooks (its pattern hooks would go silent)."""
    if "_lalm_pattern" in attention.__dict__:
        raise ValueError(
            "this HF model is already wrapped by a HookedLALM; use that wrapper, or load the model again to wrap it anew"
        )


def encoder_frames(n_frames: torch.Tensor | int) -> torch.Tensor | int:
    """Encoder frames from ``n_frames`` mel frames (Whisper's second conv has stride 2)."""
    return (n_frames - 1) // 2 + 1


def tokens_after_whisper(n_frames: torch.Tensor | int) -> torch.Tensor | int:
    """Audio tokens from ``n_frames`` mel frames: conv stride 2, then average pooling by 2."""
    return (encoder_frames(n_frames) - 2) // 2 + 1


class DecoderReached(Exception):
    """Stops a forward at the decoder's input (see :meth:`Adapter.decoder_call`)."""


class HookFrames(NamedTuple):
    """Lengths of the frame axes of ``audio.hook_features``, of the encoder blocks' hooks, of their
    ``attn.hook_pattern`` (padding frames past the longest clip left out) and of ``audio.hook_out``.

    ``chunks`` is the length of the encoder pattern's chunk axis where the
    encoder attends in chunks (its pattern is then ``[clip, chunk, head, q, k]``
    with ``q = k = pattern``), None where it attends over the whole clip.
    """

    features: int
    encoder: int
    pattern: int
    out: int
    chunks: int | None = None


class Adapter:
    """Base adapter for models with a Whisper-style audio encoder and a Qwen2-style decoder.

    Subclasses set the class attributes and may override the module paths.
    """

    model_types: tuple[str, ...] = ()
    arch: str = ""
    placeholder: str = ""
    feature_mask_key: str = ""
    tokens_per_second: float = 25.0
    frames_per_token: int = 2
    clips_per_prompt_max: int | None = None
    hf_class: type | None = None

    @classmethod
    def load(cls, path, **kwargs) -> nn.Module:
        """Load the family's HF model from ``path`` (``kwargs`` go to ``from_pretrained``)."""
        return cls.hf_class.from_pretrained(path, **kwargs)

    @classmethod
    def load_processor(cls, path, **kwargs) -> Any:
        """Load the family's processor from ``path``."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, **kwargs)

    def __init__(self, hf_model: nn.Module, processor: Any):
        self.hf_model = hf_model
        self.processor = processor

    # -- where things are -------------------------------------------------
    @property
    def audio_tower(self) -> nn.Module:
        return self.hf_model.model.audio_tower

    @property
    def projector(self) -> nn.Module:
        return self.hf_model.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.hf_model.model.language_model

    @property
    def audio_token_id(self) -> int:
        return self.hf_model.config.audio_token_id

    @property
    def attention_configs(self) -> list:
        """The configs whose ``_attn_implementation`` the attention modules read."""
        return [self.audio_tower.config, self.language_model.config]

    # -- shapes and rates -------------------------------------------------
    @property
    def max_audio_seconds(self) -> float:
        raise NotImplementedError

    @property
    def window_seconds(self) -> float | None:
        return None

    @property
    def sampling_rate(self) -> int:
        return self.processor.feature_extractor.sampling_rate

    def config(self, name: str = "") -> LALMConfig:
        return self.make_config(name, self.language_model.config, self.audio_tower.config, len(self.audio_tower.layers))

    def make_config(self, name: str, text: Any, audio: Any | None, audio_n_layers: int) -> LALMConfig:
        """``model.cfg`` from a Qwen2-style decoder config and a Whisper-style encoder config (None: no encoder)."""
        return LALMConfig(
            arch=self.arch,
            n_layers=text.num_hidden_layers,
            d_model=text.hidden_size,
            d_mlp=text.intermediate_size,
            n_heads=text.num_attention_heads,
            n_kv_heads=text.num_key_value_heads,
            d_head=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
            d_vocab=self.hf_model.get_output_embeddings().weight.shape[0],
            audio_n_layers=audio_n_layers,
            audio_d_model=audio.d_model if audio is not None else 0,
            audio_d_mlp=audio.encoder_ffn_dim if audio is not None else 0,
            audio_n_heads=audio.encoder_attention_heads if audio is not None else 0,
            audio_tokens_per_second=self.tokens_per_second,
            audio_frames_per_second=self.tokens_per_second * self.frames_per_token,
            sampling_rate=self.sampling_rate,
            max_audio_seconds=self.max_audio_seconds,
            window_seconds=self.window_seconds,
            name=name,
            n_ctx=getattr(text, "max_position_embeddings", None),
        )

    # -- hook points ------------------------------------------------------
    def build_hooks(self, root: nn.Module) -> None:
        """Create every hook point of the vocabulary under ``root``, each fed by a tap on an HF module."""
        hooks = HookBuilder(root)
        hooks.point("audio.hook_features", self.audio_tower, "input", arg="input_features")
        self.encoder_block_hooks(hooks, self.audio_tower.layers)
        hooks.point("audio.hook_out", self.projector, "input")
        hooks.point("hook_audio_embeds", self.projector, "output")
        hooks.point("hook_embed", self.language_model, "input", arg="inputs_embeds")
        self.decoder_block_hooks(hooks, self.language_model.layers)
        hooks.final_norm(self.language_model.norm)

    @staticmethod
    def encoder_block_hooks(hooks: "HookBuilder", layers, prefix: str = "audio.blocks") -> None:
        """``{prefix}.{i}.*`` on Whisper-style encoder layers (``self_attn``, ``fc1``, ``fc2``)."""
        for i, layer in enumerate(layers):
            p = f"{prefix}.{i}"
            hooks.point(f"{p}.hook_resid_pre", layer, "input", arg="hidden_states")
            hooks.pattern(f"{p}.attn.hook_pattern", layer.self_attn)
            hooks.point(f"{p}.hook_attn_out", layer.self_attn, "output")
            hooks.point(f"{p}.mlp.hook_post", layer.fc2, "input")
            hooks.point(f"{p}.hook_mlp_out", layer.fc2, "output")
            hooks.point(f"{p}.hook_resid_post", layer, "output")

    @staticmethod
    def decoder_block_hooks(hooks: "HookBuilder", layers, prefix: str = "blocks") -> None:
        """``{prefix}.{i}.*`` on Qwen2-style decoder layers (gated MLP with ``gate_proj``/``act_fn``/``down_proj``)."""
        for i, layer in enumerate(layers):
            p = f"{prefix}.{i}"
            hooks.point(f"{p}.hook_resid_pre", layer, "input", arg="hidden_states")
            hooks.attention(p, layer.self_attn)
            hooks.point(f"{p}.hook_attn_out", layer.self_attn, "output")
            hooks.point(f"{p}.hook_resid_mid", layer.post_attention_layernorm, "input", in_place=True)
            hooks.gated_mlp(p, layer.mlp)
            hooks.point(f"{p}.hook_mlp_out", layer.mlp, "output")
            hooks.point(f"{p}.hook_resid_post", layer, "output")

    # -- inputs -----------------------------------------------------------
    generates_from_embeds = True
    """Whether HF's ``generate`` accepts what :meth:`decoder_inputs` returns (Gemma-3n: not its per-layer inputs)."""

    def decoder_inputs(self, inputs: dict, audio_embeds: Float[torch.Tensor, "audio_token d_model"]) -> dict:
        """HF keyword inputs that run the model on ``audio_embeds`` (``[audio_token, d_model]``, every audio
        token of the batch in placeholder order) instead of encoding ``input_features``.

        The text embeddings are looked up and the audio ones written over the
        placeholders as the HF forward does, then passed as ``inputs_embeds``
        beside the other inputs (``input_ids`` and the feature mask stay: some
        decoders compute positions from them), so the decoder sees the same
        tensor. Families whose forward does more with the audio than
        scattering it override this or raise NotImplementedError.
        """
        embeds = self.scatter_audio(self.hf_model.get_input_embeddings()(inputs["input_ids"]), inputs["input_ids"], audio_embeds)
        return {**{k: v for k, v in inputs.items() if k != "input_features"}, "inputs_embeds": embeds}

    def decoder_call(self, forward: Callable[[], Any]) -> dict:
        """The keyword arguments ``forward()`` (an HF forward) calls the decoder (``language_model``) with; the
        forward stops there, so the decoder does not run. Empty if the decoder is not reached."""
        captured: dict[str, Any] = {}

        def stop(module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured.update(kwargs)
            raise DecoderReached

        handle = self.language_model.register_forward_pre_hook(stop, with_kwargs=True, prepend=True)
        try:
            forward()
        except DecoderReached:
            pass
        finally:
            handle.remove()
        return captured

    def scatter_audio(
        self, embeds: Float[torch.Tensor, "batch pos d_model"], ids: torch.Tensor,
        audio_embeds: Float[torch.Tensor, "audio_token d_model"],
    ) -> Float[torch.Tensor, "batch pos d_model"]:
        """``embeds`` with ``audio_embeds`` written over the audio placeholders of ``ids`` (``[batch, pos]``), in
        order over the batch, as HF forwards do; raises unless the counts match."""
        where = (ids == self.audio_token_id).unsqueeze(-1).to(embeds.device)
        if int(where.sum()) != audio_embeds.shape[0]:
            raise ValueError(
                f"the prompts hold {int(where.sum())} audio placeholders for {audio_embeds.shape[0]} audio embeddings"
            )
        return embeds.masked_scatter(where, audio_embeds.to(embeds.device, embeds.dtype))

    def processor_kwargs(self) -> dict:
        """Extra keyword arguments for the processor call (text padding on the left)."""
        return {"text_kwargs": {"padding": True, "padding_side": "left"}}

    def encoder_rows(self, inputs: dict) -> list[tuple[int, int]]:
        """``(mel_frames, audio_tokens)`` of each encoder input row, in processor order."""
        frames = inputs[self.feature_mask_key].sum(-1).tolist()
        return [(int(n), int(tokens_after_whisper(int(n)))) for n in frames]

    def audio_hook_frames(self, inputs: dict) -> HookFrames:
        """Lengths of the frame axes of the ``audio.*`` hooks for these inputs."""
        mel = inputs["input_features"].shape[-1]
        real = max(encoder_frames(n) for n, _ in self.encoder_rows(inputs))
        return HookFrames(features=mel, encoder=mel // 2, pattern=min(mel // 2, real), out=mel // 4)

    def embed_tokens(self, inputs: dict) -> int:
        """Length of the token axis of ``hook_audio_embeds``: ``audio.hook_out``'s, unless the projector merges frames
        (Voxtral, GLM-ASR: four encoder frames per token)."""
        return self.audio_hook_frames(inputs).out

    def windows(self, n_samples: int) -> int:
        """How many encoder rows a clip of ``n_samples`` takes (1 unless the family windows its audio)."""
        if self.window_seconds is None:
            return 1
        window = int(self.window_seconds * self.processor.feature_extractor.sampling_rate)
        return max(1, -(-n_samples // window))

    def audio_spans(self, inputs: dict, clip_samples: list[list[int]]) -> list[list[AudioSpan]]:
        """Spans of every example from the placeholder positions and per-row token counts.

        ``clip_samples[example]`` lists the length in samples of each clip of
        that example, in prompt order.
        """
        rows = self.encoder_rows(inputs)
        ids = inputs["input_ids"]
        spans, row = [], 0
        for example, lengths in enumerate(clip_samples):
            positions = (ids[example] == self.audio_token_id).nonzero().flatten().tolist()
            cursor, example_spans = 0, []
            for clip, n_samples in enumerate(lengths):
                offset = 0.0
                for _ in range(self.windows(n_samples)):
                    frames, n_tokens = rows[row]
                    if n_tokens == 0:
                        row += 1
                        continue
                    chunk = positions[cursor : cursor + n_tokens]
                    if len(chunk) != n_tokens or chunk != list(range(chunk[0], chunk[0] + n_tokens)):
                        raise ValueError(
                            f"example {example}: the audio placeholders do not line up with clip {clip} "
                            f"({n_tokens} tokens expected at consecutive positions)"
                        )
                    example_spans.append(
                        AudioSpan(chunk[0], chunk[-1] + 1, 1 / self.tokens_per_second, offset, clip, row, self.frames_per_token)
                    )
                    offset += self.window_seconds or 0.0
                    cursor += n_tokens
                    row += 1
            if cursor != len(positions):
                raise ValueError(
                    f"example {example}: {len(positions)} audio placeholder tokens but the audio gives {cursor}"
                )
            spans.append(example_spans)
        return spans

    def clip_placeholders(self, inputs: dict, clip_samples: list[list[int]]) -> list[list[tuple[int, list[int]]]]:
        """``[example][clip] -> (encoder row, placeholder positions)`` where each clip is one encoder row
        (no windows); raises unless each clip's placeholders are consecutive and the clips use up the example's."""
        rows, ids = self.encoder_rows(inputs), inputs["input_ids"]
        out, row = [], 0
        for example, lengths in enumerate(clip_samples):
            positions = (ids[example] == self.audio_token_id).nonzero().flatten().tolist()
            cursor, clips = 0, []
            for clip in range(len(lengths)):
                if row >= len(rows):
                    raise ValueError(f"example {example}: clip {clip} has no encoded features ({len(rows)} clips encoded)")
                n_tokens = rows[row][1]
                run = positions[cursor : cursor + n_tokens]
                if len(run) != n_tokens or run != list(range(run[0], run[0] + n_tokens)):
                    raise ValueError(
                        f"example {example}: the audio placeholders do not line up with clip {clip} "
                        f"({n_tokens} tokens expected at consecutive positions)"
                    )
                clips.append((row, run))
                cursor, row = cursor + n_tokens, row + 1
            if cursor != len(positions):
                raise ValueError(f"example {example}: {len(positions)} audio placeholder tokens but the audio gives {cursor}")
            out.append(clips)
        return out

    def check_inputs(self, inputs: dict) -> None:
        """Raise unless, in every example, each run of placeholders is filled by whole clips, in order.

        HF models scatter the audio features over the placeholder positions
        of the whole batch in order; a placeholder moved between examples,
        or one too many in one and one too few in another, would pass a
        count of the batch and silently shift audio. So the count is checked
        per run of consecutive placeholders (a run may hold several windows
        or clips).
        """
        if "input_features" not in inputs or "input_ids" not in inputs:
            return
        if self.feature_mask_key not in inputs:
            raise ValueError(f"input_features come without {self.feature_mask_key!r}; build inputs with model.prepare(...)")
        self.check_placeholder_runs(inputs)

    def check_placeholder_runs(self, inputs: dict) -> None:
        """Raise unless each example's runs of placeholders are filled by whole rows of :meth:`encoder_rows`, in order."""
        tokens = [n for _, n in self.encoder_rows(inputs)]
        is_audio = (inputs["input_ids"] == self.audio_token_id).cpu()
        runs = [[len(r) for r in placeholder_runs(row.nonzero().flatten().tolist())] for row in is_audio]
        found = sum(map(sum, runs))
        if found != sum(tokens):
            raise ValueError(
                f"the prompt holds {found} audio placeholder tokens but the audio features give {sum(tokens)} "
                f"({tokens} per encoded clip or window); build inputs with model.prepare(...) so each clip gets "
                "its placeholder expanded once"
            )
        row = 0
        for example, example_runs in enumerate(runs):
            for run in example_runs:
                covered = 0
                while covered < run and row < len(tokens):
                    covered, row = covered + tokens[row], row + 1
                if covered != run:
                    raise ValueError(
                        f"example {example}: a run of {run} audio placeholder tokens does not match whole clips "
                        f"(tokens per encoded clip or window: {tokens}); were placeholders edited after "
                        "model.prepare(...)?"
                    )


def placeholder_runs(positions: list[int]) -> list[list[int]]:
    """Group sorted positions into runs of consecutive ones."""
    runs: list[list[int]] = []
    for p in positions:
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs
