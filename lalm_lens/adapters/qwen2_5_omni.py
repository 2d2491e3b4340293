"""Qwen2.5-Omni thinker (3B, 7B): chunked Whisper-style encoder with packed hidden states, linear ``audio_tower.proj``, Qwen2.5 decoder.

Loading. A full Omni checkpoint (``model_type`` ``qwen2_5_omni``: thinker,
talker, token2wav) loads only its thinker, with a logged note; a thinker-only
checkpoint (``qwen2_5_omni_thinker``) loads directly. Where torchvision is
missing, ``AutoProcessor`` cannot build ``Qwen2_5OmniProcessor`` (its video
processor needs torchvision); the processor is then built from the
checkpoint's tokenizer, feature extractor and image processor with a stand-in
video processor that refuses videos (audio, text and images work).

Packed encoder. The thinker drops each clip's padding; the encoder cuts every
clip into chunks of ``2 * n_window`` mel frames (2 s, 100 encoder frames)
that attend only within themselves, and keeps its hidden states packed as
``[total_frames, d]`` with no batch axis. The ``audio.*`` hooks unpack them
into the documented view, batch = clips in processor order, the frame axis
zero-padded to the longest clip of the batch; a tensor a hook returns is
packed back (its padding ignored) into the tensor the model goes on with:

============================================  ===============================================
``audio.hook_features``                       clip, mel, mel_frame (real frames only)
``audio.blocks.{i}.*`` (resid, attn/mlp out)  clip, frame, d_audio; frame = (mel_frame - 1) // 2 + 1
``audio.blocks.{i}.mlp.hook_post``            clip, frame, d_audio_mlp
``audio.blocks.{i}.attn.hook_pattern``        clip, chunk, head, q, k (q, k: frames inside a chunk)
``audio.hook_out``                            clip, token, d_audio (after avg-pool and ln_post)
``hook_audio_embeds``                         clip, token, d_model (``audio_tower.proj`` output)
============================================  ===============================================

Encoder pattern layout: ``[clip, chunk, head, q, k]``. ``pattern[c, j]`` is
the ordinary ``[head, q, k]`` softmax of chunk ``j`` of clip ``c``, which
covers the clip's frames ``j * 100 + q``; a clip's last, shorter chunk and the
chunks a shorter clip lacks are zero-padded. Only the chunks are stored: for
a 30 s clip this is 15 times less than a ``[clip, head, frame, frame]`` map,
which is block diagonal (:func:`block_diagonal` builds it, e.g. for a plot).
The probabilities come from the registered attention function, which the
encoder calls once per chunk (sdpa/eager; flash attention is refused for
pattern hooks). A pattern a hook returns is used inside each chunk; its
padding is ignored.

Decoder: multimodal RoPE whose three axes are the same plain positions for
audio+text prompts; ``position_ids``/``rope_deltas`` are what the HF forward
and ``generate`` compute, untouched by hooks. The thinker silently drops audio
features that find no placeholder, so :meth:`Qwen2_5OmniAdapter.check_inputs`
raises on any mismatch. Spans: one per clip, 25 tokens/s, counted with Omni's
own ``_get_feat_extract_output_lengths``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from jaxtyping import Float
from torch import nn
from transformers import Qwen2_5OmniProcessor, Qwen2_5OmniThinkerForConditionalGeneration
from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths
from transformers.utils import is_torchvision_available
from transformers.video_processing_utils import VideoProcessorMixin

from ..attention import ALL_ROWS, shared_query_rows
from ..hook_points import LazyHookPoint, Tap
from .base import Adapter, HookBuilder, HookFrames, claim_attention, encoder_frames, place, read_model_type

logger = logging.getLogger(__name__)

FULL_MODEL_TYPE = "qwen2_5_omni"


class Packing:
    """Per-clip lengths of the encoder's packed tensors in the running forward, read from the tower's ``feature_lens``.

    ``mel`` (mel frames), ``frames`` (encoder frames) and ``tokens`` (audio
    tokens) are lists with one entry per clip. The recording pre-hook is on the
    audio tower only while some packed hook point is in use.
    """

    def __init__(self, tower: nn.Module):
        self.tower, self.users, self.handle = tower, 0, None
        self.mel: list[int] = []
        self.frames: list[int] = []
        self.tokens: list[int] = []

    def use(self, on: bool) -> None:
        self.users += 1 if on else -1
        if self.users and self.handle is None:
            self.handle = self.tower.register_forward_pre_hook(self.record, with_kwargs=True, prepend=True)
        elif not self.users and self.handle is not None:
            self.handle.remove()
            self.handle = None

    def record(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """The tower's pre-hook: read the clips' lengths (a family with other inputs overrides this)."""
        lens = kwargs["feature_lens"] if "feature_lens" in kwargs else args[1]
        self.mel = [int(n) for n in lens.tolist()]
        self.frames = [encoder_frames(n) for n in self.mel]
        self.tokens = [int(_get_feat_extract_output_lengths(n)) for n in self.mel]


def unpack(packed: torch.Tensor, lengths: list[int], dim: int = 0) -> torch.Tensor:
    """``packed`` with clips concatenated along ``dim`` -> ``[clip, ...]`` with that axis zero-padded to the longest clip."""
    pieces = [p.movedim(dim, 0) for p in packed.split(lengths, dim=dim)]
    return nn.utils.rnn.pad_sequence(pieces, batch_first=True).movedim(1, dim + 1)


def pack(unpacked: torch.Tensor, lengths: list[int], dim: int = 0) -> torch.Tensor:
    """Inverse of :func:`unpack`: drop each clip's padding and concatenate along ``dim``."""
    return torch.cat([clip.narrow(dim, 0, n) for clip, n in zip(unpacked, lengths)], dim=dim)


