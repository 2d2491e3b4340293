"""Kimi-Audio-7B(-Instruct) in plain PyTorch, built from transformers' Qwen2 and Whisper blocks.

Kimi-Audio (moonshotai/Kimi-Audio-7B-Instruct) is a Qwen2.5-7B decoder that reads two token streams
aligned position by position: an *audio stream* (control tokens and 12.5 Hz GLM-4 semantic tokens,
offset by ``kimia_token_offset``) and a *text stream* (text tokens, ``kimia_text_blank`` where there is
no text). Inside an audio segment, between ``kimia_media_begin`` and ``kimia_media_end`` in the audio
stream, Whisper-large-v3 encoder frames (50 Hz, 1280-d, four stacked into one 5120-d 12.5 Hz feature)
pass through the VQ adaptor and are added to the semantic-token embedding; that sum is scaled by
sqrt(2). The text-stream embedding is then added everywhere. The output of shared layer
``kimia_mimo_transformer_from_layer_index`` forks into ``kimia_mimo_layers`` extra decoder layers
("mimo") with their own norm and head (``mimo_output``) that predict the next audio-stream token; the
shared stack goes on to ``model.norm`` and ``lm_head``, which predict the next text-stream token.

Module names equal the released tensor names (``model.embed_tokens``, ``model.layers.N.*``,
``model.norm``, ``model.mimo_layers.N.*``, ``model.mimo_norm``, ``model.vq_adaptor.layers.{0,3,4}``,
``lm_head``, ``mimo_output``), so the safetensors shards load unchanged. Every decoder layer is a
transformers ``Qwen2DecoderLayer``: attention dispatches through ``ALL_ATTENTION_FUNCTIONS`` on
``qwen2_config._attn_implementation`` and the submodule names are Qwen2's. The Whisper encoder ships
in the checkpoint's ``whisper-large-v3/`` folder and is attached as ``whisper_encoder``.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple, Sequence, Union

import torch
from jaxtyping import Bool, Float, Int
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import DynamicCache, Qwen2Config, WhisperConfig
from transformers.masking_utils import create_causal_mask
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2RMSNorm, Qwen2RotaryEmbedding
from transformers.models.whisper.modeling_whisper import WhisperEncoder

WHISPER_SUBFOLDER = "whisper-large-v3"
FeatureList = Union[Tensor, Sequence[Tensor]]

# The special tokens of the public Kimi-Audio (tiktoken) tokenizer, in the order it numbers them: token i
# has id ``num_base_tokens + i``. Every entry counts, reserved ones and [EOT] included (the "# n" comments
# of the upstream list skip some). Further reserved tokens follow up to ``num_reserved_special_tokens``.
SPECIAL_TOKENS = (
    "[BOS]", "[EOS]", "<|im_msg_end|>", "<|im_user_msg_start|>", "<|im_assistant_msg_start|>",
    "<|reserved_token_0|>", "<|reserved_token_1|>", "<|reserved_token_2|>", "<|reserved_token_3|>", "[EOT]",
    *(f"<|reserved_token_{i}|>" for i in range(4, 12)),
    "<|im_media_begin|>", "<|reserved_token_12|>", "<|im_media_end|>", "<|reserved_token_13|>",
    "<|reserved_token_14|>", "<|im_kimia_text_blank|>", "<|im_kimia_text_eos|>", "<|reserved_token_15|>",
    "<|reserved_token_16|>", "<|im_kimia_user_msg_start|>", "<|im_kimia_assistant_msg_start|>",
    "<|reserved_token_17|>", "<|reserved_token_18|>", "<|reserved_token_19|>",
    "<|im_kimia_speech_ct_id|>", "<|im_kimia_speech_ctd_id|>",
)


def special_token_layout(num_base_tokens: int = 151643) -> dict[str, int]:
    """Id of every named special token of the Kimi-Audio tokenizer: ``num_base_tokens`` + its index in
    :data:`SPECIAL_TOKENS` (``num_base_tokens`` is the BPE vocabulary size, 151643 for the release)."""
    return {token: num_base_tokens + i for i, token in enumerate(SPECIAL_TOKENS)}


def check_token_ids(ids: Int[Tensor, "batch pos"], vocab_size: int, name: str) -> None:
    """Raise a ValueError naming the first id of ``ids`` outside ``[0, vocab_size)`` (the embedding's rows)."""
    bad = (ids < 0) | (ids >= vocab_size)
    if bool(bad.any()):
        row, pos = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{name}[{row}, {pos}] is {int(ids[row, pos])}, outside the vocabulary of {vocab_size} ids "
            f"[0, {vocab_size}); give token ids of the model's tokenizer"
        )


