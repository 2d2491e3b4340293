"""HookedLALM: an HF audio-language model with TransformerLens hook points on every tensor that matters.

The HF module tree is kept as it is (``model.hf_model``); hook points with
canonical names are fed from PyTorch hooks on its submodules, installed only
while a hook is attached, and attention patterns come from one registered
attention function. Logits therefore equal the HF model's bit for bit.
"""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import torch
from jaxtyping import Float, Int
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import Slice

from .names import is_audio
from .adapters import Adapter, adapter_class, adapter_for
from .adapters.base import read_model_type
from .attention import PREFIX, hooked_implementation
from .batch import AudioEmbeddings, LALMBatch, feature_digest, span_layout
from .cache import CacheWriter, LALMActivationCache
from .checkpoints import locate
from .data.audio import AudioError, AudioLike, as_examples, limit_length, load_waveform
from .hook_points import HookRegistry, Step

NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]


def compact(value: Any) -> Any:
    """A tensor that owns just its elements: processors return some inputs as strided views of larger arrays (the
    feature mask of a Whisper extractor views its per-sample mask), which a kept batch would otherwise hold alive."""
    if isinstance(value, torch.Tensor) and value.untyped_storage().nbytes() > value.numel() * value.element_size():
        return value.clone()
    return value


class HookDict(dict):
    """``name -> HookPoint``; an unknown name raises a KeyError that suggests the nearest names."""

    def __missing__(self, name: str):
        close = difflib.get_close_matches(str(name), list(self), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else " Run `lalm-lens hooks MODEL` to list them."
        raise KeyError(f"unknown hook point {name!r}.{hint}")


class HookedLALM(HookedRootModule):
    """A hooked large audio-language model.

    Build one with :meth:`from_pretrained` (a folder, a hub id already in the
    local cache, or ``"lalm-toy"``) or :meth:`from_hf` (an HF model and its
    processor already loaded). ``model.cfg`` holds the shapes;
    ``model.hook_dict`` every hook name (``lalm-lens hooks MODEL`` prints them
    with shapes).
    """

    def __init__(self, hf_model: torch.nn.Module, processor: Any, adapter: Adapter | None = None, name: str = ""):
        super().__init__()
        self.hf_model = hf_model
        self.processor = processor
        self.adapter = adapter or adapter_for(hf_model, processor)
        self.cfg = replace(self.adapter.config(name), device=str(self.input_device))
        for config in self.adapter.attention_configs:
            config._attn_implementation = hooked_implementation(config._attn_implementation.removeprefix(PREFIX))
        self.step = Step()
        self.adapter.build_hooks(self)
        self.setup()
        self.train(hf_model.training)

    # -- construction -----------------------------------------------------
    @classmethod
    def from_hf(cls, hf_model: torch.nn.Module, processor: Any, name: str = "") -> "HookedLALM":
        """Wrap an already-loaded HF model (its attention implementation is kept as the fast path)."""
        return cls(hf_model, processor, name=name)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        attn_implementation: str = "sdpa",
        device_map: str | dict | None = None,
        allow_download: bool = False,
        trust_remote_code: bool = False,
        **hf_kwargs,
    ) -> "HookedLALM":
        """Load a checkpoint from a folder or the local hub cache; nothing is downloaded unless ``allow_download``.

        Returns the model in eval mode. A hub id that is not in the local
        cache raises :class:`~lalm_lens.checkpoints.CheckpointNotFound` without
        any network access unless ``allow_download=True``.

        ``device_map`` (e.g. ``"auto"`` or a per-module dict) hands placement to
        accelerate for models larger than one device; hooks, caches and edits
        work across devices. Weights are read from safetensors only.
        """
        from .zoo import resolve

        if not hf_kwargs.pop("use_safetensors", True):
            raise ValueError(
                "lalm-lens loads weights from safetensors only (pickled .bin weights can run code when loaded); "
                "convert the checkpoint with save_pretrained(..., safe_serialization=True)"
            )
        path = locate(resolve(name_or_path), allow_download=allow_download)
        local = {"local_files_only": True, "trust_remote_code": trust_remote_code}
        adapter_cls = adapter_class(read_model_type(path, local_files_only=True))
        hf_model = adapter_cls.load(
            path, dtype=dtype, attn_implementation=attn_implementation, device_map=device_map,
            use_safetensors=True, **local, **hf_kwargs,
        )
        if device is not None and device_map is None:
            hf_model.to(device)
        processor = adapter_cls.load_processor(path, **local)
        return cls(hf_model.eval(), processor, adapter=adapter_cls(hf_model, processor), name=str(name_or_path))

    def setup(self) -> None:
        """Index the hook points by name (only ours: the HF modules are left untouched)."""
        self.hook_dict = HookDict()
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                module.step = self.step
                self.hook_dict[name] = module
        self.mod_dict = self.hook_dict
        self.hook_registry = HookRegistry(self.hook_dict.values())

    def remove_all_hook_fns(
        self, direction: str = "both", including_permanent: bool = False, level: int | None = None
    ) -> None:
        """TransformerLens's, visiting only the points that hold hooks (``model.hook_registry``), not every point.

        A run with one hook then costs as little on a model with tens of
        thousands of points (Qwen3-Omni's experts) as on a small one.
        """
        for point in self.hook_registry.with_hooks():
            point.remove_hooks(direction, including_permanent=including_permanent, level=level)

    def clear_contexts(self) -> None:
        """TransformerLens's, visiting only the points whose ``hook.ctx`` was used since the last clear."""
        for point in self.hook_registry.take_contexts():
            point.clear_context()

    def _apply(self, fn, recurse: bool = True):
        """``to``/``cuda``/``cpu``/``half``..., then ``cfg.device`` follows the inputs' device."""
        super()._apply(fn, recurse)
        self.cfg = replace(self.cfg, device=str(self.input_device))
        return self

    @property
    def input_device(self) -> torch.device:
        """Where inputs go: the device of the input embeddings."""
        return self.hf_model.get_input_embeddings().weight.device

    @property
    def tokenizer(self):
        """The processor's tokenizer."""
        return self.processor.tokenizer

    # -- inputs -----------------------------------------------------------
    def prepare(
        self,
        audio: AudioLike | Sequence[AudioLike | Sequence[AudioLike]],
        prompt: str | Sequence[str],
        sampling_rate: int | None = None,
        *,
        raw_prompt: bool = False,
        truncate: bool = False,
        mixdown: bool = False,
        allow_loud: bool = False,
        system_prompt: str | None = None,
        **family_kwargs,
    ) -> LALMBatch:
        """Turn audio and prompts into model inputs plus audio spans.

        ``audio`` is one clip (path, numpy array or tensor), a list with one
        clip per example, or a list of lists for several clips per prompt.
        Raw arrays need ``sampling_rate``; audio is resampled to the model's
        rate. ``prompt`` is one string for all examples or one per example; it
        is wrapped in the processor's chat template with the audio before the
        text, unless ``raw_prompt`` (then it must hold one audio placeholder,
        e.g. ``<|AUDIO|>``, per clip). Clips longer than the model takes raise,
        unless ``truncate`` keeps their beginning; stereo raises unless
        ``mixdown`` averages the channels. Integer PCM is scaled by its type;
        float audio peaking above 2 is refused as integer PCM stored as
        floats, unless ``allow_loud``. Families that need more (Kimi-Audio's
        semantic tokens) take it as keyword arguments of their adapter's ``prepare``.
        """
        custom = getattr(self.adapter, "prepare", None)
        if custom is not None:
            batch = custom(self, audio, prompt, sampling_rate, raw_prompt=raw_prompt, truncate=truncate,
                           mixdown=mixdown, allow_loud=allow_loud, system_prompt=system_prompt, **family_kwargs)
            self._check_length(batch.inputs)
            return replace(batch, tokenizer=self.tokenizer)
        if family_kwargs:
            raise TypeError(f"unexpected arguments for {self.cfg.arch}: {sorted(family_kwargs)}")
        examples = as_examples(audio)
        prompts = [prompt] * len(examples) if isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(examples):
            raise ValueError(f"got {len(prompts)} prompts for {len(examples)} audio examples")
        rate, limit = self.cfg.sampling_rate, self.cfg.max_audio_seconds
        waves, lengths, texts = [], [], []
        for b, (clips, text) in enumerate(zip(examples, prompts)):
            cap = self.adapter.clips_per_prompt_max
            if cap is not None and len(clips) > cap:
                raise ValueError(f"example {b}: {self.cfg.arch} takes at most {cap} clip(s) per prompt, got {len(clips)}")
            example_lengths = []
            for c, clip in enumerate(clips):
                name = f"example {b} clip {c}"
                wave = load_waveform(clip, rate, sampling_rate=sampling_rate, mixdown=mixdown, allow_loud=allow_loud, name=name)
                wave = limit_length(wave, rate, limit, truncate=truncate, name=name, model=self.cfg.arch)
                waves.append(wave)
                example_lengths.append(len(wave))
            lengths.append(example_lengths)
            texts.append(self._prompt_text(text, len(clips), raw_prompt, system_prompt, b))
        inputs = self.processor(
            text=texts, audio=waves, sampling_rate=rate, return_tensors="pt", **self.adapter.processor_kwargs()
        )
        inputs = {k: compact(v) for k, v in inputs.items() if k != "num_audio_tokens"}
        self.adapter.check_inputs(inputs)
        spans = self.adapter.audio_spans(inputs, lengths)
        for b, example_lengths in enumerate(lengths):
            for c, n_samples in enumerate(example_lengths):
                n_tokens = sum(len(s) for s in spans[b] if s.clip == c)
                if n_tokens < 2:
                    raise AudioError(
                        f"example {b} clip {c} lasts {1000 * n_samples / rate:.0f} ms and gives {n_tokens} audio "
                        f"token(s); the model needs at least 2 ({2 / self.cfg.audio_tokens_per_second:g} s)"
                    )
        self._check_length(inputs)
        seconds = [[n / rate for n in example] for example in lengths]
        return LALMBatch(inputs, spans, texts, seconds, self.tokenizer).to(self.input_device, self.hf_model.dtype)

    def _prompt_text(self, text: str, n_clips: int, raw: bool, system_prompt: str | None, example: int) -> str:
        placeholder = self.adapter.placeholder
        found = text.count(placeholder)
        if raw:
            if found != n_clips:
                raise ValueError(
                    f"example {example}: the raw prompt holds {found} {placeholder} placeholder(s) for {n_clips} clip(s)"
                )
            return text
        if found:
            raise ValueError(
                f"example {example}: the prompt already holds {placeholder}; pass raw_prompt=True to use it as it is"
            )
        if not getattr(self.processor, "chat_template", None):
            raise ValueError("this processor has no chat template; write the prompt yourself and pass raw_prompt=True")
        content = [{"type": "audio"}] * n_clips + [{"type": "text", "text": text}]
        messages = [{"role": "user", "content": content}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _check_length(self, inputs: dict) -> None:
        n_ctx, length = self.cfg.n_ctx, inputs["input_ids"].shape[-1]
        if n_ctx is not None and length > n_ctx:
            raise ValueError(
                f"the sequence is {length} positions long (audio and text) but the decoder's position embeddings "
                f"cover {n_ctx} (max_position_embeddings); use shorter clips or fewer clips per prompt"
            )

    def _inputs(self, batch: LALMBatch | dict) -> dict:
        """The HF keyword inputs, checked: placeholders per example and clip, sequence length, and for a
        batch, that its audio spans still describe its ``input_ids`` (one pass over the ids, no model work)."""
        if not isinstance(batch, (LALMBatch, dict)):
            raise TypeError(
                f"expected the LALMBatch from model.prepare(...) or a dict of HF inputs, got {type(batch).__name__}"
            )
        inputs = batch.inputs if isinstance(batch, LALMBatch) else dict(batch)
        if "input_ids" not in inputs:
            raise ValueError("the inputs hold no input_ids; build them with model.prepare(...)")
        self.adapter.check_inputs(inputs)
        self._check_length(inputs)
        if isinstance(batch, LALMBatch) and batch.audio_embeds is not None:
            placeholders = (inputs["input_ids"] == self.adapter.audio_token_id).cpu()
            for b, spans in enumerate(batch.audio_spans):
                if placeholders[b].nonzero().flatten().tolist() != sorted(p for s in spans for p in s.positions):
                    raise ValueError(
                        f"example {b}: the audio placeholders no longer match the batch's audio spans (edited after "
                        "model.prepare(...)?); prepare the batch again"
                    )
            if len(batch.audio_embeds) != len(batch):
                raise ValueError(f"the batch holds {len(batch)} examples but audio embeddings for {len(batch.audio_embeds)}")
        elif isinstance(batch, LALMBatch):
            rate = self.cfg.sampling_rate
            samples = [[round(s * rate) for s in example] for example in batch.clip_seconds]
            try:
                spans = self.adapter.audio_spans(inputs, samples)
            except ValueError as error:
                raise ValueError(f"the batch's audio placeholders were edited after model.prepare(...): {error}") from None
            if spans != batch.audio_spans:
                raise ValueError(
                    "the batch's audio spans no longer match its input_ids (placeholders were edited after "
                    "model.prepare(...)); prepare the batch again"
                )
        return inputs

    # -- encode once, reuse -------------------------------------------------
    def embeds_owner(self) -> dict[str, Any]:
        """What :class:`AudioEmbeddings` record as the model that encoded them (this very model object)."""
        return {"arch": self.cfg.arch, "name": self.cfg.name, "d_model": self.cfg.d_model, "object": id(self.hf_model)}

    def encode_audio(self, batch: LALMBatch) -> AudioEmbeddings:
        """Run only the audio encoder and projector on ``batch`` and keep, per example, the embeddings the
        decoder receives at its audio positions, to reuse them under other prompts.

        >>> emb = model.encode_audio(model.prepare(clip, "Describe the audio."))   # one clip, encoded once
        >>> batch = model.prepare([clip] * 3, ["Is there a dog?", "Is there a bell?", "When?"])
        >>> model(batch.with_audio_embeds(emb))      # the decoder only; logits equal model(batch)

        The model's own forward runs up to the decoder's input (the text
        embeddings with the audio written over the placeholders) and stops,
        so the embeddings are exactly those of the normal path: logits from
        reused embeddings equal ``model(batch)`` bit for bit when they were
        encoded from the same batch, and to float rounding when the clip was
        encoded in a batch of another size (some encoders pick kernels by
        size; Qwen2.5-Omni's packed encoder moves ~1e-7). Hooks on
        ``audio.*`` and ``hook_audio_embeds`` attached while this runs (e.g. in
        ``with model.hooks(...)``) fire, and their edits are kept in the
        embeddings; decoder hooks do not fire. It runs in the caller's grad
        mode. Families whose decoder does not take ``inputs_embeds`` raise
        NotImplementedError.
        """
        if not isinstance(batch, LALMBatch):
            raise TypeError(f"encode_audio takes the LALMBatch from model.prepare(...), got {type(batch).__name__}")
        if batch.audio_embeds is not None:
            raise ValueError("this batch already carries audio embeddings (batch.audio_embeds); nothing to encode")
        if "input_features" not in batch.inputs:
            raise NotImplementedError(f"{self.cfg.arch}: its inputs hold no input_features; encode-once is not supported")
        inputs = self._inputs(batch)
        self.step.set("forward", 0, range(inputs["input_ids"].shape[-1]))
        embeds = self.adapter.decoder_call(lambda: self.hf_model(**inputs, use_cache=False)).get("inputs_embeds")
        if embeds is None:
            raise NotImplementedError(
                f"{self.cfg.arch}: the decoder is not called with inputs_embeds, so its audio embeddings cannot be "
                "reused; run the full model on each batch"
            )
        per_example = []
        for b, spans in enumerate(batch.audio_spans):
            positions = torch.tensor(sorted(p for s in spans for p in s.positions), device=embeds.device)
            per_example.append(embeds[b].index_select(0, positions))
        features = inputs["input_features"]
        return AudioEmbeddings(
            per_example, [span_layout(s) for s in batch.audio_spans], [list(c) for c in batch.clip_seconds],
            [feature_digest(features, s) for s in batch.audio_spans], self.embeds_owner(),
        )

    def _audio_hooks_in_use(self) -> list[str]:
        return [point.name for point in self.hook_registry.with_hooks() if is_audio(point.name)]

    def _decoder_inputs(self, batch: LALMBatch | dict, inputs: dict) -> dict:
        """``inputs``, or for a batch that carries audio embeddings, the adapter's inputs that skip the encoder."""
        if not isinstance(batch, LALMBatch) or batch.audio_embeds is None:
            return inputs
        embeds = batch.audio_embeds
        if embeds.model != self.embeds_owner():
            raise ValueError(
                f"the batch's audio embeddings were encoded by another model ({embeds.model['name'] or embeds.model['arch']}); "
                "encode the audio with this model's encode_audio(...)"
            )
        busy = self._audio_hooks_in_use()
        if busy:
            raise ValueError(
                f"hooks are attached to {busy[:4]}{'...' if len(busy) > 4 else ''}, but this batch carries precomputed audio "
                "embeddings, so the audio encoder and projector do not run; attach them to model.encode_audio(...) "
                "instead, or run the batch from model.prepare(...)"
            )
        return self.adapter.decoder_inputs(inputs, torch.cat(embeds.embeds))

    # -- running ----------------------------------------------------------
    def forward(
        self, batch: LALMBatch | dict, *, return_type: str | None = "logits", **hf_kwargs
    ) -> Float[torch.Tensor, "batch pos vocab"] | Any:
        """Run the model. ``return_type``: ``"logits"`` (default), ``"output"`` (the HF output object) or None.

        A batch from :meth:`LALMBatch.with_audio_embeds` runs only the decoder (see :meth:`encode_audio`)."""
        if return_type not in ("logits", "output", None):
            raise ValueError(f"return_type must be 'logits', 'output' or None, got {return_type!r}")
        misplaced = {"fwd_hooks", "bwd_hooks"} & set(hf_kwargs)
        if misplaced:
            raise TypeError(f"forward() takes no {sorted(misplaced)}: use run_with_hooks, run_with_cache or hooks()")
        inputs = self._inputs(batch)
        self.step.set("forward", 0, range(inputs["input_ids"].shape[-1]))
        output = self.hf_model(**self._decoder_inputs(batch, inputs), use_cache=False, **hf_kwargs)
        if return_type == "logits":
            return output.logits
        return output if return_type == "output" else None

    def run_with_cache(
        self,
        batch: LALMBatch | dict,
        *,
        names_filter: NamesFilter = None,
        pos_slice: Any = None,
        device: str | torch.device | None = None,
        remove_batch_dim: bool = False,
        incl_bwd: bool = False,
        loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        fwd_hooks: list = (),
        bwd_hooks: list = (),
        **forward_kwargs,
    ) -> tuple[Any, LALMActivationCache]:
        """Run and cache activations; returns ``(logits, ActivationCache)``.

        ``names_filter`` picks hook names (a name, a list, or a predicate; an
        unknown name raises). ``pos_slice`` (int, list or slice, as in
        TransformerLens; an int keeps its axis) keeps only those decoder positions:
        the position axis of decoder tensors and the query axis of decoder
        patterns, which are then computed for those rows only (encoder tensors
        are kept whole). Caching never changes the logits. With ``incl_bwd``,
        ``loss_fn(logits)`` must give the scalar to differentiate; gradients
        are cached as ``name + "_grad"``. ``fwd_hooks``/``bwd_hooks`` run
        during the same forward, before the caching hooks, so the cache holds
        what their edits produce.

        ``remove_batch_dim`` needs one example and one encoded clip.
        Shapes: see the hook tables in the README (``lalm-lens hooks MODEL``).

        For a batch that carries audio embeddings (:meth:`LALMBatch.with_audio_embeds`)
        the encoder does not run: a filter that is None or a predicate leaves
        out ``audio.*`` and ``hook_audio_embeds``; naming one raises.
        """
        if incl_bwd and loss_fn is None:
            raise ValueError("incl_bwd=True needs loss_fn(logits) -> scalar to differentiate")
        n_examples = len((batch.inputs if isinstance(batch, LALMBatch) else batch)["input_ids"])
        if remove_batch_dim and n_examples != 1:
            raise ValueError(
                f"remove_batch_dim=True needs a batch of one example, got {n_examples}; "
                "cache with the batch axis and index it (cache[name][i])"
            )
        if isinstance(batch, LALMBatch) and batch.audio_embeds is not None:
            names = self.hook_names(names_filter)
            named = [n for n in names if is_audio(n)] if isinstance(names_filter, (str, list, tuple)) else []
            if named:
                raise ValueError(
                    f"{named[:4]} cannot be cached: this batch carries precomputed audio embeddings, so the audio "
                    "encoder and projector do not run; cache them on the prepared batch instead"
                )
            names_filter = [n for n in names if not is_audio(n)]
        cache, fwd, bwd = self.get_caching_hooks(names_filter, incl_bwd, device, remove_batch_dim, pos_slice=pos_slice)
        with self.hooks(fwd_hooks=[*fwd_hooks, *fwd], bwd_hooks=[*bwd_hooks, *bwd]):
            with torch.enable_grad() if incl_bwd else contextlib.nullcontext():
                out = self(batch, **forward_kwargs)
                if incl_bwd:
                    loss_fn(out).backward()
        return out, LALMActivationCache(cache, self, has_batch_dim=not remove_batch_dim)

    def get_caching_hooks(
        self,
        names_filter: NamesFilter = None,
        incl_bwd: bool = False,
        device=None,
        remove_batch_dim: bool = False,
        cache: dict | None = None,
        pos_slice: Any = None,
    ) -> tuple[dict, list, list]:
        """``(cache, fwd_hooks, bwd_hooks)``: caching hooks for the selected names, to use with :meth:`hooks`."""
        cache = {} if cache is None else cache
        names = self.hook_names(names_filter)
        pos = None if pos_slice is None else Slice.unwrap(pos_slice)
        fwd, bwd = [], []
        for name in names:
            sliced = None if is_audio(name) else pos
            fwd.append((name, CacheWriter(cache, sliced, device, remove_batch_dim)))
            if incl_bwd:
                bwd.append((name, CacheWriter(cache, sliced, device, remove_batch_dim, suffix="_grad")))
        return cache, fwd, bwd

    def add_caching_hooks(
        self,
        names_filter: NamesFilter = None,
        incl_bwd: bool = False,
        device=None,
        remove_batch_dim: bool = False,
        cache: dict | None = None,
    ) -> dict:
        """Attach caching hooks (until ``reset_hooks``) and return the dict they fill; patterns are read beside
        the fast kernel, so the logits stay those of ``model(batch)``."""
        cache, fwd, bwd = self.get_caching_hooks(names_filter, incl_bwd, device, remove_batch_dim, cache)
        for name, hook in fwd:
            self.hook_dict[name].add_hook(hook, dir="fwd")
        for name, hook in bwd:
            self.hook_dict[name].add_hook(hook, dir="bwd")
        return cache

    def hook_names(self, names_filter: NamesFilter = None) -> list[str]:
        """The hook names a filter selects; unknown names raise with suggestions."""
        if names_filter is None:
            return list(self.hook_dict)
        if isinstance(names_filter, str):
            names_filter = [names_filter]
        if callable(names_filter):
            names = [n for n in self.hook_dict if names_filter(n)]
            if not names:
                raise ValueError("names_filter selects no hook point; run `lalm-lens hooks MODEL` to list them")
            return names
        names = list(names_filter)
        for name in names:
            self.hook_dict[name]
        return names

    @torch.no_grad()
    def generate(
        self,
        batch: LALMBatch | dict,
        max_new_tokens: int = 32,
        fwd_hooks: Sequence[tuple[str | Callable, Callable]] = (),
        *,
        do_sample: bool = False,
        return_type: str = "text",
        **generate_kwargs,
    ) -> list[str] | torch.Tensor:
        """Generate with ``fwd_hooks`` active during the prefill and every decoding step.

        Hooks tell the two apart by ``hook.step`` (:class:`~lalm_lens.hook_points.Step`):
        ``phase`` is ``"prefill"`` then ``"decode"``, and ``positions`` the
        absolute positions the tensor covers. Returns the decoded new text per
        example (``return_type="text"``) or the new token ids ``[batch, new]``
        (``"tokens"``). Greedy by default. A batch that carries audio embeddings
        (:meth:`LALMBatch.with_audio_embeds`) runs only the decoder.
        """
        if return_type not in ("text", "tokens"):
            raise ValueError(f"return_type must be 'text' or 'tokens', got {return_type!r}")
        inputs = self._inputs(batch)
        if getattr(batch, "audio_embeds", None) is not None and not self.adapter.generates_from_embeds:
            raise NotImplementedError(f"{self.cfg.arch}: generate does not take reused audio embeddings (HF's generate "
                                      "rebuilds its per-layer inputs from token ids); generate on the batch with its audio")
        generate_kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        self.step.set("prefill", 0, range(0))
        tracker = self.hf_model.register_forward_pre_hook(self._next_step, with_kwargs=True)
        try:
            with self.hooks(fwd_hooks=list(fwd_hooks)):
                decoder_inputs = self._decoder_inputs(batch, inputs)
                out = self.hf_model.generate(
                    **decoder_inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, **generate_kwargs,
                )
        finally:
            tracker.remove()
            self.step.set("forward", 0, range(0))
        new = out[:, inputs["input_ids"].shape[1] :] if "input_ids" in decoder_inputs else out  # embeds only: new tokens
        if return_type == "tokens":
            return new
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def _next_step(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """Before each model call in ``generate``: which positions the call covers (prefill, then one per step)."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"]
        n, step = ids.shape[1], self.step
        if step.phase == "prefill" and not step.positions:
            step.set("prefill", 0, range(n))
        else:
            step.set("decode", step.index + 1, range(step.positions.stop, step.positions.stop + n))

    # -- reading out (TransformerLens names) -------------------------------
    @property
    def W_U(self) -> Float[torch.Tensor, "d_model d_vocab"]:
        """The unembedding, ``lm_head.weight`` transposed (a view). The final norm's weight is not folded in:
        ``model.ln_final(resid) @ model.W_U + model.b_U`` gives the logits."""
        return self.hf_model.get_output_embeddings().weight.T

    @property
    def b_U(self) -> Float[torch.Tensor, "d_vocab"]:
        """The unembedding bias (zeros when ``lm_head`` has none)."""
        head = self.hf_model.get_output_embeddings()
        return head.bias if head.bias is not None else head.weight.new_zeros(head.weight.shape[0])

    def unembed(self, normalized: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "... d_vocab"]:
        """Logits from the output of the final norm (``ln_final.hook_normalized``), with the model's own ``lm_head``."""
        return self.hf_model.get_output_embeddings()(normalized)

    def tokens_to_residual_directions(self, tokens: str | int | list | torch.Tensor) -> torch.Tensor:
        """``W_U`` columns of ``tokens`` (a token string, an id, or ids): ``[d_model]`` for one, ``[..., d_model]`` else."""
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        ids = torch.as_tensor(tokens, device=self.W_U.device)
        return self.W_U[:, ids].movedim(0, -1)

    def to_single_token(self, text: str) -> int:
        """The id of ``text`` when it is exactly one token; raises otherwise."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"{text!r} is {len(ids)} tokens, not one: {ids}")
        return ids[0]

    def to_string(self, tokens: Int[torch.Tensor, "... pos"] | list[int]) -> str | list[str]:
        """Decode ids (``[pos]`` gives a string, ``[batch, pos]`` a list of strings)."""
        tokens = torch.as_tensor(tokens)
        if tokens.dim() > 1:
            return [self.to_string(row) for row in tokens]
        return self.tokenizer.decode(tokens.tolist())

    def to_str_tokens(
        self, input: LALMBatch | str | torch.Tensor | list[int], example: int | None = None
    ) -> list[str] | list[list[str]]:
        """One string per position. For a batch, its decoder positions, audio ones as ``<audio {clip} {t:.2f}s>``
        (clip time at the token's start); one example's list when ``example`` is given or the batch holds one.
        A string is tokenized without template; ids ``[pos]`` or ``[batch, pos]`` are decoded token by token."""
        if isinstance(input, LALMBatch):
            if example is None and len(input) > 1:
                return [input.str_tokens(b) for b in range(len(input))]
            return input.str_tokens(0 if example is None else example)
        if isinstance(input, str):
            input = self.to_tokens(input)
        ids = torch.as_tensor(input)
        if ids.dim() > 1:
            return [self.to_str_tokens(row) for row in ids]
        return self.tokenizer.batch_decode([[i] for i in ids.tolist()])

    def to_tokens(self, text: str) -> torch.Tensor:
        """Token ids of ``text`` with no special tokens and no chat template, ``[n]`` (unlike TransformerLens, no batch axis)."""
        return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"])