class PackedTap(Tap):
    """A :class:`Tap` on a packed encoder tensor: its points see ``[clip, ...]`` and their edits are packed back.

    ``lengths`` names the :class:`Packing` list that splits the tensor
    (``"mel"``, ``"frames"`` or ``"tokens"``); ``dim`` is its packed axis.
    """

    def __init__(self, module: nn.Module, where: str, packing: Packing, lengths: str, dim: int = 0, arg: str | None = None):
        super().__init__(module, where, arg)
        self.packing, self.lengths, self.dim = packing, lengths, dim

    def sync(self) -> None:
        installed = self.handle is not None
        super().sync()
        if (self.handle is not None) != installed:
            self.packing.use(not installed)

    def run(self, packed: torch.Tensor) -> torch.Tensor:
        """Run the points on the ``[clip, ...]`` view; pack back what they returned or edited in place."""
        lengths = getattr(self.packing, self.lengths)
        shares_memory = len(lengths) == 1
        view = packed.unsqueeze(0) if shares_memory else unpack(packed, lengths, self.dim)
        version = None if view.is_inference() else view._version
        new = super().run(view)
        if new is view and (shares_memory or (version is not None and version == view._version)):
            return packed
        return pack(new.to(packed.dtype), lengths, self.dim)


class _ChunkRecorder:
    """The reader hook on the internal per-chunk point: hands each chunk pattern, computed beside the fast kernel, to ``store``."""

    query_rows = ALL_ROWS

    def __init__(self, store):
        self.store = store

    def __call__(self, pattern: torch.Tensor, hook) -> None:
        self.store(pattern)