@dataclass
class KimiAudioConfig:
    """The keys of the official ``config.json``, read unchanged.

    Defaults are those of the official ``KimiAudioConfig(Qwen2Config)`` class, so a ``config.json`` that
    omits a key behaves as upstream. ``kimia_text_blank``/``kimia_text_eos`` are tokenizer ids
    (``<|im_kimia_text_blank|>``, ``<|im_kimia_text_eos|>``) that the official config class does not
    define; they are read when present. ``rope_scaling`` is kept in ``extra`` and ignored, as the
    official attention ignores it. Every other key (``architectures``, ``torch_dtype``, ...) is kept in
    ``extra`` and written back by :meth:`to_dict`. ``num_base_tokens`` places the tokenizer's special tokens
    (see :func:`special_token_layout`); the four ``kimia_*`` token ids above follow from it on the release.
    """

    vocab_size: int = 163840
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    pad_token_id: int | None = None
    kimia_mimo_layers: int = 6
    kimia_mimo_audiodelaytokens: int = 5
    kimia_mimo_transformer_from_layer_index: int = 21
    kimia_audio_output_vocab: int = 16896
    kimia_text_output_vocab: int = 152064
    num_audio_special_tokens: int = 512
    num_base_tokens: int = 151643
    kimia_token_offset: int = 152064
    use_whisper_feature: bool = True
    kimia_adaptor_input_dim: int = 5120
    kimia_media_begin: int = 151661
    kimia_media_end: int = 151663
    kimia_text_blank: int = 151666
    kimia_text_eos: int = 151667
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size}, num_attention_heads={self.num_attention_heads} and "
                f"num_key_value_heads={self.num_key_value_heads} do not divide evenly"
            )
        if not 0 <= self.kimia_mimo_transformer_from_layer_index < self.num_hidden_layers:
            raise ValueError(
                f"kimia_mimo_transformer_from_layer_index={self.kimia_mimo_transformer_from_layer_index} "
                f"must index one of the {self.num_hidden_layers} shared layers"
            )

    @classmethod
    def from_dict(cls, d: dict) -> "KimiAudioConfig":
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})

    @classmethod
    def from_json(cls, path: str | Path) -> "KimiAudioConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        d = asdict(self)
        return {**d.pop("extra"), **d}

    @property
    def model_type(self) -> str:
        return self.extra.get("model_type", "moonshot_kimia")

    def qwen2_config(self, attn_implementation: str = "sdpa") -> Qwen2Config:
        """The Qwen2Config every decoder layer is built from.

        ``num_hidden_layers`` counts the shared *and* mimo layers so one ``DynamicCache`` holds both:
        mimo layer i uses cache slot ``num_hidden_layers + i``, as in the official code. Sliding window
        and RoPE scaling are off because the official attention has neither.
        """
        return Qwen2Config(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers + self.kimia_mimo_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            hidden_act=self.hidden_act,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": float(self.rope_theta)},
            use_sliding_window=False,
            attention_dropout=0.0,
            pad_token_id=self.pad_token_id,
            attn_implementation=attn_implementation,
        )


class KimiAudioOutput(NamedTuple):
    text_logits: Float[Tensor, "batch pos vocab"]
    audio_logits: Float[Tensor, "batch pos vocab"] | None
    past_key_values: DynamicCache | None

    @property
    def logits(self) -> Float[Tensor, "batch pos vocab"]:
        """The text logits, under the name HF-style callers read."""
        return self.text_logits


