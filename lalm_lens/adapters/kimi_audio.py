"""Kimi-Audio-7B(-Instruct): Whisper-large-v3 features + 12.5 Hz semantic tokens, Qwen2.5-shaped decoder, audio-output branch.

The model is the clean-room :class:`~lalm_lens.models.kimi_audio.KimiAudioForCausalLM`, read from an
official checkpoint folder (``model_type`` ``"moonshot_kimia"``, official tensor names, Whisper in
``whisper-large-v3/``) without remote code or flash-attn. Its inputs are two aligned token streams:
``input_ids`` (text stream) and ``audio_input_ids`` (audio stream), plus ``is_continuous_mask``,
``attention_mask`` and ``input_features`` (one ``[chunks, mel, frame]`` log-mel tensor per clip, 30 s
chunks).

Hooks beyond the shared vocabulary, and where they sit:

- ``audio.*``: the Whisper encoder, run once per forward over every 30 s chunk of every clip, so the
  batch axis is chunks (row-major over examples and clips; ``AudioSpan.encoder_row`` indexes it).
  ``audio.hook_out`` is the encoder output, ``[chunks, 1500, 1280]`` for the release.
- ``hook_audio_embeds``: the VQ adaptor's output ``[audio_tokens, d_model]``, every clip's tokens packed
  in order (no batch axis). Inside a media span it is added to the semantic-token embedding and the sum
  scaled by sqrt(2); ``hook_embed`` is then that plus the text-stream embedding, what enters layer 0.
- ``blocks.{i}.*``, ``ln_final.hook_scale``/``hook_normalized``: the shared stack, ending in ``lm_head``
  (text logits).
- ``mimo.blocks.{j}.*`` (same per-block names) and ``mimo.ln_final.*``: the audio-output
  branch, which forks from ``blocks.{k}.hook_resid_post`` (``k = kimia_mimo_transformer_from_layer_index``)
  and ends in ``mimo_output`` (audio logits).

``model(batch)`` returns text logits; ``model(batch, return_type="output").audio_logits`` the audio
ones; ``model(batch, output_audio=False)`` skips the branch. ``model.generate`` is greedy text-stream
generation (the model's ``generate`` around ``generate_text``): hooks run on the prefill and every step,
the mimo branch does not run, and the returned tokens include ``<|im_kimia_text_eos|>`` and the blanks
fed after it.

Prompt layout of the Instruct model (public Kimi-Audio prompt manager). Every position holds one
audio-stream and one text-stream token; ``_`` is ``<|im_kimia_text_blank|>``::

    piece                  audio stream                                   text stream
    turn opens             <|im_kimia_user_msg_start|> (or assistant_)    _
    text message           _ per text token                               the text tokens
    audio message          <|im_media_begin|> codes <|im_media_end|>      _ throughout
    after a turn's last    <|im_kimia_speech_ct_id|> (_ctd_id: speak)     _
      audio message
    turn closes            <|im_msg_end|>                                 _
    generation prompt      <|im_kimia_assistant_msg_start|>               _

Codes are the clip's 12.5 Hz semantic tokens plus ``kimia_token_offset``; continuous features are
added at their positions. An assistant text message ends with ``<|im_kimia_text_eos|>`` in the text
stream. :meth:`KimiAudioAdapter.prepare` builds one user turn: the prompt text, then each clip, as in
the official examples.

Special token ids. The public tokenizer numbers its special tokens ``num_base_tokens + i`` over one
ordered list (:data:`~lalm_lens.models.kimi_audio.SPECIAL_TOKENS`), so with the release's
``num_base_tokens`` = 151643::

    [BOS] 151643   [EOS] 151644   <|im_msg_end|> 151645   (<|reserved_token_0|> 151648)
    <|im_media_begin|> 151661   <|im_media_end|> 151663
    <|im_kimia_text_blank|> 151666   <|im_kimia_text_eos|> 151667
    <|im_kimia_user_msg_start|> 151670   <|im_kimia_assistant_msg_start|> 151671
    <|im_kimia_speech_ct_id|> 151675   <|im_kimia_speech_ctd_id|> 151676

Where each id of ``processor.special_ids`` comes from, first that applies:

1. the folder's tokenizer, when one loads without remote code and names the token (the official one is
   tiktoken remote code, so for the release this does not apply);
2. ``config.json`` for the four ids it holds (``kimia_media_begin``, ``kimia_media_end``,
   ``kimia_text_blank``, ``kimia_text_eos``): the model code itself uses these;
3. the ordering above from ``config.json``'s ``num_base_tokens`` (default 151643), for the other five
   (``<|im_msg_end|>``, the two turn openers, the two speech-control tokens). This applies only when the
   config's four ids sit where that ordering puts them; otherwise those five are unknown and
   :meth:`KimiAudioAdapter.prepare` says so. The tiny checkpoint follows the same ordering from its own
   ``num_base_tokens``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from transformers import WhisperConfig, WhisperFeatureExtractor

from ..batch import LALMBatch
from ..config import LALMConfig
from ..data.audio import as_examples, limit_length, load_waveform
from ..models.kimi_audio import (
    WHISPER_SUBFOLDER,
    KimiAudioConfig,
    audio_segment,
    check_token_ids,
    feature_segments,
    load_kimi_audio,
    special_token_layout,
)
from ..spans import AudioSpan
from .base import Adapter, HookBuilder

SAMPLING_RATE = 16000
TOKENS_PER_SECOND = 12.5
SAMPLES_PER_TOKEN = int(SAMPLING_RATE / TOKENS_PER_SECOND)
# Positions a one-clip turn takes besides the clip's codes: the user turn opener, media begin and end, the
# speech-control token, the turn end and the generation prompt (see the layout above).
TURN_POSITIONS = 6

TOKEN_NAMES = {
    "msg_end": "<|im_msg_end|>",
    "media_begin": "<|im_media_begin|>",
    "media_end": "<|im_media_end|>",
    "text_blank": "<|im_kimia_text_blank|>",
    "text_eos": "<|im_kimia_text_eos|>",
    "user_msg_start": "<|im_kimia_user_msg_start|>",
    "assistant_msg_start": "<|im_kimia_assistant_msg_start|>",
    "speech_ct": "<|im_kimia_speech_ct_id|>",
    "speech_ctd": "<|im_kimia_speech_ctd_id|>",
}
CONFIG_KEYS = {
    "media_begin": "kimia_media_begin", "media_end": "kimia_media_end",
    "text_blank": "kimia_text_blank", "text_eos": "kimia_text_eos",
}

NO_TOKENIZER = (
    "this Kimi-Audio checkpoint has no text tokenizer that loads without remote code (the official one is "
    "tiktoken-based): pass prompts as token ids from it, and generate with return_type='tokens'"
)
MISSING_SEMANTIC = (
    "Kimi-Audio reads discrete semantic tokens (GLM-4-Voice tokenizer, 12.5 Hz) beside the Whisper features. "
    "Pass semantic_tokens=[codes of each clip] (e.g. from the official kimia_infer Glm4Tokenizer), "
    "semantic_tokenizer=callable(wave_16k) -> codes, or semantic_tokens='blank' for a continuous-features-only "
    "run (blanks in the audio stream: not a layout the model was trained on)"
)
DEVICE_MAP_STRATEGIES = {"auto", "balanced", "balanced_low_0", "sequential"}


class TokenIdsOnly:
    """Stands in for the text tokenizer when the folder has none that transformers loads: prompts are token ids."""

    pad_token_id = None

    def _refuse(self, *args, **kwargs):
        raise ValueError(NO_TOKENIZER)

    __call__ = encode = decode = batch_decode = convert_tokens_to_ids = _refuse


def special_token_ids(config: KimiAudioConfig, tokenizer: Any = None) -> dict[str, int]:
    """Ids of the prompt's special tokens (keys of :data:`TOKEN_NAMES`), from the sources in the module docstring.

    The four ids in ``config.json`` are authoritative (the embeddings are indexed by them); a tokenizer
    that disagrees raises. The others follow the tokenizer's ordering from ``num_base_tokens`` when the
    config's four ids agree with that ordering, and are missing otherwise unless the tokenizer names them.
    The result is a plain dict (``model.processor.special_ids``) that can be corrected by hand.
    """
    ids = {key: getattr(config, name) for key, name in CONFIG_KEYS.items()}
    layout = special_token_layout(config.num_base_tokens)
    if all(ids[key] == layout[TOKEN_NAMES[key]] for key in CONFIG_KEYS):
        ids.update({key: layout[name] for key, name in TOKEN_NAMES.items() if key not in ids})
    if tokenizer is not None:
        unk, table = getattr(tokenizer, "unk_token_id", None), getattr(tokenizer, "special_tokens", None)
        for key, name in TOKEN_NAMES.items():
            found = table.get(name) if isinstance(table, dict) else tokenizer.convert_tokens_to_ids(name)
            if found is None or found == unk:
                continue
            if key in CONFIG_KEYS and found != ids[key]:
                raise ValueError(f"the tokenizer maps {name} to {found} but config.json has {CONFIG_KEYS[key]}={ids[key]}")
            ids[key] = int(found)
    return ids


def whisper_feature_extractor(whisper: WhisperConfig) -> WhisperFeatureExtractor:
    """Log-mel at 16 kHz with the encoder's mel bins and chunk (``2 * max_source_positions`` frames: 30 s for large-v3)."""
    extractor = WhisperFeatureExtractor(feature_size=whisper.num_mel_bins, sampling_rate=SAMPLING_RATE)
    extractor.nb_max_frames = 2 * whisper.max_source_positions
    extractor.n_samples = extractor.nb_max_frames * extractor.hop_length
    extractor.chunk_length = extractor.n_samples / SAMPLING_RATE
    return extractor