class ChunkedPattern:
    """The pattern hook of one encoder attention module that attends inside chunks of the packed sequence.

    ``point`` is the named hook point, ``[clip, chunk, head, q, k]``. The
    module's ``_lalm_pattern`` is an internal :class:`LazyHookPoint` that the
    registered attention function calls once per chunk; while ``point`` is in
    use, each chunk's probabilities are written into their place as they are
    computed, and a forward hook on the module runs ``point`` on the whole.
    When every hook on ``point`` only reads (``query_rows``), the module output
    is left as the fast kernel made it, so it stays bit-identical; otherwise the
    output is recomputed from the pattern the hooks leave, whether they
    returned it or edited it in place.
    """

    def __init__(self, attention: nn.Module, packing: Packing):
        self.attention, self.packing = attention, packing
        self.point = LazyHookPoint(on_change=self.sync)
        self.collector = LazyHookPoint()
        claim_attention(attention)
        attention.__dict__["_lalm_pattern"] = self.collector
        self.recorder = _ChunkRecorder(self._store)
        self.handles: list = []
        self.hidden_states = self.pattern = None
        self.placements: list[tuple[int, int, int, int]] = []
        self.chunks: list[torch.Tensor] = []
        self.stored = 0

    def sync(self) -> None:
        if self.point.active and not self.handles:
            self.collector.add_hook(self.recorder)
            self.handles = [
                self.attention.register_forward_pre_hook(self._before, with_kwargs=True),
                self.attention.register_forward_hook(self._after, prepend=True),
            ]
            self.packing.use(True)
        elif not self.point.active and self.handles:
            self.collector.remove_hooks()
            for handle in self.handles:
                handle.remove()
            self.handles = []
            self.packing.use(False)
            self.hidden_states = self.pattern = None

    def _before(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if "flash" in module.config._attn_implementation:
            raise _not_chunked()
        self.hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        cu_seqlens = kwargs["cu_seqlens"] if "cu_seqlens" in kwargs else args[1]
        self.placements = chunk_placements([int(b) for b in cu_seqlens.tolist()], self.packing.frames)
        self.pattern, self.chunks, self.stored = None, [], 0

    def _store(self, chunk: Float[torch.Tensor, "1 head n n"]) -> None:
        """Write the next chunk's pattern into its ``[clip, chunk]`` block (kept aside while autograd records)."""
        if self.stored >= len(self.placements) or chunk.shape[-1] != self.placements[self.stored][1]:
            raise _not_chunked()
        _, n, clip, index = self.placements[self.stored]
        self.stored += 1
        if chunk.requires_grad:  # stacked once at the end: in-place writes would each copy the buffer in backward
            self.chunks.append(chunk[0])
            return
        if self.pattern is None:
            self.pattern = chunk.new_zeros(self._shape(chunk.shape[1]))
        self.pattern[clip, index, :, :n, :n] = chunk[0]

    def _shape(self, heads: int) -> tuple[int, int, int, int, int]:
        size = max(n for _, n, _, _ in self.placements)
        return len(self.packing.frames), max(index for *_, index in self.placements) + 1, heads, size, size

    def _stacked(self) -> torch.Tensor:
        """The pattern from the chunks kept aside, padded and stacked in one differentiable step."""
        clips, chunks, heads, size, _ = self._shape(self.chunks[0].shape[0])
        blank = self.chunks[0].new_zeros(heads, size, size)
        grid = [[blank] * chunks for _ in range(clips)]
        for chunk, (_, n, clip, index) in zip(self.chunks, self.placements):
            grid[clip][index] = nn.functional.pad(chunk, (0, size - n, 0, size - n))
        return torch.stack([torch.stack(row) for row in grid])

    def _after(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        try:
            if self.stored != len(self.placements):
                raise _not_chunked()
            pattern = self._stacked() if self.chunks else self.pattern
            readers_only = shared_query_rows(self.point) is not None
            self.point.ctx["query_rows"] = ALL_ROWS if readers_only else None
            new = self.point.run(pattern)
            return None if readers_only else self._attend(module, new)
        finally:
            self.hidden_states = self.pattern = None
            self.chunks = []

    def _attend(self, module: nn.Module, pattern: Float[torch.Tensor, "clip chunk head q k"]) -> torch.Tensor:
        """The module's output with ``pattern`` as its attention probabilities inside each chunk."""
        hidden = self.hidden_states
        total = hidden.shape[0]
        value = module.v_proj(hidden).reshape(total, module.num_heads, -1).transpose(0, 1)
        outputs = []
        for start, n, clip, index in self.placements:
            probs = pattern[clip, index, :, :n, :n].to(value.device, value.dtype)
            probs = nn.functional.dropout(probs, p=module.attention_dropout, training=module.training)
            outputs.append(torch.matmul(probs, value[:, start : start + n]).transpose(0, 1))
        return module.out_proj(torch.cat(outputs).reshape(total, -1).contiguous())


def _not_chunked() -> RuntimeError:
    return RuntimeError(
        "the Qwen2.5-Omni encoder attention did not run chunk by chunk (flash attention?); "
        "encoder pattern hooks need attn_implementation='sdpa' or 'eager'"
    )


def chunk_placements(bounds: list[int], frames: list[int]) -> list[tuple[int, int, int, int]]:
    """``(packed_start, length, clip, chunk_in_clip)`` of every chunk, from the encoder's ``cu_seqlens`` and frames per clip."""
    clip_starts = [0]
    for n in frames:
        clip_starts.append(clip_starts[-1] + n)
    placements, clip, index = [], 0, 0
    for start, stop in zip(bounds[:-1], bounds[1:]):
        while start >= clip_starts[clip + 1]:
            clip, index = clip + 1, 0
        placements.append((start, stop - start, clip, index))
        index += 1
    return placements


def block_diagonal(pattern: Float[torch.Tensor, "clip chunk head q k"], frames: int | None = None) -> Float[torch.Tensor, "clip head frame frame"]:
    """An Omni encoder pattern ``[clip, chunk, head, q, k]`` as one ``[clip, head, frame, frame]`` map, zero between chunks.

    Handy for plotting a whole clip's encoder attention; ``frames`` cuts the
    frame axes (default: ``chunk * q``). Costs ``chunk`` times the memory.
    """
    clips, chunks, heads, size, _ = pattern.shape
    full = pattern.new_zeros(clips, heads, chunks * size, chunks * size)
    for j in range(chunks):
        full[:, :, j * size : (j + 1) * size, j * size : (j + 1) * size] = pattern[:, j]
    return full if frames is None else full[:, :, :frames, :frames]


class NoVideoProcessor(VideoProcessorMixin):
    """Stands in for ``Qwen2VLVideoProcessor`` where torchvision is missing: any video raises."""

    merge_size = 2
    temporal_patch_size = 2

    def __call__(self, videos, **kwargs):
        raise ImportError("Omni video inputs need torchvision; install it to process videos")


class AcceptsNoVideo:
    """Mixin for an Omni processor class: accept :class:`NoVideoProcessor` (the class check needs torchvision)."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and isinstance(argument, NoVideoProcessor):
            return type(argument)
        return super().check_argument_for_proper_class(argument_name, argument)


class _OmniProcessorWithoutVideo(AcceptsNoVideo, Qwen2_5OmniProcessor):
    """``Qwen2_5OmniProcessor`` that accepts :class:`NoVideoProcessor`."""


def omni_processor_without_video(
    path, *, tokenizer=None, feature_extractor=None, image_processor=None, chat_template: str | None = None,
    processor_class: type = _OmniProcessorWithoutVideo, **kwargs,
) -> Qwen2_5OmniProcessor:
    """An Omni processor for audio, text and images, built without torchvision.

    ``processor_class`` is an Omni processor class with :class:`AcceptsNoVideo`
    (default: ``Qwen2_5OmniProcessor``'s). Parts not given are loaded from
    ``path`` (``kwargs`` such as ``local_files_only`` go to their ``from_pretrained``).
    """
    from transformers import AutoFeatureExtractor, AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    kwargs = {k: v for k, v in kwargs.items() if k != "trust_remote_code"}
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, **kwargs)
    feature_extractor = feature_extractor or AutoFeatureExtractor.from_pretrained(path, **kwargs)
    image_processor = image_processor or Qwen2VLImageProcessorPil.from_pretrained(path, **kwargs)
    if chat_template is None:
        chat_template = processor_class.get_processor_dict(path, **kwargs)[0].get("chat_template")
    return processor_class(
        image_processor, NoVideoProcessor(), feature_extractor, tokenizer,
        chat_template=chat_template or tokenizer.chat_template,
    )


class OmniThinker:
    """Mixin for the adapters of an Omni thinker: refuse the full model, load the thinker alone from a full
    checkpoint, and build the processor without video where torchvision is missing.

    Subclasses set ``full_model_type`` (the full model's ``model_type``), ``family``
    and ``speech_decoder`` (for messages) and ``processor_without_video``.
    """

    full_model_type: str = ""
    family: str = ""
    speech_decoder: str = ""
    processor_without_video = staticmethod(omni_processor_without_video)

    def __init__(self, hf_model: nn.Module, processor: Any):
        if hasattr(hf_model, "thinker"):
            raise ValueError(
                f"this is a full {self.family} model (thinker, talker, {self.speech_decoder}); wrap its thinker: "
                "HookedLALM.from_hf(model.thinker, processor)"
            )
        super().__init__(hf_model, processor)

    @classmethod
    def load(cls, path, **kwargs) -> nn.Module:
        """Load the thinker; from a full Omni checkpoint, only its ``thinker.*`` weights (with a logged note)."""
        kwargs.pop("config", None)
        files = {k: kwargs[k] for k in ("local_files_only", "revision", "cache_dir", "token") if k in kwargs}
        if read_model_type(path, **files) == cls.full_model_type:
            logger.warning(
                "%s is a full %s checkpoint: loading only its thinker (audio encoder + language model); "
                "the talker and %s weights are skipped", path, cls.family, cls.speech_decoder,
            )
        return cls.hf_class.from_pretrained(path, **kwargs)

    @classmethod
    def load_processor(cls, path, **kwargs) -> Any:
        try:
            return super().load_processor(path, **kwargs)
        except ImportError:
            if is_torchvision_available():
                raise
            logger.warning(
                "torchvision is not installed, so %s's video processor cannot be built; "
                "using the processor without video support (audio, text and images work)", cls.family,
            )
            return cls.processor_without_video(path, **kwargs)


class Qwen2_5OmniAdapter(OmniThinker, Adapter):
    hf_class = Qwen2_5OmniThinkerForConditionalGeneration
    model_types = ("qwen2_5_omni_thinker", FULL_MODEL_TYPE)
    arch = "qwen2_5_omni_thinker"
    placeholder = "<|AUDIO|>"
    feature_mask_key = "feature_attention_mask"
    full_model_type, family, speech_decoder = FULL_MODEL_TYPE, "Qwen2.5-Omni", "token2wav"

    # -- where things are -------------------------------------------------
    @property
    def projector(self) -> nn.Module:
        return self.audio_tower.proj

    @property
    def max_audio_seconds(self) -> float:
        return float(self.processor.feature_extractor.chunk_length)

    @property
    def chunk_seconds(self) -> float:
        """Length of the encoder's attention chunks (2 s): ``2 * n_window`` mel frames at 100 frames/s."""
        return 2 * self.audio_tower.n_window / 100

    # -- hook points ------------------------------------------------------
    def build_hooks(self, root: nn.Module) -> None:
        hooks, tower = HookBuilder(root), self.audio_tower
        self.packing = packing = Packing(tower)

        def packed(name: str, module: nn.Module, where: str, lengths: str, dim: int = 0, arg: str | None = None) -> None:
            place(root, name, PackedTap(module, where, packing, lengths, dim, arg).new_point())

        packed("audio.hook_features", tower, "input", "mel", dim=1, arg="input_features")
        for i, layer in enumerate(tower.layers):
            p = f"audio.blocks.{i}"
            packed(f"{p}.hook_resid_pre", layer, "input", "frames", arg="hidden_states")
            place(root, f"{p}.attn.hook_pattern", ChunkedPattern(layer.self_attn, packing).point)
            packed(f"{p}.hook_attn_out", layer.self_attn, "output", "frames")
            packed(f"{p}.mlp.hook_post", layer.fc2, "input", "frames")
            packed(f"{p}.hook_mlp_out", layer.fc2, "output", "frames")
            packed(f"{p}.hook_resid_post", layer, "output", "frames")
        packed("audio.hook_out", self.projector, "input", "tokens")
        packed("hook_audio_embeds", self.projector, "output", "tokens")

        hooks.point("hook_embed", self.language_model, "input", arg="inputs_embeds")
        self.decoder_block_hooks(hooks, self.language_model.layers)
        hooks.final_norm(self.language_model.norm)

    # -- inputs -----------------------------------------------------------
    def encoder_rows(self, inputs: dict) -> list[tuple[int, int]]:
        frames = inputs[self.feature_mask_key].sum(-1).tolist()
        return [(int(n), int(_get_feat_extract_output_lengths(int(n)))) for n in frames]

    def audio_hook_frames(self, inputs: dict) -> HookFrames:
        mel = [n for n, _ in self.encoder_rows(inputs)]
        frames = [encoder_frames(n) for n in mel]
        chunk = encoder_frames(2 * self.audio_tower.n_window)
        tokens = max(int(_get_feat_extract_output_lengths(n)) for n in mel)
        return HookFrames(max(mel), max(frames), min(chunk, max(frames)), tokens, chunks=-(-max(frames) // chunk))
