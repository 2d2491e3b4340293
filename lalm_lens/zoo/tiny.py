"""Tiny random checkpoints of the real HF classes, written with ``save_pretrained``.

Tests, the CLI demo and the benchmark load these through the same
``from_pretrained`` path a user takes with a real checkpoint. Tokenizers are
built offline with the ``tokenizers`` library and carry each family's real
special tokens and a chat template of the family's shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from torch import nn
from transformers import (
    AudioFlamingo3Config,
    AudioFlamingo3ForConditionalGeneration,
    AudioFlamingo3Processor,
    MusicFlamingoConfig,
    MusicFlamingoForConditionalGeneration,
    MusicFlamingoProcessor,
    GlmAsrConfig,
    GlmAsrForConditionalGeneration,
    GlmAsrProcessor,
    PreTrainedTokenizerFast,
    VoxtralConfig,
    VoxtralForConditionalGeneration,
    VoxtralProcessor,
    Qwen2_5OmniConfig,
    Qwen2_5OmniForConditionalGeneration,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    Qwen3ASRConfig,
    Qwen3ASRFeatureExtractor,
    Qwen3ASRForConditionalGeneration,
    Qwen3ASRProcessor,
    Qwen3OmniMoeConfig,
    Qwen3OmniMoeForConditionalGeneration,
    Qwen3OmniMoeThinkerConfig,
    Qwen3OmniMoeThinkerForConditionalGeneration,
    WhisperFeatureExtractor,
)

CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN2_AUDIO_SPECIALS = CHAT_SPECIALS + ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
AF3_SPECIALS = CHAT_SPECIALS + ["<sound>"]
MUSIC_FLAMINGO_SPECIALS = AF3_SPECIALS + ["<|sound_bos|>", "<|sound_eos|>"]
OMNI_SPECIALS = CHAT_SPECIALS + [
    "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>",
]
OMNI_TOKENS = {
    "audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
    "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
}

BASE_WORDS = (
    "system user assistant you are a helpful . , ? ! : audio 0 1 2 3 4 5 6 7 8 9 what sounds is there in the "
    "sound emotion does speaker express yes no neutral happy angry sad siren dog bell knock engine bird rain "
    "beep describe listen how many when where time seconds first second third event and or of to it this"
).split()

QWEN2_AUDIO_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'audio' %}"
    "{% set audio_count.value = audio_count.value + 1 %}Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

OMNI_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'audio' %}"
    "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio {{ audio_count.value }}: {% endif %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>{% elif content['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

AF3_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'audio' %}<sound>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def word_tokenizer(
    specials: list[str], words=BASE_WORDS, chat_template: str | None = None, named_tokens: dict[str, str] | None = None,
    roles: dict[str, str] | None = None,
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: special tokens first (ids 0..), then ``words``; unknown words map to ``<unk>``.

    ``named_tokens`` (e.g. ``{"audio_token": "<|AUDIO|>"}``) become attributes
    such as ``tokenizer.audio_token`` / ``tokenizer.audio_token_id``, as some processors require.
    ``roles`` replaces the Qwen chat roles (``eos_token`` ``<|im_end|>``, ``pad_token`` ``<|endoftext|>``)
    and may add a ``bos_token``.
    """
    vocab = {tok: i for i, tok in enumerate([*specials, "<unk>", *dict.fromkeys(words)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        **(roles or {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
        additional_special_tokens=specials,
        padding_side="left",
        **({"extra_special_tokens": named_tokens} if named_tokens else {}),
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def _whisper_features(max_seconds: int = 30, n_mels: int = 128) -> WhisperFeatureExtractor:
    return WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=16000, chunk_length=max_seconds)


class LayerShape(NamedTuple):
    """Head counts and MLP widths of a tiny checkpoint; None keeps the test defaults
    (decoder heads of 16 dims, one key/value head per two query heads, encoder heads of 32 dims,
    MLPs 3x / 4x wide). The benchmark sets them to a released model's, whose heads are 128
    (decoder) and 64 (encoder) wide."""

    heads: int | None = None
    kv_heads: int | None = None
    d_mlp: int | None = None
    audio_heads: int | None = None
    d_audio_mlp: int | None = None


def _encoder_kwargs(d_audio: int, audio_layers: int, n_mels: int, max_seconds: int, shape: LayerShape) -> dict:
    return dict(
        num_mel_bins=n_mels,
        d_model=d_audio,
        encoder_layers=audio_layers,
        encoder_attention_heads=shape.audio_heads or max(1, d_audio // 32),
        encoder_ffn_dim=shape.d_audio_mlp or 4 * d_audio,
        max_source_positions=max_seconds * 50,
    )


def _text_kwargs(d_model: int, layers: int, vocab: int, shape: LayerShape) -> dict:
    heads = shape.heads or max(2, d_model // 16)
    return dict(
        hidden_size=d_model,
        intermediate_size=shape.d_mlp or 3 * d_model,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=shape.kv_heads or max(1, heads // 2),
        vocab_size=vocab,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )


def _write_model(path: Path, model_class: type, config, seed: int, adjust: Callable[[nn.Module], None] | None = None) -> None:
    """Build ``model_class(config)`` with seeded random weights and save it to ``path``; ``adjust(model)`` (run
    without gradients, after the init) redraws parameters HF initialises to values a trained model never has."""
    torch.manual_seed(seed)
    model = model_class(config)
    if adjust is not None:
        with torch.no_grad():
            adjust(model)
    model.save_pretrained(path)


def save_tiny_qwen2_audio(
    path: str | Path,
    *,
    d_model: int = 64,
    layers: int = 2,
    d_audio: int = 64,
    audio_layers: int = 2,
    n_mels: int = 128,
    max_seconds: int = 30,
    seed: int = 0,
    shape: LayerShape = LayerShape(),
) -> Path:
    """Write a random ``Qwen2AudioForConditionalGeneration`` with its processor to ``path``."""
    path = Path(path)
    tokenizer = word_tokenizer(QWEN2_AUDIO_SPECIALS, chat_template=QWEN2_AUDIO_TEMPLATE)
    config = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", **_encoder_kwargs(d_audio, audio_layers, n_mels, max_seconds, shape)),
        text_config=dict(model_type="qwen2", **_text_kwargs(d_model, layers, len(tokenizer), shape)),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    _write_model(path, Qwen2AudioForConditionalGeneration, config, seed)
    processor = Qwen2AudioProcessor(
        feature_extractor=_whisper_features(max_seconds, n_mels), tokenizer=tokenizer, chat_template=QWEN2_AUDIO_TEMPLATE
    )
    processor.save_pretrained(path)
    return path


def save_tiny_audio_flamingo3(
    path: str | Path,
    *,
    d_model: int = 64,
    layers: int = 2,
    d_audio: int = 64,
    audio_layers: int = 2,
    n_mels: int = 128,
    window_seconds: int = 30,
    seed: int = 0,
    shape: LayerShape = LayerShape(),
) -> Path:
    """Write a random ``AudioFlamingo3ForConditionalGeneration`` with its processor to ``path``."""
    path = Path(path)
    tokenizer = word_tokenizer(AF3_SPECIALS, chat_template=AF3_TEMPLATE)
    encoder = _encoder_kwargs(d_audio, audio_layers, n_mels, window_seconds, shape)
    config = AudioFlamingo3Config(
        audio_config=dict(
            model_type="audioflamingo3_encoder",
            hidden_size=encoder["d_model"],
            num_hidden_layers=encoder["encoder_layers"],
            num_attention_heads=encoder["encoder_attention_heads"],
            intermediate_size=encoder["encoder_ffn_dim"],
            num_mel_bins=n_mels,
            max_source_positions=encoder["max_source_positions"],
        ),
        text_config=dict(model_type="qwen2", **_text_kwargs(d_model, layers, len(tokenizer), shape)),
        audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"),
    )
    _write_model(path, AudioFlamingo3ForConditionalGeneration, config, seed)
    processor = AudioFlamingo3Processor(
        feature_extractor=_whisper_features(window_seconds, n_mels), tokenizer=tokenizer, chat_template=AF3_TEMPLATE
    )
    processor.save_pretrained(path)
    return path


def _af3_encoder_config(d_audio: int, audio_layers: int, n_mels: int, window_seconds: int, shape: LayerShape) -> dict:
    encoder = _encoder_kwargs(d_audio, audio_layers, n_mels, window_seconds, shape)
    return dict(
        model_type="audioflamingo3_encoder",
        hidden_size=encoder["d_model"],
        num_hidden_layers=encoder["encoder_layers"],
        num_attention_heads=encoder["encoder_attention_heads"],
        intermediate_size=encoder["encoder_ffn_dim"],
        num_mel_bins=n_mels,
        max_source_positions=encoder["max_source_positions"],
    )


def save_tiny_music_flamingo(
    path: str | Path,
    *,
    d_model: int = 64,
    layers: int = 2,
    d_audio: int = 64,
    audio_layers: int = 2,
    n_mels: int = 128,
    window_seconds: int = 30,
    seed: int = 0,
    shape: LayerShape = LayerShape(),
) -> Path:
    """Write a random ``MusicFlamingoForConditionalGeneration`` (AF3 layout plus rotary time embedding) with its processor."""
    path = Path(path)
    tokenizer = word_tokenizer(MUSIC_FLAMINGO_SPECIALS, chat_template=AF3_TEMPLATE)
    config = MusicFlamingoConfig(
        audio_config=_af3_encoder_config(d_audio, audio_layers, n_mels, window_seconds, shape),
        text_config=dict(model_type="qwen2", **_text_kwargs(d_model, layers, len(tokenizer), shape)),
        audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"),
        audio_bos_token_id=tokenizer.convert_tokens_to_ids("<|sound_bos|>"),
        audio_eos_token_id=tokenizer.convert_tokens_to_ids("<|sound_eos|>"),
    )
    _write_model(path, MusicFlamingoForConditionalGeneration, config, seed)
    processor = MusicFlamingoProcessor(
        feature_extractor=_whisper_features(window_seconds, n_mels), tokenizer=tokenizer, chat_template=AF3_TEMPLATE
    )
    processor.save_pretrained(path)
    return path


NO_STOP = {"bos_token_id": None, "eos_token_id": None}
"""Random tiny decoders get no end-of-sequence id (as the Qwen2-Audio and AF3 ones): generation runs all
``max_new_tokens``, whatever the random weights emit."""

TEKKEN_CONTROL = [
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]",
    "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]", "<SPECIAL_20>", "<SPECIAL_21>", "<SPECIAL_22>",
    "<SPECIAL_23>", "[AUDIO]", "[BEGIN_AUDIO]", "[TRANSCRIBE]",
]
"""Voxtral's Tekken control tokens at their ids (``VoxtralProcessor`` hard-codes ``[AUDIO]`` = 24; 20-23 stand in for
control tokens the audio path does not use)."""


def voxtral_tokenizer(words=BASE_WORDS) -> PreTrainedTokenizerFast:
    """A word-level stand-in for Voxtral's Tekken tokenizer: the control tokens at their real ids, then ``words``."""
    vocab = {tok: i for i, tok in enumerate([*TEKKEN_CONTROL, *dict.fromkeys(words)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=[t for t in TEKKEN_CONTROL if t not in ("<unk>", "<s>", "</s>", "<pad>")],
        padding_side="left",
    )


def save_tiny_voxtral(
    path: str | Path,
    *,
    d_model: int = 64,
    layers: int = 2,
    d_audio: int = 64,
    audio_layers: int = 2,
    n_mels: int = 128,
    seed: int = 0,
    shape: LayerShape = LayerShape(),
) -> Path:
    """Write a random ``VoxtralForConditionalGeneration`` (Llama decoder) with its processor to ``path``.

    The encoder MLP stays ``4 * d_audio`` wide: Voxtral stacks ``intermediate_size / d_model`` frames per token.
    """
    path = Path(path)
    tokenizer = voxtral_tokenizer()
    encoder = _encoder_kwargs(d_audio, audio_layers, n_mels, 30, shape._replace(d_audio_mlp=4 * d_audio))
    text = _text_kwargs(d_model, layers, len(tokenizer), shape)
    config = VoxtralConfig(
        audio_config=dict(model_type="voxtral_encoder", **encoder),
        text_config=dict(model_type="llama", head_dim=d_model // text["num_attention_heads"], **NO_STOP, **text),
        audio_token_id=tokenizer.convert_tokens_to_ids("[AUDIO]"),
    )
    _write_model(path, VoxtralForConditionalGeneration, config, seed)
    VoxtralProcessor(feature_extractor=_whisper_features(30, n_mels), tokenizer=tokenizer).save_pretrained(path)
    return path


GLMASR_SPECIALS = [
    "<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|begin_of_audio|>", "<|end_of_audio|>",
    "<|pad|>",
]
GLMASR_TEMPLATE = (
    "[gMASK]<sop>{% for message in messages %}<|{{ message['role'] }}|>\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'audio' %}"
    "<|begin_of_audio|><|pad|><|end_of_audio|>\n{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def save_tiny_glmasr(
    path: str | Path,
    *,
    d_model: int = 64,
    layers: int = 2,
    d_audio: int = 64,
    audio_layers: int = 2,
    n_mels: int = 128,
    window_seconds: int = 30,
    seed: int = 0,
    shape: LayerShape = LayerShape(),
) -> Path:
    """Write a random ``GlmAsrForConditionalGeneration`` (rotary pre-norm encoder, Llama decoder) with its processor.

    The encoder MLP stays ``4 * d_audio`` wide: the projector reads four stacked frames as ``intermediate_size``.
    """
    path = Path(path)
    tokenizer = word_tokenizer(GLMASR_SPECIALS, chat_template=GLMASR_TEMPLATE)
    text = _text_kwargs(d_model, layers, len(tokenizer), shape)
    audio_heads = shape.audio_heads or max(1, d_audio // 32)
    config = GlmAsrConfig(
        audio_config=dict(
            model_type="glmasr_encoder", hidden_size=d_audio, intermediate_size=4 * d_audio, num_hidden_layers=audio_layers,
            num_attention_heads=audio_heads, num_key_value_heads=audio_heads, num_mel_bins=n_mels,
            max_position_embeddings=window_seconds * 50,
        ),
        text_config=dict(model_type="llama", head_dim=d_model // text["num_attention_heads"], **NO_STOP, **text),
        audio_token_id=tokenizer.convert_tokens_to_ids("<|pad|>"),
    )
    _write_model(path, GlmAsrForConditionalGeneration, config, seed)
    GlmAsrProcessor(
        feature_extractor=_whisper_features(window_seconds, n_mels), tokenizer=tokenizer, chat_template=GLMASR_TEMPLATE
    ).save_pretrained(path)
    return path


QWEN3_ASR_TOKENS = {"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>"}
QWEN3_ASR_SPECIALS = CHAT_SPECIALS + list(QWEN3_ASR_TOKENS.values())
QWEN3_ASR_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'audio' %}"
    "<|audio_start|><|audio_pad|><|audio_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_qwen3_asr(
    path: str | Path,
    *,
    d_model: int = 64,
    layers: int = 2,
    d_audio: int = 64,
    audio_layers: int = 2,
    n_mels: int = 128,
    seed: int = 0,
    shape: LayerShape = LayerShape(),
) -> Path:
    """Write a random ``Qwen3ASRForConditionalGeneration`` (Qwen3-Omni-style encoder, Qwen3 decoder) with its processor.

    The encoder keeps the released 1 s convolution chunks and 8 s attention windows.
    """
    path = Path(path)
    tokenizer = word_tokenizer(QWEN3_ASR_SPECIALS, chat_template=QWEN3_ASR_TEMPLATE, named_tokens=QWEN3_ASR_TOKENS)
    text = _text_kwargs(d_model, layers, len(tokenizer), shape)
    config = Qwen3ASRConfig(
        audio_config=dict(
            model_type="qwen3_asr_encoder", num_mel_bins=n_mels, d_model=d_audio, encoder_layers=audio_layers,
            encoder_attention_heads=shape.audio_heads or max(1, d_audio // 32), encoder_ffn_dim=shape.d_audio_mlp or 4 * d_audio,
            output_dim=d_model, downsample_hidden_size=16,
        ),
        text_config=dict(model_type="qwen3", head_dim=d_model // text["num_attention_heads"], **text),
        audio_token_id=tokenizer.convert_tokens_to_ids("<|audio_pad|>"),
        pad_token_id=tokenizer.pad_token_id, eos_token_id=[],  # no stop id (see NO_STOP)
        tie_word_embeddings=False,
    )
    _write_model(path, Qwen3ASRForConditionalGeneration, config, seed)
    features = Qwen3ASRFeatureExtractor(feature_size=n_mels, sampling_rate=16000)
    Qwen3ASRProcessor(feature_extractor=features, tokenizer=tokenizer, chat_template=QWEN3_ASR_TEMPLATE).save_pretrained(path)
    return path


def _omni_thinker_config(
    tokenizer, d_model: int, layers: int, d_audio: int, audio_layers: int, n_mels: int, shape: LayerShape = LayerShape(),
    seconds_per_chunk: int = 2,
) -> dict:
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in OMNI_TOKENS.items()}
    text = _text_kwargs(d_model, layers, len(tokenizer), shape)
    head_dim = d_model // text["num_attention_heads"]
    third = head_dim // 2 // 3
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [head_dim // 2 - 2 * third, third, third]}
    return dict(
        text_config=text,
        audio_config=dict(
            **_encoder_kwargs(d_audio, audio_layers, n_mels, 30, shape), n_window=50 * seconds_per_chunk, output_dim=d_model
        ),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=d_model, fullatt_block_indexes=[0]),
        audio_token_index=ids["audio_token"], image_token_index=ids["image_token"], video_token_index=ids["video_token"],
        audio_start_token_id=ids["audio_bos_token"], audio_end_token_id=ids["audio_eos_token"],
        vision_start_token_id=ids["vision_bos_token"], vision_end_token_id=ids["vision_eos_token"],
        seconds_per_chunk=seconds_per_chunk, user_token_id=tokenizer.convert_tokens_to_ids("user"),
    )


def _save_omni_processor(
    path: Path, tokenizer, max_seconds: int, n_mels: int, chat_template: str = OMNI_TEMPLATE, qwen3: bool = False
) -> None:
    """Write the processor files of an Omni checkpoint (as ``Qwen2_5OmniProcessor``, or ``Qwen3OmniMoeProcessor``
    where ``qwen3``, with ``Qwen2VLVideoProcessor``).

    Omni processors cannot be built without torchvision, so the files
    are written through the adapter's video-less stand-in and then named as the
    real classes; where torchvision is installed, ``AutoProcessor`` loads them.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from ..adapters.qwen2_5_omni import omni_processor_without_video
    from ..adapters.qwen3_omni import qwen3_omni_processor_without_video

    build = qwen3_omni_processor_without_video if qwen3 else omni_processor_without_video
    real = "Qwen3OmniMoeProcessor" if qwen3 else "Qwen2_5OmniProcessor"
    build(
        path, tokenizer=tokenizer, feature_extractor=_whisper_features(max_seconds, n_mels),
        image_processor=Qwen2VLImageProcessorPil(), chat_template=chat_template,
    ).save_pretrained(path)
    for name, update in {
        "processor_config.json": {"processor_class": real, "video_processor": {"video_processor_type": "Qwen2VLVideoProcessor"}},
        "tokenizer_config.json": {"processor_class": real},
    }.items():
        file = path / name
        file.write_text(json.dumps({**json.loads(file.read_text()), **update}, indent=2, sort_keys=True) + "\n")


def save_tiny_qwen2_5_omni_thinker(
    path: str | Path,
    *,
    d_model: int = 64,
    layers: int = 2,
    d_audio: int = 64,
    audio_layers: int = 2,
    n_mels: int = 128,
    max_seconds: int = 30,
    seed: int = 0,
    shape: LayerShape = LayerShape(),
) -> Path:
    """Write a random ``Qwen2_5OmniThinkerForConditionalGeneration`` (thinker-only checkpoint) with its processor."""
    path = Path(path)
    tokenizer = word_tokenizer(OMNI_SPECIALS, chat_template=OMNI_TEMPLATE, named_tokens=OMNI_TOKENS)
    config = Qwen2_5OmniThinkerConfig(**_omni_thinker_config(tokenizer, d_model, layers, d_audio, audio_layers, n_mels, shape))
    _write_model(path, Qwen2_5OmniThinkerForConditionalGeneration, config, seed)
    _save_omni_processor(path, tokenizer, max_seconds, n_mels)
    return path


def save_tiny_qwen2_5_omni(
    path: str | Path, *, d_model: int = 64, layers: int = 2, d_audio: int = 64, audio_layers: int = 2, n_mels: int = 128,
    max_seconds: int = 30, seed: int = 0,
) -> Path:
    """Write a random full ``Qwen2_5OmniForConditionalGeneration`` (thinker, talker, token2wav, ``spk_dict.pt``) with its processor."""
    path = Path(path)
    tokenizer = word_tokenizer(OMNI_SPECIALS, chat_template=OMNI_TEMPLATE, named_tokens=OMNI_TOKENS)
    thinker = _omni_thinker_config(tokenizer, d_model, layers, d_audio, audio_layers, n_mels)
    shared = {k: thinker[k] for k in ("audio_token_index", "image_token_index", "video_token_index", "audio_start_token_id",
                                       "audio_end_token_id", "vision_start_token_id", "vision_end_token_id")}
    talker = dict(
        vocab_size=32, embedding_size=d_model, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        tts_codec_start_token_id=28, tts_codec_end_token_id=29, tts_codec_pad_token_id=27, tts_codec_mask_token_id=30,
        tts_text_start_token_id=0, tts_text_end_token_id=1, tts_text_pad_token_id=2, **shared,
    )
    token2wav = dict(
        dit_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=16, emb_dim=16, num_embeds=32, mel_dim=8,
                        enc_emb_dim=8, enc_dim=8, enc_channels=[8, 8, 8, 8, 16], enc_attention_channels=4, enc_se_channels=4,
                        look_ahead_layers=[0], look_backward_layers=[0]),
        bigvgan_config=dict(mel_dim=8, upsample_initial_channel=16, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]],
                            upsample_rates=[2], upsample_kernel_sizes=[4]),
    )
    config = Qwen2_5OmniConfig(thinker_config=thinker, talker_config=talker, token2wav_config=token2wav)
    _write_model(path, Qwen2_5OmniForConditionalGeneration, config, seed)
    speaker = {"bos_token": talker["tts_codec_start_token_id"], "cond": torch.zeros(8), "ref_mel": torch.zeros(30, 8)}
    torch.save({"Chelsie": speaker}, path / "spk_dict.pt")
    _save_omni_processor(path, tokenizer, max_seconds, n_mels)
    return path


QWEN3_OMNI_TOKENS = {
    **QWEN3_ASR_TOKENS, "image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
    "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
}
QWEN3_OMNI_SPECIALS = CHAT_SPECIALS + list(QWEN3_OMNI_TOKENS.values())
QWEN3_OMNI_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'audio' %}"
    "<|audio_start|><|audio_pad|><|audio_end|>{% elif content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen3_omni_thinker_config(
    tokenizer, d_model: int, layers: int, d_audio: int, audio_layers: int, n_mels: int, n_experts: int, experts_per_token: int,
    d_expert: int, shape: LayerShape = LayerShape(),
) -> dict:
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in QWEN3_OMNI_TOKENS.items()}
    text = _text_kwargs(d_model, layers, len(tokenizer), shape)
    text.pop("tie_word_embeddings")
    head_dim = d_model // text["num_attention_heads"]
    third = head_dim // 2 // 3
    return dict(
        text_config=dict(
            **text, head_dim=head_dim, moe_intermediate_size=d_expert, num_experts=n_experts,
            num_experts_per_tok=experts_per_token, norm_topk_prob=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_interleaved": True,
                             "mrope_section": [head_dim // 2 - 2 * third, third, third]},
        ),
        audio_config=dict(
            num_mel_bins=n_mels, d_model=d_audio, encoder_layers=audio_layers,
            encoder_attention_heads=shape.audio_heads or max(1, d_audio // 32), encoder_ffn_dim=shape.d_audio_mlp or 4 * d_audio,
            output_dim=d_model, downsample_hidden_size=16,
        ),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=d_model,
                           deepstack_visual_indexes=[0]),
        audio_token_id=ids["audio_token"], image_token_id=ids["image_token"], video_token_id=ids["video_token"],
        audio_start_token_id=ids["audio_bos_token"], vision_start_token_id=ids["vision_bos_token"],
        user_token_id=tokenizer.convert_tokens_to_ids("user"), tie_word_embeddings=False,
    )


def save_tiny_qwen3_omni_thinker(
    path: str | Path,
    *,
    d_model: int = 64,
    layers: int = 2,
    d_audio: int = 64,
    audio_layers: int = 2,
    n_mels: int = 128,
    n_experts: int = 8,
    experts_per_token: int = 2,
    d_expert: int = 32,
    seed: int = 0,
    shape: LayerShape = LayerShape(),
) -> Path:
    """Write a random ``Qwen3OmniMoeThinkerForConditionalGeneration`` (thinker-only checkpoint) with its processor.

    Every decoder layer is a sparse MoE block (``n_experts`` experts of
    ``d_expert`` neurons, top ``experts_per_token``, renormalised), as in
    the released 30B-A3B (128 experts of 768, top 8). The encoder keeps the
    released 1 s convolution chunks and 8 s attention windows.
    """
    path = Path(path)
    tokenizer = word_tokenizer(QWEN3_OMNI_SPECIALS, chat_template=QWEN3_OMNI_TEMPLATE, named_tokens=QWEN3_OMNI_TOKENS)
    thinker = _qwen3_omni_thinker_config(tokenizer, d_model, layers, d_audio, audio_layers, n_mels, n_experts, experts_per_token, d_expert, shape)
    _write_model(path, Qwen3OmniMoeThinkerForConditionalGeneration, Qwen3OmniMoeThinkerConfig(**thinker), seed)
    _save_omni_processor(path, tokenizer, 30, n_mels, QWEN3_OMNI_TEMPLATE, qwen3=True)
    return path


def save_tiny_qwen3_omni(path: str | Path, *, d_model: int = 64, layers: int = 2, d_audio: int = 64, seed: int = 0) -> Path:
    """Write a random full ``Qwen3OmniMoeForConditionalGeneration`` (thinker, a tiny talker and code2wav) with its processor."""
    path = Path(path)
    tokenizer = word_tokenizer(QWEN3_OMNI_SPECIALS, chat_template=QWEN3_OMNI_TEMPLATE, named_tokens=QWEN3_OMNI_TOKENS)
    thinker = _qwen3_omni_thinker_config(tokenizer, d_model, layers, d_audio, layers, 128, 8, 2, 32)
    shared = {k: thinker[k] for k in ("audio_token_id", "image_token_id", "video_token_id", "vision_start_token_id", "audio_start_token_id")}
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    talker = dict(
        text_config=dict(vocab_size=64, moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2, shared_expert_intermediate_size=32,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 2, 2]}, **small),
        code_predictor_config=dict(vocab_size=64, num_code_groups=4, **small),
        num_code_groups=4, thinker_hidden_size=d_model, accept_hidden_layer=layers - 1, codec_eos_token_id=60, codec_nothink_id=61,
        codec_think_bos_id=62, codec_think_eos_id=63, codec_pad_id=58, codec_bos_id=59, spatial_merge_size=2, **shared,
    )
    code2wav = dict(codebook_size=64, hidden_size=32, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64, num_hidden_layers=1,
                    num_quantizers=4, upsample_rates=[2, 2], upsampling_ratios=[2], decoder_dim=32, sliding_window=8)
    config = Qwen3OmniMoeConfig(thinker_config=thinker, talker_config=talker, code2wav_config=code2wav)

    def draw_talker_experts(model: nn.Module) -> None:  # HF leaves them uninitialised (torch.empty): not reproducible
        for name, param in model.talker.named_parameters():
            if ".mlp.experts." in name:
                param.normal_(0.0, 0.02)

    _write_model(path, Qwen3OmniMoeForConditionalGeneration, config, seed, adjust=draw_talker_experts)
    _save_omni_processor(path, tokenizer, 30, 128, QWEN3_OMNI_TEMPLATE, qwen3=True)
    return path


GEMMA3N_TOKENS = {
    "audio_token": "<audio_soft_token>", "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>",
    "image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
}
GEMMA3N_TEXT_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<start_of_audio>"]
GEMMA3N_VISION_TOKENS = ["<end_of_image>", "<image_soft_token>", "<vision_2>", "<vision_3>"]
GEMMA3N_AUDIO_TOKENS = ["<end_of_audio>", "<audio_soft_token>", "<audio_2>", "<audio_3>"]
"""Gemma-3n's id layout, shrunk: text ids first, then the vision block (``<end_of_image>`` at its offset), then the
audio block (``<end_of_audio>`` at its offset, the soft token next); the last id embeds audio padding."""
GEMMA3N_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set prefix = messages[0]['content'] + ' ' %}"
    "{% set messages = messages[1:] %}{% else %}{% set prefix = '' %}{% endif %}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n{% if loop.first %}{{ prefix }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'audio' %}<audio_soft_token>{% elif item['type'] == 'image' %}<image_soft_token>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def gemma3n_tokenizer(words=(*BASE_WORDS, "model")) -> PreTrainedTokenizerFast:
    """A word-level stand-in for Gemma-3n's tokenizer with its special tokens in the real order (see GEMMA3N_TOKENS)."""
    text = [*GEMMA3N_TEXT_SPECIALS, *dict.fromkeys(w for w in words if w not in GEMMA3N_TEXT_SPECIALS)]
    vocab = {tok: i for i, tok in enumerate([*text, *GEMMA3N_VISION_TOKENS, *GEMMA3N_AUDIO_TOKENS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        additional_special_tokens=[*GEMMA3N_TEXT_SPECIALS[4:], *GEMMA3N_VISION_TOKENS, *GEMMA3N_AUDIO_TOKENS],
        extra_special_tokens=GEMMA3N_TOKENS, padding_side="left",
    )
    # named tokens alone would leave the others to the word splitter: mark every control token as a special added token
    controls = [*GEMMA3N_TEXT_SPECIALS, *GEMMA3N_VISION_TOKENS, *GEMMA3N_AUDIO_TOKENS]
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in controls], special_tokens=True)
    tokenizer.chat_template = GEMMA3N_TEMPLATE
    return tokenizer


def save_tiny_gemma3n(
    path: str | Path,
    *,
    d_model: int = 64,
    layers: int = 4,
    d_audio: int = 32,
    audio_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write a random ``Gemma3nForConditionalGeneration`` (audio and text path) with its processor to ``path``.

    Decoder layers alternate sliding and full attention; with four (the default, the fewest that hold both
    attention kinds and both KV-sharing roles) the last two reuse the keys and values of the first two (from
    four layers on, the second half shares), and the first half has the activation-sparsity gate (0.95, as
    the released models' first ten layers). AltUp keeps its four streams.
    The audio encoder keeps the released chunked attention (12 frames, 12 of left context), 4x subsampling
    convolutions and 4x reduction, so a clip gives the released 188 soft tokens. The vision tower's config is
    valid; lalm-lens builds it as an empty stand-in where timm is not installed
    (:class:`lalm_lens.adapters.gemma3n.AudioOnlyVisionTower`).
    """
    from transformers import (
        Gemma3nAudioFeatureExtractor, Gemma3nConfig, Gemma3nForConditionalGeneration, Gemma3nProcessor, SiglipImageProcessorPil,
    )

    from ..adapters import gemma3n  # noqa: F401  (registers the vision stand-in where timm is missing)

    path = Path(path)
    tokenizer = gemma3n_tokenizer()
    ids = lambda token: tokenizer.convert_tokens_to_ids(token)
    n_text = ids(GEMMA3N_VISION_TOKENS[0])
    heads = max(2, d_model // 16)
    config = Gemma3nConfig(
        text_config=dict(
            vocab_size=len(tokenizer), vocab_size_per_layer_input=n_text, hidden_size=d_model, intermediate_size=3 * d_model,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2, head_dim=d_model // heads,
            layer_types=[("sliding_attention", "full_attention")[i % 2] for i in range(layers)], sliding_window=16,
            num_kv_shared_layers=layers // 2 if layers >= 4 else 0, hidden_size_per_layer_input=16, laurel_rank=8,
            activation_sparsity_pattern=[0.95 if i < layers // 2 else 0.0 for i in range(layers)],
            max_position_embeddings=4096, pad_token_id=tokenizer.pad_token_id, **NO_STOP,
        ),
        audio_config=dict(
            hidden_size=d_audio, conf_num_hidden_layers=audio_layers, conf_num_attention_heads=max(1, d_audio // 16),
            sscp_conv_channel_size=[8, 4], vocab_size=len(GEMMA3N_AUDIO_TOKENS), vocab_offset=ids(GEMMA3N_AUDIO_TOKENS[0]),
        ),
        vision_config=dict(hidden_size=16, vocab_size=len(GEMMA3N_VISION_TOKENS), vocab_offset=n_text),
        boi_token_id=ids("<start_of_image>"), eoi_token_id=ids("<end_of_image>"), image_token_id=ids("<image_soft_token>"),
        boa_token_id=ids("<start_of_audio>"), eoa_token_id=ids("<end_of_audio>"), audio_token_id=ids("<audio_soft_token>"),
        tie_word_embeddings=True,
    )

    def draw_altup_scales(model: nn.Module) -> None:  # HF's zero init would cut the per-layer inputs off
        for layer in model.model.language_model.layers:
            layer.altup.correct_output_scale.normal_(1.0, 0.1)

    _write_model(path, Gemma3nForConditionalGeneration, config, seed, adjust=draw_altup_scales)
    Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(), image_processor=SiglipImageProcessorPil(), tokenizer=tokenizer,
        chat_template=GEMMA3N_TEMPLATE,
    ).save_pretrained(path)
    return path


GRANITE_SPEECH_SPECIALS = ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<|tool_call|>", "<|audio|>"]
GRANITE_SPEECH_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|start_of_role|>system<|end_of_role|>You are a helpful assistant.<|end_of_text|>\n{% endif %}"
    "<|start_of_role|>{{ message['role'] }}<|end_of_role|>{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'audio' %}<|audio|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|end_of_text|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}"
)
"""Granite 3.3's role markers (``<|start_of_role|>user<|end_of_role|>...<|end_of_text|>``), without its dated
default system prompt; the audio placeholder ``<|audio|>`` goes where the audio is."""


def save_tiny_granite_speech(
    path: str | Path,
    *,
    d_model: int = 64,
    layers: int = 2,
    d_audio: int = 64,
    audio_layers: int = 2,
    d_qformer: int = 32,
    seed: int = 0,
    shape: LayerShape = LayerShape(),
) -> Path:
    """Write a random ``GraniteSpeechForConditionalGeneration`` (Conformer encoder, 2-layer Q-Former, Granite decoder)
    with its processor to ``path``.

    The encoder keeps the released 4 s attention blocks, 15-frame projector windows and 3 queries per window,
    and the decoder the released Granite 3.3 multipliers. Without torchaudio the processor is written through
    the adapter's torchaudio-free feature extractor and named as the real class.
    """
    from transformers import GraniteSpeechConfig, GraniteSpeechForConditionalGeneration, GraniteSpeechProcessor

    from ..adapters.granite_speech import GraniteSpeechFeatures

    path = Path(path)
    words = [*BASE_WORDS, "can", "transcribe", "speech", "into", "written", "format"]
    end = GRANITE_SPEECH_SPECIALS[0]
    tokenizer = word_tokenizer(
        GRANITE_SPEECH_SPECIALS, words, GRANITE_SPEECH_TEMPLATE, roles={"bos_token": end, "eos_token": end, "pad_token": end}
    )
    text = _text_kwargs(d_model, layers, len(tokenizer), shape)
    heads = shape.audio_heads or max(1, d_audio // 32)
    config = GraniteSpeechConfig(
        encoder_config=dict(
            input_dim=160, num_layers=audio_layers, hidden_dim=d_audio, feedforward_mult=4, num_heads=heads,
            dim_head=d_audio // heads, output_dim=42, context_size=200, max_pos_emb=512, conv_kernel_size=15,
            conv_expansion_factor=2,
        ),
        projector_config=dict(
            model_type="blip_2_qformer", hidden_size=d_qformer, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=4 * d_qformer, encoder_hidden_size=d_audio, cross_attention_frequency=1,
        ),
        text_config=dict(
            model_type="granite", head_dim=d_model // text["num_attention_heads"], embedding_multiplier=12.0,
            residual_multiplier=0.22, attention_multiplier=1 / 64, logits_scaling=8.0, **NO_STOP,
            **{**text, "tie_word_embeddings": True},
        ),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|audio|>"), has_lora_adapter=False, window_size=15,
        downsample_rate=5, tie_word_embeddings=True,
    )
    _write_model(path, GraniteSpeechForConditionalGeneration, config, seed)
    GraniteSpeechProcessor(GraniteSpeechFeatures(), tokenizer, chat_template=GRANITE_SPEECH_TEMPLATE).save_pretrained(path)
    file = path / "processor_config.json"
    saved = json.loads(file.read_text())
    saved["audio_processor"]["feature_extractor_type"] = "GraniteSpeechFeatureExtractor"
    file.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    return path