def stack_whisper_frames(frames: Float[Tensor, "*batch frames d"]) -> Float[Tensor, "*batch tokens four_d"]:
    """Concatenate every 4 consecutive 50 Hz Whisper frames into one 12.5 Hz feature: ``[.., T, d] -> [.., T/4, 4d]``.

    Feature ``i`` is ``frames[4i] | frames[4i+1] | frames[4i+2] | frames[4i+3]``, the official row-major reshape.
    """
    *batch, n, d = frames.shape
    if n % 4:
        raise ValueError(f"{n} Whisper frames is not a multiple of 4; slice to 4 * num_tokens frames first")
    return frames.reshape(*batch, n // 4, 4 * d)


class VQAdaptor(nn.Module):
    """Stacked Whisper features -> decoder width: Linear, SiLU, Dropout(0), Linear, LayerNorm.

    The Sequential indices are the checkpoint's names (``vq_adaptor.layers.{0,3,4}`` hold weights).
    """

    def __init__(self, config: KimiAudioConfig):
        super().__init__()
        h = config.hidden_size
        self.layers = nn.Sequential(
            nn.Linear(config.kimia_adaptor_input_dim, h),
            nn.SiLU(),
            nn.Dropout(0.0),
            nn.Linear(h, h),
            nn.LayerNorm(h, eps=config.rms_norm_eps),
        )

    def forward(self, x: Float[Tensor, "*n adaptor_in"]) -> Float[Tensor, "*n hidden"]:
        return self.layers(x)


class KimiAudioModel(nn.Module):
    """The decoder (checkpoint prefix ``model.``): shared Qwen2 stack, mimo branch, adaptor, embedding.

    ``config`` is the :class:`KimiAudioConfig` (``max_position_embeddings`` is the decoder's context:
    8192 for the release); ``qwen2_config`` the config the layers are built from.
    """

    def __init__(self, config: KimiAudioConfig, qwen2_config: Qwen2Config):
        super().__init__()
        n, h, eps = config.num_hidden_layers, config.hidden_size, config.rms_norm_eps
        self.branch_index = config.kimia_mimo_transformer_from_layer_index
        self.config = config
        self.qwen2_config = qwen2_config
        self.embed_tokens = nn.Embedding(config.vocab_size, h, config.pad_token_id)
        self.layers = nn.ModuleList(Qwen2DecoderLayer(qwen2_config, i) for i in range(n))
        self.norm = Qwen2RMSNorm(h, eps=eps)
        self.mimo_layers = nn.ModuleList(
            Qwen2DecoderLayer(qwen2_config, n + i) for i in range(config.kimia_mimo_layers)
        )
        self.mimo_norm = Qwen2RMSNorm(h, eps=eps)
        self.vq_adaptor = VQAdaptor(config) if config.use_whisper_feature else None
        self.rotary_emb = Qwen2RotaryEmbedding(qwen2_config)

    def forward(
        self,
        inputs_embeds: Float[Tensor, "batch pos hidden"],
        attention_mask: Int[Tensor, "batch past_and_pos"] | None = None,
        position_ids: Int[Tensor, "batch pos"] | None = None,
        past_key_values: DynamicCache | None = None,
        use_cache: bool = False,
        output_audio: bool = True,
    ) -> tuple[Float[Tensor, "batch pos hidden"], Float[Tensor, "batch pos hidden"] | None, DynamicCache | None]:
        """Run the shared stack and, if ``output_audio``, the mimo branch. Returns both final-normed streams."""
        n = len(self.layers)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.qwen2_config)
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        if output_audio and self.mimo_layers and past and past_key_values.get_seq_length(n) != past:
            raise ValueError(
                "the cache holds no audio-branch keys for earlier positions (they ran with output_audio=False); "
                "start a new cache to get audio logits"
            )
        if position_ids is None:
            position_ids = torch.arange(past, past + inputs_embeds.shape[1], device=inputs_embeds.device)[None]
        # The cache goes by position: transformers 5.23 names this argument past_key_values, 5.24 cache.
        mask = create_causal_mask(self.qwen2_config, inputs_embeds, attention_mask, past_key_values, position_ids)
        args = (mask, position_ids, past_key_values)
        kwargs = dict(use_cache=use_cache, position_embeddings=self.rotary_emb(inputs_embeds, position_ids))
        h = inputs_embeds
        for i, layer in enumerate(self.layers):
            h = layer(h, *args, **kwargs)
            if i == self.branch_index:
                branch = h
        mimo = None
        if output_audio:
            mimo = branch
            for layer in self.mimo_layers:
                mimo = layer(mimo, *args, **kwargs)
            mimo = self.mimo_norm(mimo)
        return self.norm(h), mimo, past_key_values


