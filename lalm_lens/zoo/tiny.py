"""Tiny random checkpoints of the real HF classes, written with ``save_pretrained``.

Tests, the CLI demo and the benchmark load these through the same
``from_pretrained`` path a user takes with a real checkpoint. Tokenizers are
built offline with the ``tokenizers`` library and carry each family's real
special tokens and a chat template of the family's shape.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AudioFlamingo3Config,
    AudioFlamingo3ForConditionalGeneration,
    AudioFlamingo3Processor,
    PreTrainedTokenizerFast,
    Qwen2AudioConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    WhisperFeatureExtractor,
)

CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN2_AUDIO_SPECIALS = CHAT_SPECIALS + ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
AF3_SPECIALS = CHAT_SPECIALS + ["<sound>"]

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

AF3_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'audio' %}<sound>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def word_tokenizer(specials: list[str], words=BASE_WORDS, chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: special tokens first (ids 0..), then ``words``; unknown words map to ``<unk>``."""
    vocab = {tok: i for i, tok in enumerate([*specials, "<unk>", *dict.fromkeys(words)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials,
        padding_side="left",
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def _whisper_features(max_seconds: int = 30, n_mels: int = 128) -> WhisperFeatureExtractor:
    return WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=16000, chunk_length=max_seconds)


def _encoder_kwargs(d_audio: int, audio_layers: int, n_mels: int, max_seconds: int) -> dict:
    return dict(
        num_mel_bins=n_mels,
        d_model=d_audio,
        encoder_layers=audio_layers,
        encoder_attention_heads=max(1, d_audio // 32),
        encoder_ffn_dim=4 * d_audio,
        max_source_positions=max_seconds * 50,
    )


def _text_kwargs(d_model: int, layers: int, vocab: int) -> dict:
    return dict(
        hidden_size=d_model,
        intermediate_size=3 * d_model,
        num_hidden_layers=layers,
        num_attention_heads=max(2, d_model // 16),
        num_key_value_heads=max(1, d_model // 32),
        vocab_size=vocab,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )


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
) -> Path:
    """Write a random ``Qwen2AudioForConditionalGeneration`` with its processor to ``path``."""
    path = Path(path)
    tokenizer = word_tokenizer(QWEN2_AUDIO_SPECIALS, chat_template=QWEN2_AUDIO_TEMPLATE)
    config = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", **_encoder_kwargs(d_audio, audio_layers, n_mels, max_seconds)),
        text_config=dict(model_type="qwen2", **_text_kwargs(d_model, layers, len(tokenizer))),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    torch.manual_seed(seed)
    Qwen2AudioForConditionalGeneration(config).save_pretrained(path)
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
) -> Path:
    """Write a random ``AudioFlamingo3ForConditionalGeneration`` with its processor to ``path``."""
    path = Path(path)
    tokenizer = word_tokenizer(AF3_SPECIALS, chat_template=AF3_TEMPLATE)
    encoder = _encoder_kwargs(d_audio, audio_layers, n_mels, window_seconds)
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
        text_config=dict(model_type="qwen2", **_text_kwargs(d_model, layers, len(tokenizer))),
        audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"),
    )
    torch.manual_seed(seed)
    AudioFlamingo3ForConditionalGeneration(config).save_pretrained(path)
    processor = AudioFlamingo3Processor(
        feature_extractor=_whisper_features(window_seconds, n_mels), tokenizer=tokenizer, chat_template=AF3_TEMPLATE
    )
    processor.save_pretrained(path)
    return path