class KimiAudioProcessor:
    """Log-mel chunks for the Whisper encoder, the prompt's special ids, and the text tokenizer if there is one.

    ``tokenizer`` is an HF tokenizer found in the checkpoint folder, or a :class:`TokenIdsOnly` stand-in
    (``has_tokenizer`` False): text prompts are then token ids of the official tokenizer.
    """

    def __init__(self, config: KimiAudioConfig, whisper: WhisperConfig | None, tokenizer: Any = None):
        self.feature_extractor = whisper_feature_extractor(whisper) if whisper is not None else None
        self.tokens_per_chunk = (whisper.max_source_positions if whisper is not None else 1500) // 4
        self.special_ids = special_token_ids(config, tokenizer)
        self.tokenizer = tokenizer if tokenizer is not None else TokenIdsOnly()

    @classmethod
    def from_folder(cls, folder: str | Path, *, local_files_only: bool = True, trust_remote_code: bool = False):
        folder = Path(folder)
        whisper_json = folder / WHISPER_SUBFOLDER / "config.json"
        whisper = WhisperConfig.from_json_file(str(whisper_json)) if whisper_json.exists() else None
        tokenizer = None
        if (folder / "tokenizer_config.json").exists() or (folder / "tokenizer.json").exists():
            from transformers import AutoTokenizer

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    tokenizer = AutoTokenizer.from_pretrained(
                        folder, local_files_only=local_files_only, trust_remote_code=trust_remote_code
                    )
            except Exception as error:
                warnings.warn(f"{folder}: the text tokenizer was not loaded ({error}); {NO_TOKENIZER}")
        return cls(KimiAudioConfig.from_json(folder / "config.json"), whisper, tokenizer)

    @classmethod
    def from_model(cls, model: nn.Module, tokenizer: Any = None) -> "KimiAudioProcessor":
        """For :meth:`HookedLALM.from_hf` on a model already loaded with ``load_kimi_audio``."""
        encoder = model.whisper_encoder
        return cls(model.config, encoder.config if encoder is not None else None, tokenizer)

    @property
    def has_tokenizer(self) -> bool:
        return not isinstance(self.tokenizer, TokenIdsOnly)

    @property
    def chunk_seconds(self) -> float:
        return self.tokens_per_chunk / TOKENS_PER_SECOND

    def encode(self, text: str | Sequence[int]) -> list[int]:
        """Text-stream ids of a message: a string through the tokenizer, or token ids as they are."""
        if isinstance(text, str):
            if not text:
                return []
            if not self.has_tokenizer:
                raise ValueError(NO_TOKENIZER)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return [int(t) for t in text]

    def log_mel(self, wave: np.ndarray, num_tokens: int | None = None) -> Tensor:
        """``[chunks, mel, frame]``: one zero-padded chunk per 30 s.

        With ``num_tokens`` (the clip's positions) there are exactly ``ceil(num_tokens / tokens_per_chunk)``
        chunks, the count :meth:`KimiAudioAdapter.check_inputs` expects: a chunk beyond them would hold no
        position, one short of them is zeros. Otherwise the chunks cover ``wave``.
        """
        if self.feature_extractor is None:
            raise ValueError(f"this checkpoint has no {WHISPER_SUBFOLDER}/ encoder, so audio cannot be encoded")
        size = self.feature_extractor.n_samples
        n_chunks = math.ceil((len(wave) if num_tokens is None else num_tokens * SAMPLES_PER_TOKEN) / size)
        n_chunks = max(1, n_chunks)
        chunks = [wave[i * size : (i + 1) * size] for i in range(n_chunks)]
        chunks = [c if len(c) else np.zeros(1, np.float32) for c in chunks]
        return self.feature_extractor(chunks, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features


def _folder(path: str | Path, local_files_only: bool) -> Path:
    if Path(path).is_dir():
        return Path(path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path), local_files_only=local_files_only))