class KimiAudioForCausalLM(nn.Module):
    """Kimi-Audio with its text head (``lm_head``), audio head (``mimo_output``) and optional Whisper encoder.

    Stream naming: ``input_ids`` is the text stream (the official forward calls it ``text_input_ids``)
    and ``audio_input_ids`` the audio stream (the official forward's ``input_ids``).
    """

    def __init__(
        self,
        config: KimiAudioConfig,
        attn_implementation: str = "sdpa",
        whisper_config: WhisperConfig | None = None,
    ):
        super().__init__()
        self.config = config
        self.qwen2_config = config.qwen2_config(attn_implementation)
        self.model = KimiAudioModel(config, self.qwen2_config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.mimo_output = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.whisper_encoder = WhisperEncoder(whisper_config) if whisper_config is not None else None

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_attn_implementation(self, name: str) -> None:
        """Switch every decoder layer's attention ("sdpa", "eager", or any registered name)."""
        self.qwen2_config._attn_implementation = name

    def whisper_features(
        self, input_features: Float[Tensor, "chunks mel mel_frames"], num_tokens: int
    ) -> Float[Tensor, "num_tokens adaptor_in"]:
        """Log-mel chunks of one audio segment -> the stacked Whisper features of its ``num_tokens`` positions.

        Each chunk is one padded 30 s window (``[n_mels, 2 * max_source_positions]``); the official wrapper
        encodes chunks separately and keeps ``4 * tokens`` frames of each, every chunk but the last
        contributing ``max_source_positions / 4`` tokens.
        """
        return self.segment_whisper_features([input_features], [num_tokens])[0]

    def segment_whisper_features(
        self, segments: Sequence[Tensor], num_tokens: Sequence[int]
    ) -> list[Float[Tensor, "num_tokens adaptor_in"]]:
        """:meth:`whisper_features` of several segments, with one encoder call over all their chunks in order.

        Encoder hooks therefore fire once per forward and see ``[total_chunks, ...]``.
        """
        if self.whisper_encoder is None:
            raise ValueError(
                "input_features (log-mel) need a Whisper encoder: load it with "
                f"load_kimi_audio(..., whisper_path=...) (the release keeps it in {WHISPER_SUBFOLDER}/), "
                "or pass precomputed whisper_input_feature"
            )
        mels = [m[None] if m.dim() == 2 else m for m in segments]
        weight = self.whisper_encoder.conv1.weight
        frames = self.whisper_encoder(torch.cat(mels).to(weight.device, weight.dtype)).last_hidden_state
        features = []
        for chunk_frames, n in zip(frames.split([m.shape[0] for m in mels]), num_tokens):
            per_chunk = chunk_frames.shape[1] // 4
            if n > per_chunk * chunk_frames.shape[0]:
                raise ValueError(
                    f"an audio segment spans {n} positions but its {chunk_frames.shape[0]} mel chunk(s) cover "
                    f"only {per_chunk * chunk_frames.shape[0]}"
                )
            kept = [chunk_frames[i, : 4 * min(per_chunk, n - i * per_chunk)] for i in range(math.ceil(n / per_chunk))]
            features.append(stack_whisper_frames(torch.cat(kept)))
        return features

    def media_spans(self, audio_input_ids: Int[Tensor, "batch pos"]) -> list[tuple[int, int, int]]:
        """``(row, begin, end)`` of every ``kimia_media_begin ... kimia_media_end`` pair, in row-major order."""
        begin_id, end_id = self.config.kimia_media_begin, self.config.kimia_media_end
        marks = {token: [[] for _ in range(audio_input_ids.shape[0])] for token in (begin_id, end_id)}
        for token, per_row in marks.items():
            for row, p in (audio_input_ids == token).nonzero().tolist():  # row-major: positions ascend per row
                per_row[row].append(p)
        spans = []
        for row, (begins, ends) in enumerate(zip(marks[begin_id], marks[end_id])):
            pairs = list(zip(begins, ends))
            if len(begins) != len(ends) or any(b >= e for b, e in pairs) or any(
                e >= b2 for (_, e), (b2, _) in zip(pairs, pairs[1:])
            ):
                raise ValueError(
                    f"row {row} of audio_input_ids has media begins at {begins} and ends at {ends}; each "
                    f"kimia_media_begin ({self.config.kimia_media_begin}) needs its own kimia_media_end "
                    f"({self.config.kimia_media_end}) after it, within the same forward call"
                )
            spans += [(row, b, e) for b, e in pairs]
        return spans

    def embed_inputs(
        self,
        input_ids: Int[Tensor, "batch pos"] | None = None,
        audio_input_ids: Int[Tensor, "batch pos"] | None = None,
        whisper_input_feature: FeatureList | None = None,
        is_continuous_mask: Bool[Tensor, "batch pos"] | None = None,
        input_features: FeatureList | None = None,
    ) -> Float[Tensor, "batch pos hidden"]:
        """The decoder input: ``E[audio] (+ adaptor(whisper), x sqrt(2), where continuous) + E[text]``.

        - ``whisper_input_feature``: stacked encoder features, one ``[n_tokens, kimia_adaptor_input_dim]``
          tensor per audio segment (a list, or a ``[segments, n_tokens, d]`` tensor), segments counted in
          row-major order over the batch. Rows beyond a segment's length are ignored, as upstream.
        - ``input_features``: log-mel instead, one ``[chunks, n_mels, frames]`` (or ``[n_mels, frames]``)
          tensor per segment, run through ``whisper_encoder`` (see :meth:`whisper_features`).
        - ``is_continuous_mask``: where features are added; defaults to the positions strictly between each
          begin/end marker, which is what the official prompt builder marks.

        An id outside ``[0, vocab_size)`` in either stream raises a ValueError naming it.
        As upstream, the text stream is not added when it is all zeros (the official model tests
        ``text_input_ids.sum() != 0``). Without ``audio_input_ids`` the input is ``E[text]`` alone;
        official text-only prompts instead fill the audio stream with ``kimia_text_blank``.
        """
        embed = self.model.embed_tokens
        if input_ids is None and audio_input_ids is None:
            raise ValueError("pass input_ids (text stream), audio_input_ids (audio stream), or both")
        if input_ids is not None and audio_input_ids is not None and input_ids.shape != audio_input_ids.shape:
            raise ValueError(
                f"the text stream {tuple(input_ids.shape)} and audio stream {tuple(audio_input_ids.shape)} must be "
                "aligned position by position"
            )
        if whisper_input_feature is not None and input_features is not None:
            raise ValueError("pass whisper_input_feature (encoder features) or input_features (log-mel), not both")
        has_features = whisper_input_feature is not None or input_features is not None
        marks_continuous = is_continuous_mask is not None and bool(is_continuous_mask.any())
        if marks_continuous and not has_features:
            raise ValueError(
                f"is_continuous_mask marks {int(is_continuous_mask.sum())} positions but no whisper_input_feature "
                "or input_features were given"
            )
        vocab = self.config.vocab_size
        if input_ids is not None:
            check_token_ids(input_ids, vocab, "input_ids (text stream)")
        if audio_input_ids is None:
            if has_features:
                raise ValueError(
                    "continuous audio features need audio_input_ids: the audio stream's kimia_media_begin/"
                    "kimia_media_end markers say where each segment sits (fill the span with the semantic tokens, "
                    "or with kimia_text_blank for a continuous-only run; see audio_segment)"
                )
            return embed(input_ids)
        check_token_ids(audio_input_ids, vocab, "audio_input_ids (audio stream)")
        x = embed(audio_input_ids)
        if has_features:
            x = self._add_continuous(x, audio_input_ids, whisper_input_feature, input_features, is_continuous_mask)
        if input_ids is not None and bool(input_ids.any()):
            x = x + embed(input_ids)
        return x

    def _add_continuous(self, x, audio_input_ids, whisper_input_feature, input_features, is_continuous_mask):
        adaptor = self.model.vq_adaptor
        if adaptor is None:
            raise ValueError("config.use_whisper_feature is false: there is no vq_adaptor for continuous features")
        spans = self.media_spans(audio_input_ids)
        if not spans:
            raise ValueError(
                "continuous features were given but audio_input_ids has no kimia_media_begin/kimia_media_end pair "
                f"({self.config.kimia_media_begin}/{self.config.kimia_media_end})"
            )
        lengths = [e - b - 1 for _, b, e in spans]
        if input_features is not None:
            mels = feature_segments(input_features)
            given = len(mels)
            features = self.segment_whisper_features(mels, lengths) if given == len(spans) else []
        else:
            features = [f.squeeze(0) if f.dim() == 3 else f for f in feature_segments(whisper_input_feature)]
            given = len(features)
        if given != len(spans):
            raise ValueError(
                f"audio_input_ids holds {len(spans)} audio segment(s) but {given} feature tensor(s) were given"
            )
        for i, (f, n) in enumerate(zip(features, lengths)):
            if f.dim() != 2 or f.shape[-1] != self.config.kimia_adaptor_input_dim:
                raise ValueError(
                    f"segment {i}: features of shape {tuple(f.shape)}, expected [n_tokens, "
                    f"{self.config.kimia_adaptor_input_dim}] (4 stacked Whisper frames, see stack_whisper_frames)"
                )
            if f.shape[0] < n:
                raise ValueError(f"segment {i} spans {n} positions but has only {f.shape[0]} feature rows")
        span_mask = torch.zeros_like(audio_input_ids, dtype=torch.bool)
        for row, b, e in spans:
            span_mask[row, b + 1 : e] = True
        mask = span_mask if is_continuous_mask is None else is_continuous_mask.to(span_mask.device, torch.bool)
        if mask.shape != span_mask.shape or bool((mask & ~span_mask).any()):
            raise ValueError(
                "is_continuous_mask must have the streams' shape and mark only positions inside media spans"
            )
        weight = adaptor.layers[0].weight
        adapted = adaptor(torch.cat([f[:n] for f, n in zip(features, lengths)]).to(weight.device, weight.dtype))
        expanded = torch.zeros_like(x)
        expanded[span_mask] = adapted.to(x.dtype)
        sqrt2 = torch.tensor(2.0, dtype=x.dtype, device=x.device).sqrt()
        return torch.where(mask[..., None], (x + expanded) * sqrt2, x)

    def forward(
        self,
        input_ids: Int[Tensor, "batch pos"] | None = None,
        audio_input_ids: Int[Tensor, "batch pos"] | None = None,
        whisper_input_feature: FeatureList | None = None,
        is_continuous_mask: Bool[Tensor, "batch pos"] | None = None,
        attention_mask: Int[Tensor, "batch past_and_pos"] | None = None,
        position_ids: Int[Tensor, "batch pos"] | None = None,
        past_key_values: DynamicCache | None = None,
        use_cache: bool = False,
        *,
        input_features: FeatureList | None = None,
        inputs_embeds: Float[Tensor, "batch pos hidden"] | None = None,
        output_audio: bool = True,
    ) -> KimiAudioOutput:
        """Returns ``(text_logits, audio_logits, past_key_values)``, logits over the whole vocabulary.

        Inputs are described in :meth:`embed_inputs`; ``inputs_embeds`` replaces them all. ``attention_mask``
        is the usual 2D padding mask over past and current positions. ``output_audio=False`` skips the
        mimo branch (``audio_logits`` is None), which leaves text logits unchanged.
        """
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(
                input_ids, audio_input_ids, whisper_input_feature, is_continuous_mask, input_features
            )
        elif any(
            a is not None
            for a in (input_ids, audio_input_ids, whisper_input_feature, is_continuous_mask, input_features)
        ):
            raise ValueError("pass either inputs_embeds or the token streams and features, not both")
        hidden, mimo, cache = self.model(
            inputs_embeds, attention_mask, position_ids, past_key_values, use_cache, output_audio
        )
        return KimiAudioOutput(self.lm_head(hidden), self.mimo_output(mimo) if mimo is not None else None, cache)

    @torch.no_grad()
    def generate_text(
        self,
        input_ids: Int[Tensor, "batch pos"],
        audio_input_ids: Int[Tensor, "batch pos"] | None = None,
        max_new_tokens: int = 32,
        *,
        whisper_input_feature: FeatureList | None = None,
        is_continuous_mask: Bool[Tensor, "batch pos"] | None = None,
        input_features: FeatureList | None = None,
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        use_cache: bool = True,
    ) -> Int[Tensor, "batch new"]:
        """Greedy text-stream generation, as the official loop with ``output_type="text"``.

        Each step feeds the argmax text token to the text stream and ``kimia_text_blank`` to the audio
        stream (when there is one); a row that has produced ``kimia_text_eos`` is fed blanks afterwards.
        Stops when every row has produced ``kimia_text_eos`` or after ``max_new_tokens``. Returns the
        fed-back text tokens, ``kimia_text_eos`` and the blanks after it included.
        """
        cfg = self.config
        text, audio, mask, attn = input_ids, audio_input_ids, is_continuous_mask, attention_mask
        done = torch.zeros(text.shape[0], dtype=torch.bool, device=text.device)
        new, cache = [], None
        step_text, step_audio, step_mask = text, audio, mask
        for step in range(max_new_tokens):
            out = self(
                step_text,
                step_audio,
                whisper_input_feature,
                step_mask,
                attention_mask=attn,
                past_key_values=cache,
                use_cache=use_cache,
                input_features=input_features,
                output_audio=False,
            )
            token = out.text_logits[:, -1].argmax(-1)
            token = torch.where(done, torch.full_like(token, cfg.kimia_text_blank), token)
            done |= token == cfg.kimia_text_eos
            new.append(token)
            if bool(done.all()):
                break
            blank = torch.full_like(token, cfg.kimia_text_blank)[:, None]
            if attn is not None:
                attn = torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
            if use_cache:
                cache = out.past_key_values
                step_text, step_audio = token[:, None], blank if audio is not None else None
                step_mask, whisper_input_feature, input_features = None, None, None
            else:
                text = step_text = torch.cat([text, token[:, None]], 1)
                if audio is not None:
                    audio = step_audio = torch.cat([audio, blank], 1)
                if mask is not None:
                    mask = step_mask = torch.cat([mask, torch.zeros_like(mask[:, :1])], 1)
        return torch.stack(new, 1)

    @torch.no_grad()
    def generate(
        self,
        input_ids: Int[Tensor, "batch pos"],
        audio_input_ids: Int[Tensor, "batch pos"] | None = None,
        *,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        pad_token_id: int | None = None,
        **kwargs,
    ) -> Int[Tensor, "batch pos_and_new"]:
        """HF-style text generation: the prompt's text stream followed by the tokens of :meth:`generate_text`.

        Greedy only. ``pad_token_id`` is accepted for HF callers and unused (finished rows are fed
        ``kimia_text_blank``); other keyword arguments go to :meth:`generate_text`.
        """
        if do_sample:
            raise NotImplementedError("Kimi-Audio generation is greedy here; sample from forward()'s logits instead")
        new = self.generate_text(input_ids, audio_input_ids, max_new_tokens, **kwargs)
        return torch.cat([input_ids, new.to(input_ids.device)], 1)


def feature_segments(features: FeatureList) -> list[Tensor]:
    """Continuous features as a list of ``[tokens, d]`` segments (a stacked tensor is split on its first axis)."""
    return list(features.unbind(0)) if isinstance(features, Tensor) else list(features)


def audio_segment(
    config: KimiAudioConfig, num_tokens: int, semantic_codes: Sequence[int] | None = None
) -> tuple[list[int], list[int], list[bool]]:
    """One audio message as the official prompt builder lays it out: ``(audio_ids, text_ids, is_continuous)``.

    Audio stream: ``kimia_media_begin``, the semantic codes + ``kimia_token_offset``, ``kimia_media_end``;
    text stream: ``kimia_text_blank`` throughout; continuous mask: the code positions. Without
    ``semantic_codes`` the span holds ``kimia_text_blank`` (a continuous-only run, not an official layout).
    """
    if semantic_codes is not None and len(semantic_codes) != num_tokens:
        raise ValueError(f"{len(semantic_codes)} semantic codes for {num_tokens} positions")
    if semantic_codes is None:
        inner = [config.kimia_text_blank] * num_tokens
    else:
        inner = [c + config.kimia_token_offset for c in semantic_codes]
    audio = [config.kimia_media_begin, *inner, config.kimia_media_end]
    return audio, [config.kimia_text_blank] * len(audio), [False, *[True] * num_tokens, False]


def _checkpoint_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [folder / name for name in sorted(set(weight_map.values()))]
    if (folder / "model.safetensors").exists():
        return [folder / "model.safetensors"]
    raise FileNotFoundError(
        f"no model.safetensors.index.json or model.safetensors in {folder} "
        f"(found {sorted(p.name for p in folder.iterdir()) if folder.is_dir() else 'no folder'}); "
        "only safetensors checkpoints are read"
    )


def _read_safetensors(folder: Path, dtype: torch.dtype | None, device) -> dict[str, Tensor]:
    tensors = {}
    for path in _checkpoint_files(folder):
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                cast = dtype if dtype is not None and t.is_floating_point() else t.dtype
                tensors[name] = t.to(device=device, dtype=cast)
    return tensors


def _key_report(what: str, missing: list[str], unexpected: list[str]) -> str:
    return (
        f"{what}: {len(missing)} missing tensor(s) {missing[:20]}{' ...' if len(missing) > 20 else ''}; "
        f"{len(unexpected)} unexpected tensor(s) {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}"
    )


def load_kimi_audio(
    folder: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    whisper_path: str | Path | None = None,
    attn_implementation: str = "sdpa",
    strict: bool = True,
) -> KimiAudioForCausalLM:
    """Load an official-layout checkpoint folder with tensor names unchanged; never runs remote code.

    Reads ``config.json`` and the safetensors shards (through ``model.safetensors.index.json`` when
    present). ``dtype=None`` keeps each tensor's stored dtype. The Whisper encoder is read from
    ``whisper_path``, by default ``<folder>/whisper-large-v3`` when that exists (its tensors may be
    named ``model.encoder.*`` or ``encoder.*``; decoder tensors are skipped). Missing tensors always
    raise; unexpected ones raise when ``strict`` and warn otherwise.
    """
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} has no config.json")
    config = KimiAudioConfig.from_json(folder / "config.json")
    whisper_dir = Path(whisper_path) if whisper_path is not None else folder / WHISPER_SUBFOLDER
    if whisper_path is not None and not (whisper_dir / "config.json").exists():
        raise FileNotFoundError(f"whisper_path {whisper_dir} has no config.json")
    whisper_json = whisper_dir / "config.json"
    whisper_config = WhisperConfig.from_json_file(str(whisper_json)) if whisper_json.exists() else None
    with torch.device("meta"):
        model = KimiAudioForCausalLM(config, attn_implementation, whisper_config)
    expected = [k for k in model.state_dict() if not k.startswith("whisper_encoder.")]
    state = _read_safetensors(folder, dtype, device)
    if config.tie_word_embeddings and "model.embed_tokens.weight" in state:
        state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
    missing, unexpected = sorted(set(expected) - state.keys()), sorted(state.keys() - set(expected))
    if missing or (unexpected and strict):
        raise ValueError(_key_report(f"checkpoint {folder} does not match Kimi-Audio", missing, unexpected))
    if unexpected:
        warnings.warn(_key_report(f"ignored tensors in {folder}", [], unexpected))
    state = {k: state[k] for k in expected}
    if whisper_config is not None:
        prefixes = ("model.encoder.", "encoder.")
        found = {}
        for name, t in _read_safetensors(whisper_dir, dtype, device).items():
            for p in prefixes:
                if name.startswith(p):
                    found["whisper_encoder." + name[len(p) :]] = t
        wanted = [k for k in model.state_dict() if k.startswith("whisper_encoder.")]
        missing = sorted(set(wanted) - found.keys())
        if missing:
            raise ValueError(_key_report(f"Whisper checkpoint {whisper_dir} lacks encoder tensors", missing, []))
        state.update((k, found[k]) for k in wanted)
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb = Qwen2RotaryEmbedding(model.qwen2_config).to(device)
    return model.eval()


