"""Voxtral (Mini 3B, Small 24B): Whisper-large encoder over 30 s chunks, 4-frame stacking, 2-layer GELU
projector, Mistral/Llama decoder.

Every clip is zero-padded to a whole number of 30 s chunks (3000 mel frames);
each chunk is one encoder row of 1500 frames with no padding mask (the model
attends over the padding too). The encoder output is cut into groups of four
consecutive frames, concatenated (``[4 * d_audio]``) and projected: 375 tokens
per chunk, **12.5 tokens/s**, and the placeholders of a clip cover its padding
to the next 30 s boundary as well. So a 2 s clip takes 375 tokens, of which
the first 25 encode the clip; each chunk is one
:class:`~lalm_lens.spans.AudioSpan` (``offset_s`` = the chunk's start,
``frames_per_token`` = 4) whose later tokens lie past the clip's end.

Hooks: ``audio.*`` as for Qwen2-Audio (batch = chunk, 1500 frames);
``audio.hook_out`` is the encoder's output after its final LayerNorm,
``[chunk, 1500, d_audio]`` (frames, before the 4-frame stacking);
``hook_audio_embeds`` is the projector's output seen as
``[chunk, 375, d_model]`` (HF keeps it flat, ``[chunk * 375, d_model]``).

Prompts. ``VoxtralProcessor`` builds audio prompts only through
``mistral_common`` (its ``__call__`` refuses audio placeholders), so
:meth:`VoxtralAdapter.prepare` lays out Mistral's instruct format itself from
the tokenizer's control tokens:
``<s>[INST][BEGIN_AUDIO][AUDIO]x375k ... text[/INST]`` (one
``[BEGIN_AUDIO]`` run per clip, several clips per prompt allowed; a system
prompt goes in ``[SYSTEM_PROMPT]...[/SYSTEM_PROMPT]`` after ``<s>``). With
``raw_prompt`` the prompt is a string holding one ``[AUDIO]`` per clip, each
expanded in place, and is tokenized as it stands.
"""

from __future__ import annotations

from typing import Any

import einops
import numpy as np
import torch
from jaxtyping import Float
from transformers import VoxtralForConditionalGeneration

from ..batch import LALMBatch
from ..data.audio import as_examples, limit_length, load_waveform
from .base import Adapter, HookBuilder, HookFrames

CHUNK_SECONDS = 30
FRAMES_PER_CHUNK = 3000  # mel frames; the encoder refuses any other length