def _single_device(device_map: Any) -> torch.device:
    if device_map is None:
        return torch.device("cpu")
    if isinstance(device_map, str) and device_map in DEVICE_MAP_STRATEGIES:
        devices = {device_map}
    elif isinstance(device_map, dict):
        devices = {f"cuda:{d}" if isinstance(d, int) else str(d) for d in device_map.values()}
    else:
        devices = {f"cuda:{device_map}" if isinstance(device_map, int) else str(device_map)}
    if len(devices) != 1 or devices & DEVICE_MAP_STRATEGIES or devices & {"disk", "meta"}:
        raise NotImplementedError(
            f"device_map={device_map!r}: Kimi-Audio is loaded without accelerate, so it goes on one device; "
            "pass device='cuda:0' (or device_map={'': 'cuda:0'}). Splitting it over devices is not supported."
        )
    return torch.device(devices.pop())


def _is_ids(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(t, (int, np.integer)) for t in x)


def _code_lists(codes: Any) -> list[list[int]]:
    """Flatten per-clip code sequences given as a list, nested like ``audio``, an array or a tensor."""
    if isinstance(codes, (Tensor, np.ndarray)):
        codes = codes.tolist()
    if _is_ids(codes) and len(codes):
        return [[int(c) for c in codes]]
    if not isinstance(codes, (list, tuple)) or not codes:
        raise TypeError("semantic_tokens must be a list of int codes per clip (nested like audio), an array or a tensor")
    return [seq for item in codes for seq in _code_lists(item)]