TINY_SPECIAL_IDS = special_token_layout(170)
TINY_CONFIG = {
    "architectures": ["MoonshotKimiaForCausalLM"],
    "model_type": "moonshot_kimia",
    "torch_dtype": "float32",
    "vocab_size": 256,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "use_cache": True,
    "kimia_mimo_layers": 2,
    "kimia_mimo_audiodelaytokens": 6,
    "kimia_mimo_transformer_from_layer_index": 1,
    "kimia_audio_output_vocab": 64,
    "kimia_text_output_vocab": 208,
    "num_audio_special_tokens": 16,
    "num_base_tokens": 170,  # the 34 named special tokens take ids 170..203, below kimia_token_offset
    "kimia_token_offset": 208,
    "use_whisper_feature": True,
    "kimia_adaptor_input_dim": 64,
    "kimia_media_begin": TINY_SPECIAL_IDS["<|im_media_begin|>"],
    "kimia_media_end": TINY_SPECIAL_IDS["<|im_media_end|>"],
    "kimia_text_blank": TINY_SPECIAL_IDS["<|im_kimia_text_blank|>"],
    "kimia_text_eos": TINY_SPECIAL_IDS["<|im_kimia_text_eos|>"],
}

TINY_WHISPER_CONFIG = dict(
    d_model=16,
    encoder_layers=2,
    encoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_layers=1,
    decoder_attention_heads=2,
    decoder_ffn_dim=32,
    num_mel_bins=8,
    max_source_positions=12,
    max_target_positions=16,
    vocab_size=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=3,
)