class VoxtralAdapter(Adapter):
    hf_class = VoxtralForConditionalGeneration
    model_types = ("voxtral",)
    arch = "voxtral"
    placeholder = "[AUDIO]"
    tokens_per_second = 12.5
    frames_per_token = 4

    @property
    def max_audio_seconds(self) -> float:
        """40 minutes, the audio understanding limit of Voxtral's model card (the decoder's positions still bound it)."""
        return 2400.0

    @property
    def window_seconds(self) -> float:
        return float(CHUNK_SECONDS)

    @property
    def tokens_per_chunk(self) -> int:
        """Tokens per 30 s chunk: encoder frames over the frames stacked into one token."""
        audio = self.audio_tower.config
        return audio.max_source_positions // (audio.intermediate_size // audio.d_model)

    def __init__(self, hf_model, processor):
        super().__init__(hf_model, processor)
        audio = self.audio_tower.config
        if audio.intermediate_size % audio.d_model:
            raise ValueError(
                f"Voxtral stacks intermediate_size / d_model encoder frames into one token; {audio.intermediate_size} / "
                f"{audio.d_model} is not whole"
            )
        self.frames_per_token = audio.intermediate_size // audio.d_model
        self.tokens_per_second = 50 / self.frames_per_token  # Whisper's 50 encoder frames/s

    # -- hook points ------------------------------------------------------
    def build_hooks(self, root) -> None:
        hooks = HookBuilder(root)
        per_chunk = self.tokens_per_chunk
        hooks.point("audio.hook_features", self.audio_tower, "input", arg="input_features")
        self.encoder_block_hooks(hooks, self.audio_tower.layers)
        hooks.point("audio.hook_out", self.audio_tower.layer_norm, "output")
        hooks.view_point(
            "hook_audio_embeds", self.projector, "output",
            view=lambda flat: einops.rearrange(flat, "(chunk token) d -> chunk token d", token=per_chunk),
            unview=lambda new, flat: einops.rearrange(new, "chunk token d -> (chunk token) d").to(flat.dtype),
        )
        hooks.point("hook_embed", self.language_model, "input", arg="inputs_embeds")
        self.decoder_block_hooks(hooks, self.language_model.layers)
        hooks.final_norm(self.language_model.norm)

    def audio_hook_frames(self, inputs: dict) -> HookFrames:
        frames = inputs["input_features"].shape[-1]
        return HookFrames(features=frames, encoder=frames // 2, pattern=frames // 2, out=frames // 2)

    def embed_tokens(self, inputs: dict) -> int:
        return self.tokens_per_chunk

    # -- inputs -----------------------------------------------------------
    def encoder_rows(self, inputs: dict) -> list[tuple[int, int]]:
        """Every chunk is 3000 mel frames and gives :attr:`tokens_per_chunk` tokens, padding included."""
        return [(FRAMES_PER_CHUNK, self.tokens_per_chunk)] * inputs["input_features"].shape[0]

    def check_inputs(self, inputs: dict) -> None:
        """Raise unless the features are whole 30 s chunks and each run of ``[AUDIO]`` is filled by whole chunks."""
        if "input_features" not in inputs or "input_ids" not in inputs:
            return
        features = inputs["input_features"]
        if features.dim() != 3 or features.shape[-1] != FRAMES_PER_CHUNK:
            raise ValueError(
                f"Voxtral's input_features must be [chunk, mel, {FRAMES_PER_CHUNK}] (30 s chunks), got "
                f"{tuple(features.shape)}; build inputs with model.prepare(...)"
            )
        self.check_placeholder_runs(inputs)

    def control_id(self, token: str) -> int:
        """The id of a control token such as ``[INST]``, read from the tokenizer."""
        tokenizer = self.processor.tokenizer
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token} control token; is this a Voxtral tokenizer?")
        return int(token_id)

    def features(self, wave: Float[np.ndarray, "time"]) -> Float[torch.Tensor, "chunk mel 3000"]:
        """Log-mel of ``wave`` zero-padded to whole 30 s chunks, as ``[chunk, mel, 3000]`` (as ``VoxtralProcessor``)."""
        extractor = self.processor.feature_extractor
        mel = extractor(
            wave, sampling_rate=self.sampling_rate, padding=True, truncation=False,
            pad_to_multiple_of=CHUNK_SECONDS * self.sampling_rate, return_tensors="pt",
        )["input_features"]
        return einops.rearrange(mel, "1 m (chunk t) -> chunk m t", t=FRAMES_PER_CHUNK)

    def prepare(
        self, model, audio, prompt, sampling_rate: int | None = None, *, raw_prompt: bool = False,
        truncate: bool = False, mixdown: bool = False, allow_loud: bool = False, system_prompt: str | None = None,
    ) -> LALMBatch:
        """Inputs in Voxtral's instruct format (see the module docstring); arguments as :meth:`HookedLALM.prepare`."""
        examples = as_examples(audio)
        prompts = [prompt] * len(examples) if isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(examples):
            raise ValueError(f"got {len(prompts)} prompts for {len(examples)} audio examples")
        tokenizer, rate = self.processor.tokenizer, self.sampling_rate
        audio_id, begin_id = self.control_id("[AUDIO]"), self.control_id("[BEGIN_AUDIO]")
        rows, mels, lengths, shown = [], [], [], []
        for b, (clips, text) in enumerate(zip(examples, prompts)):
            example_lengths, runs = [], []
            for c, clip in enumerate(clips):
                name = f"example {b} clip {c}"
                wave = load_waveform(clip, rate, sampling_rate=sampling_rate, mixdown=mixdown, allow_loud=allow_loud, name=name)
                wave = limit_length(wave, rate, self.max_audio_seconds, truncate=truncate, name=name, model=self.arch)
                mel = self.features(wave)
                mels.append(mel)
                runs.append([audio_id] * (mel.shape[0] * self.tokens_per_chunk))
                example_lengths.append(len(wave))
            lengths.append(example_lengths)
            ids, rendered = self._layout(text, runs, raw_prompt, system_prompt, b, begin_id)
            rows.append(ids)
            shown.append(rendered)
        width, pad = max(map(len, rows)), tokenizer.pad_token_id
        inputs = {
            "input_ids": torch.tensor([[pad] * (width - len(r)) + r for r in rows]),
            "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows]),
            "input_features": torch.cat(mels),
        }
        self.check_inputs(inputs)
        spans = self.audio_spans(inputs, lengths)
        seconds = [[n / rate for n in example] for example in lengths]
        return LALMBatch(inputs, spans, shown, seconds).to(model.input_device, model.hf_model.dtype)

    def _layout(
        self, text: Any, runs: list[list[int]], raw: bool, system_prompt: str | None, example: int, begin_id: int
    ) -> tuple[list[int], str]:
        """Token ids and a readable rendering (``[AUDIO]`` once per clip) of one example's prompt."""
        tokenizer = self.processor.tokenizer
        encode = lambda s: tokenizer.encode(s, add_special_tokens=False) if s else []
        if not isinstance(text, str):
            raise TypeError(f"example {example}: the prompt must be a string, got {type(text).__name__}")
        found = text.count(self.placeholder)
        if raw:
            if found != len(runs):
                raise ValueError(f"example {example}: the raw prompt holds {found} {self.placeholder} placeholder(s) for {len(runs)} clip(s)")
            pieces = text.split(self.placeholder)
            ids = encode(pieces[0])
            for run, piece in zip(runs, pieces[1:]):
                ids += run + encode(piece)
            return ids, text
        if found:
            raise ValueError(f"example {example}: the prompt already holds {self.placeholder}; pass raw_prompt=True to use it as it is")
        ids, shown = [self.control_id("<s>")], "<s>"
        if system_prompt is not None:
            ids += [self.control_id("[SYSTEM_PROMPT]"), *encode(system_prompt), self.control_id("[/SYSTEM_PROMPT]")]
            shown += f"[SYSTEM_PROMPT]{system_prompt}[/SYSTEM_PROMPT]"
        ids.append(self.control_id("[INST]"))
        for run in runs:
            ids += [begin_id, *run]
        ids += [*encode(text), self.control_id("[/INST]")]
        return ids, shown + "[INST]" + "[BEGIN_AUDIO][AUDIO]" * len(runs) + f"{text}[/INST]"