class KimiAudioAdapter(Adapter):
    model_types = ("moonshot_kimia",)
    arch = "kimi_audio"
    tokens_per_second = TOKENS_PER_SECOND
    frames_per_token = 4

    @classmethod
    def load(
        cls,
        path,
        *,
        dtype: torch.dtype | None = None,
        attn_implementation: str = "sdpa",
        device_map: Any = None,
        use_safetensors: bool | None = True,
        local_files_only: bool = True,
        trust_remote_code: bool = False,
        **kwargs,
    ) -> nn.Module:
        """``load_kimi_audio`` on the folder (or cached hub snapshot); ``kwargs`` (``whisper_path``, ``strict``) go to it.

        No remote code runs whatever ``trust_remote_code`` says. ``device_map`` may name one device only.
        The Whisper encoder gets ``attn_implementation`` too.
        """
        if use_safetensors is False:
            raise ValueError("Kimi-Audio checkpoints are read from safetensors only")
        model = load_kimi_audio(
            _folder(path, local_files_only), dtype=dtype, device=_single_device(device_map),
            attn_implementation=attn_implementation, **kwargs,
        )
        if model.whisper_encoder is not None:
            model.whisper_encoder.config._attn_implementation = attn_implementation
        return model

    @classmethod
    def load_processor(cls, path, *, local_files_only: bool = True, trust_remote_code: bool = False) -> KimiAudioProcessor:
        return KimiAudioProcessor.from_folder(
            _folder(path, local_files_only), local_files_only=local_files_only, trust_remote_code=trust_remote_code
        )

    def __init__(self, hf_model: nn.Module, processor: KimiAudioProcessor):
        super().__init__(hf_model, processor)
        encoder = hf_model.whisper_encoder
        if encoder is not None and encoder.config._attn_implementation is None:
            encoder.config._attn_implementation = "eager"

    # -- where things are -------------------------------------------------
    @property
    def audio_tower(self) -> nn.Module | None:
        return self.hf_model.whisper_encoder

    @property
    def projector(self) -> nn.Module | None:
        return self.hf_model.model.vq_adaptor

    @property
    def language_model(self) -> nn.Module:
        return self.hf_model.model

    @property
    def attention_configs(self) -> list:
        encoder = [self.audio_tower.config] if self.audio_tower is not None else []
        return [self.hf_model.qwen2_config, *encoder]

    @property
    def mimo_from_layer(self) -> int:
        """The shared layer whose output the audio-output branch starts from."""
        return self.hf_model.config.kimia_mimo_transformer_from_layer_index

    @property
    def max_audio_seconds(self) -> float:
        """The longest clip whose one-clip turn fits the decoder's positions with no prompt text.

        ``(max_position_embeddings - 6) / 12.5`` s: 654.88 s for the release (8192 positions). Prompt text
        takes positions on top, so a clip this long with text overflows and is refused by length.
        """
        return (self.hf_model.config.max_position_embeddings - TURN_POSITIONS) / TOKENS_PER_SECOND

    @property
    def window_seconds(self) -> float:
        return self.processor.chunk_seconds

    @property
    def sampling_rate(self) -> int:
        return SAMPLING_RATE

    def config(self, name: str = "") -> LALMConfig:
        encoder = self.audio_tower
        return self.make_config(name, self.hf_model.config, encoder.config if encoder is not None else None,
                                len(encoder.layers) if encoder is not None else 0)

    # -- hook points ------------------------------------------------------
    def build_hooks(self, root: nn.Module) -> None:
        hooks, decoder = HookBuilder(root), self.language_model
        if self.audio_tower is not None:
            hooks.point("audio.hook_features", self.audio_tower, "input", arg="input_features")
            self.encoder_block_hooks(hooks, self.audio_tower.layers)
            hooks.point("audio.hook_out", self.audio_tower.layer_norm, "output")
        if self.projector is not None:
            hooks.point("hook_audio_embeds", self.projector, "output")
        hooks.point("hook_embed", decoder, "input", arg="inputs_embeds")
        self.decoder_block_hooks(hooks, decoder.layers)
        hooks.final_norm(decoder.norm)
        self.decoder_block_hooks(hooks, decoder.mimo_layers, prefix="mimo.blocks")
        hooks.final_norm(decoder.mimo_norm, prefix="mimo.ln_final")

    # -- inputs -----------------------------------------------------------
    def prepare(
        self,
        model,
        audio,
        prompt,
        sampling_rate: int | None = None,
        *,
        raw_prompt: bool = False,
        truncate: bool = False,
        mixdown: bool = False,
        allow_loud: bool = False,
        system_prompt: str | None = None,
        semantic_tokens: Any = None,
        semantic_tokenizer: Callable[[np.ndarray], Any] | None = None,
        output_type: str = "text",
    ) -> LALMBatch:
        """Build both streams, the continuous mask and log-mel chunks (called by :meth:`HookedLALM.prepare`).

        - ``prompt``: per example (or one for all) a string (needs a tokenizer in the folder) or a list of
          text token ids; with ``raw_prompt`` a list of official-style messages ``{"role": "user" |
          "assistant", "message_type": "text" | "audio", "content": str | ids}`` where each audio message
          takes the example's next clip.
        - ``semantic_tokens``: the clips' 12.5 Hz GLM-4 codes, one sequence per clip (flat in clip order or
          nested like ``audio``), within one code of ``ceil(samples / 1280)``; or ``"blank"`` for a
          continuous-only run. ``semantic_tokenizer``: a callable ``wave [time] at 16 kHz -> codes`` instead.
        - ``output_type``: ``"text"`` (``<|im_kimia_speech_ct_id|>``) or ``"both"`` (``..._ctd_id|>``).
        - ``truncate``: keep the beginning of each clip that fits the decoder's positions beside the prompt's
          text, control tokens and earlier clips (so the sequence is at most ``max_position_embeddings``).

        Log-mel is transformers' ``WhisperFeatureExtractor`` on each 30 s chunk (zero-padded), as the
        official encoder wrapper chunks audio. Batches are padded on the left with blanks.
        """
        if system_prompt is not None:
            raise ValueError("Kimi-Audio's prompt format has no system role; put instructions in the user text")
        if output_type not in ("text", "both"):
            raise ValueError(f"output_type must be 'text' or 'both', got {output_type!r}")
        blank = isinstance(semantic_tokens, str) and semantic_tokens == "blank"
        if isinstance(semantic_tokens, str) and not blank:
            raise ValueError(f"semantic_tokens={semantic_tokens!r}: the only string accepted is 'blank'")
        if semantic_tokens is None and semantic_tokenizer is None:
            raise ValueError(MISSING_SEMANTIC)
        if semantic_tokens is not None and semantic_tokenizer is not None:
            raise ValueError("pass semantic_tokens or semantic_tokenizer, not both")
        examples = as_examples(audio)
        prompts = self._per_example(prompt, len(examples), raw_prompt)
        n_clips = sum(map(len, examples))
        given = None if semantic_tokens is None or blank else _code_lists(semantic_tokens)
        if given is not None and len(given) != n_clips:
            raise ValueError(f"semantic_tokens holds {len(given)} code sequence(s) for {n_clips} clip(s); give one per clip")

        rows, mels, seconds, shown, k = [], [], [], [], 0
        n_ctx = self.hf_model.config.max_position_embeddings
        for b, (clips, text) in enumerate(zip(examples, prompts)):
            messages = text if raw_prompt else self._default_messages(text, len(clips))
            budget = n_ctx - len(self._layout(messages, [(0, None)] * len(clips), output_type, b)[0])
            segments, example_seconds = [], []
            for c, clip in enumerate(clips):
                name = f"example {b} clip {c}"
                full = load_waveform(
                    clip, SAMPLING_RATE, sampling_rate=sampling_rate, mixdown=mixdown, allow_loud=allow_loud, name=name
                )
                limit = self.max_audio_seconds
                if truncate:
                    if budget < 1:
                        raise ValueError(
                            f"{name}: the prompt's text, control tokens and earlier clips take all {n_ctx} decoder "
                            "positions (max_position_embeddings); shorten the prompt or the earlier clips"
                        )
                    limit = min(limit, budget / TOKENS_PER_SECOND)
                wave = limit_length(full, SAMPLING_RATE, limit, truncate=truncate, name=name, model=(
                    f"Kimi-Audio ({n_ctx} decoder positions at 12.5 tokens/s, {TURN_POSITIONS} of them for the "
                    "turn's control tokens)"))
                codes = None if blank else self._codes(wave, given[k] if given else semantic_tokenizer(wave), name, len(wave) < len(full))
                n = len(codes) if codes is not None else math.ceil(len(wave) / SAMPLES_PER_TOKEN)
                mels.append(self.processor.log_mel(wave, n))
                segments.append((n, codes))
                example_seconds.append(len(wave) / SAMPLING_RATE)
                budget -= n
                k += 1
            audio_ids, text_ids, mask, rendered = self._layout(messages, segments, output_type, b)
            rows.append((audio_ids, text_ids, mask))
            shown.append(rendered)
            seconds.append(example_seconds)

        inputs = self._pad(rows)
        inputs["input_features"] = [m.to(model.input_device, model.hf_model.dtype) for m in mels]
        self.check_inputs(inputs)
        batch = LALMBatch(inputs, self.audio_spans(inputs), shown, seconds)
        return batch.to(model.input_device, model.hf_model.dtype)

    def _per_example(self, prompt: Any, n: int, raw: bool) -> list:
        if isinstance(prompt, (Tensor, np.ndarray)):
            prompt = prompt.tolist()

        def single(p) -> bool:
            if raw:
                return isinstance(p, (list, tuple)) and bool(p) and all(isinstance(m, dict) for m in p)
            return isinstance(p, str) or _is_ids(p)

        if single(prompt):
            return [prompt] * n
        if not isinstance(prompt, (list, tuple)) or not all(single(p) for p in prompt):
            what = "a list of message dicts (raw_prompt=True)" if raw else "a string or a list of text token ids"
            raise TypeError(f"each prompt must be {what}")
        if len(prompt) != n:
            raise ValueError(f"got {len(prompt)} prompts for {n} audio examples")
        return list(prompt)

    def _codes(self, wave: np.ndarray, codes: Any, name: str, truncated: bool) -> list[int]:
        codes = _code_lists(codes)
        if len(codes) != 1:
            raise ValueError(f"{name}: expected one code sequence, got {len(codes)}")
        codes = codes[0]
        expected = math.ceil(len(wave) / SAMPLES_PER_TOKEN)
        if truncated:
            codes = codes[:expected]
        if abs(len(codes) - expected) > 1:
            raise ValueError(
                f"{name}: {len(codes)} semantic codes for {len(wave) / SAMPLING_RATE:.2f} s of audio, which gives "
                f"{expected} at 12.5 Hz (one per {SAMPLES_PER_TOKEN} samples at 16 kHz); were they computed from this clip?"
            )
        size = self.hf_model.config.vocab_size - self.hf_model.config.kimia_token_offset
        bad = [c for c in codes if not 0 <= c < size]
        if bad:
            raise ValueError(f"{name}: semantic codes must lie in [0, {size}) (before kimia_token_offset); got {bad[:5]}")
        return codes

    @staticmethod
    def _default_messages(text: str | Sequence[int], n_clips: int) -> list[dict]:
        messages = [{"role": "user", "message_type": "text", "content": text}] if len(text) else []
        return messages + [{"role": "user", "message_type": "audio"}] * n_clips

    def _layout(self, messages: list[dict], segments: list, output_type: str, example: int):
        ids = self.processor.special_ids
        missing = sorted(set(TOKEN_NAMES) - set(ids))
        if missing:
            raise ValueError(
                f"the ids of {[TOKEN_NAMES[m] for m in missing]} are unknown: config.json's kimia_* ids do not sit "
                f"where the tokenizer's ordering from num_base_tokens={self.hf_model.config.num_base_tokens} puts "
                "them, and the folder has no tokenizer that names them; set model.processor.special_ids by hand"
            )
        audio, text, mask, shown = [], [], [], []

        def put(audio_id: int, text_id: int, label: str) -> None:
            audio.append(audio_id)
            text.append(text_id)
            mask.append(False)
            shown.append(label)

        clips = iter(segments)
        blank = ids["text_blank"]
        for i, message in enumerate(messages):
            role, kind = message.get("role"), message.get("message_type", "text")
            if role not in ("user", "assistant") or kind not in ("text", "audio"):
                raise ValueError(f"example {example} message {i}: role must be user/assistant and message_type text/audio")
            opens = i == 0 or messages[i - 1]["role"] != role
            closes = i == len(messages) - 1 or messages[i + 1]["role"] != role
            if opens:
                put(ids[f"{role}_msg_start"], blank, TOKEN_NAMES[f"{role}_msg_start"])
            if kind == "text":
                tokens = self.processor.encode(message.get("content", ""))
                text += tokens
                audio += [blank] * len(tokens)
                mask += [False] * len(tokens)
                content = message.get("content", "")
                shown.append(content if isinstance(content, str) else f"[{len(tokens)} text tokens]")
                if role == "assistant":
                    put(blank, ids["text_eos"], TOKEN_NAMES["text_eos"])
            else:
                n, codes = next(clips, (None, None))
                if n is None:
                    raise ValueError(f"example {example}: the prompt holds more audio messages than the {len(segments)} clip(s) given")
                a, t, c = audio_segment(self.hf_model.config, n, codes)
                audio += a
                text += t
                mask += c
                shown.append(f"{TOKEN_NAMES['media_begin']}[{n} audio tokens]{TOKEN_NAMES['media_end']}")
                if closes:
                    control = "speech_ct" if output_type == "text" else "speech_ctd"
                    put(ids[control], blank, TOKEN_NAMES[control])
            if closes:
                put(ids["msg_end"], blank, TOKEN_NAMES["msg_end"])
        put(ids["assistant_msg_start"], blank, TOKEN_NAMES["assistant_msg_start"])
        if next(clips, None) is not None:
            raise ValueError(f"example {example}: {len(segments)} clip(s) given but the prompt has fewer audio messages")
        return audio, text, mask, "".join(shown)

    def _pad(self, rows: list) -> dict[str, Tensor]:
        blank, width = self.processor.special_ids["text_blank"], max(len(r[0]) for r in rows)
        pad = [width - len(r[0]) for r in rows]
        return {
            "input_ids": torch.tensor([[blank] * p + t for p, (_, t, _) in zip(pad, rows)]),
            "audio_input_ids": torch.tensor([[blank] * p + a for p, (a, _, _) in zip(pad, rows)]),
            "is_continuous_mask": torch.tensor([[False] * p + m for p, (_, _, m) in zip(pad, rows)]),
            "attention_mask": torch.tensor([[0] * p + [1] * len(a) for p, (a, _, _) in zip(pad, rows)]),
        }

    def audio_spans(self, inputs: dict, clip_samples: Any = None) -> list[list[AudioSpan]]:
        """One span per 30 s chunk of every media segment, read from the audio stream and ``input_features``.

        ``encoder_row`` counts chunks over the batch (the ``audio.*`` batch axis); ``offset_s`` is the chunk's
        start in its clip. ``clip_samples`` is not needed.
        """
        per_chunk, spans = self.processor.tokens_per_chunk, self.hf_model.media_spans(inputs["audio_input_ids"])
        mels = feature_segments(inputs["input_features"]) if "input_features" in inputs else None
        out: list[list[AudioSpan]] = [[] for _ in range(inputs["audio_input_ids"].shape[0])]
        row, clip = 0, {}
        for i, (b, begin, end) in enumerate(spans):
            clip[b] = clip.get(b, -1) + 1
            windows = math.ceil((end - begin - 1) / per_chunk)
            for w in range(windows):
                start = begin + 1 + w * per_chunk
                out[b].append(
                    AudioSpan(start, min(start + per_chunk, end), 1 / TOKENS_PER_SECOND, w * self.window_seconds,
                              clip[b], row + w, self.frames_per_token)
                )
            row += mels[i].shape[0] if mels is not None and mels[i].dim() == 3 else windows
        return out

    def check_inputs(self, inputs: dict) -> None:
        """Raise when the streams, masks, media markers and audio features do not line up.

        One pass over the ids: every id must index the embedding; each media segment (the positions between
        a ``<|im_media_begin|>``/``<|im_media_end|>`` pair) must have exactly the positions its features give:
        ``ceil(n / tokens_per_chunk)`` log-mel chunks for ``n`` positions (``input_features``), or ``n`` rows
        (``whisper_input_feature``). A position added or deleted inside a span then raises whenever the
        features can tell (always for rows; for log-mel when the chunk count changes); an
        :class:`~lalm_lens.batch.LALMBatch` also keeps its spans to compare against.
        """
        vocab = self.hf_model.config.vocab_size
        for key in ("input_ids", "audio_input_ids"):
            if inputs.get(key) is not None:
                check_token_ids(inputs[key], vocab, key)
        audio = inputs.get("audio_input_ids")
        if audio is None:
            return
        for key in ("input_ids", "is_continuous_mask", "attention_mask"):
            other = inputs.get(key)
            if other is not None and other.shape != audio.shape:
                raise ValueError(
                    f"{key} {tuple(other.shape)} and audio_input_ids {tuple(audio.shape)} differ in shape: the text "
                    "stream, audio stream and masks are aligned position by position"
                )
        spans = self.hf_model.media_spans(audio)
        log_mel = "input_features" in inputs
        features = inputs["input_features"] if log_mel else inputs.get("whisper_input_feature")
        if features is None:
            return
        segments = feature_segments(features)
        if len(segments) != len(spans):
            raise ValueError(
                f"audio_input_ids holds {len(spans)} media segment(s) but {len(segments)} feature tensor(s) were given; "
                "build inputs with model.prepare(...)"
            )
        per_chunk = self.processor.tokens_per_chunk
        for i, ((row, begin, end), segment) in enumerate(zip(spans, segments)):
            n, where = end - begin - 1, f"media segment {i} (example {row}, positions {begin + 1}..{end - 1})"
            if log_mel:
                chunks = segment.shape[0] if segment.dim() == 3 else 1
                if chunks != max(1, math.ceil(n / per_chunk)):
                    raise ValueError(
                        f"{where} spans {n} positions but its {chunks} log-mel chunk(s) give "
                        f"{(chunks - 1) * per_chunk + 1} to {chunks * per_chunk} ({per_chunk} per chunk): positions were "
                        "added to or deleted from the audio span; build inputs with model.prepare(...)"
                    )
            elif segment.dim() >= 2 and segment.shape[-2] != n:
                raise ValueError(
                    f"{where} spans {n} positions but its whisper_input_feature has {segment.shape[-2]} rows: each "
                    "segment needs one [positions, d] tensor with one row per position"
                )