def save_tiny_kimi_audio(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random checkpoint in the official layout: config.json, two safetensors shards with an
    index, and a ``whisper-large-v3/`` folder (WhisperConfig + ``model.encoder.*`` tensors).

    Norm weights are randomised too, so a swapped norm cannot go unnoticed in tests.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = KimiAudioConfig.from_dict(TINY_CONFIG)
    whisper_config = WhisperConfig(**TINY_WHISPER_CONFIG)
    model = KimiAudioForCausalLM(config, whisper_config=whisper_config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.add_(0.1 * torch.randn_like(p))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    main = {k: v for k, v in state.items() if not k.startswith("whisper_encoder.")}
    names = list(main)
    shards = {
        "model-00001-of-00002.safetensors": names[: len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    for shard, keys in shards.items():
        save_file({k: main[k] for k in keys}, str(folder / shard), metadata={"format": "pt"})
    index = {
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in main.values())},
        "weight_map": {k: shard for shard, keys in shards.items() for k in keys},
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    whisper_dir = folder / WHISPER_SUBFOLDER
    whisper_dir.mkdir(exist_ok=True)
    whisper_config.to_json_file(str(whisper_dir / "config.json"))
    prefix = "whisper_encoder."
    encoder = {"model.encoder." + k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    save_file(encoder, str(whisper_dir / "model.safetensors"), metadata={"format": "pt"})
    return folder
