"""HookedLALM: an HF audio-language model with TransformerLens hook points on every tensor that matters.

The HF module tree is kept as it is (``model.hf_model``); hook points with
canonical names are fed from PyTorch hooks on its submodules, installed only
while a hook is attached, and attention patterns come from one registered
attention function. Logits therefore equal the HF model's bit for bit.
"""

from __future__ import annotations

import contextlib
import difflib
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import torch
from jaxtyping import Float
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities import Slice

from .adapters import Adapter, adapter_class, adapter_for
from .adapters.base import read_model_type
from .attention import ALL_ROWS, PREFIX, hooked_implementation, read_rows
from .batch import LALMBatch
from .data.audio import AudioError, AudioLike, as_examples, limit_length, load_waveform

NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]


class HookDict(dict):
    """``name -> HookPoint``; an unknown name raises a KeyError that suggests the nearest names."""

    def __missing__(self, name: str):
        close = difflib.get_close_matches(str(name), list(self), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else " Run `lalm-lens hooks MODEL` to list them."
        raise KeyError(f"unknown hook point {name!r}.{hint}")


def _is_audio_hook(name: str) -> bool:
    return name.startswith("audio.") or name == "hook_audio_embeds"


class CacheWriter:
    """A caching hook: stores the activation (its ``pos_slice`` positions) under the hook's name.

    It only reads, so for attention patterns it declares ``query_rows`` (the
    sliced positions, or all rows) and the pattern is computed beside the fast
    kernel: caching patterns leaves the logits bit-identical.
    """

    def __init__(self, cache: dict, pos_slice: Slice | None, device, remove_batch_dim: bool, suffix: str = ""):
        self.cache, self.pos_slice, self.device = cache, pos_slice, device
        self.remove_batch_dim, self.suffix = remove_batch_dim, suffix
        rows = None if pos_slice is None else pos_slice.slice
        self.query_rows = ALL_ROWS if rows is None else rows if isinstance(rows, slice) else [int(r) for r in rows]

    def __call__(self, tensor: torch.Tensor, hook: HookPoint) -> None:
        if hook.name.endswith("hook_pattern"):
            tensor = read_rows(tensor, hook, self.query_rows)
        elif self.pos_slice is not None:
            tensor = self.pos_slice.apply(tensor, dim=1)
        tensor = tensor.detach().to(self.device)
        self.cache[hook.name + self.suffix] = tensor[0] if self.remove_batch_dim else tensor


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
        self.cfg = self.adapter.config(name)
        for config in self.adapter.attention_configs:
            config._attn_implementation = hooked_implementation(config._attn_implementation.removeprefix(PREFIX))
        self.adapter.build_hooks(self)
        self.setup()

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

        ``device_map`` (e.g. ``"auto"`` or a per-module dict) hands placement to
        accelerate for models larger than one device; hooks, caches and edits
        work across devices. Weights are read from safetensors only.
        """
        from .zoo import resolve

        path = resolve(name_or_path)
        local = {"local_files_only": not allow_download, "trust_remote_code": trust_remote_code}
        adapter_cls = adapter_class(read_model_type(path, local_files_only=not allow_download))
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
                self.hook_dict[name] = module
        self.mod_dict = self.hook_dict

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
        ``mixdown`` averages the channels. Families that need more (Kimi-Audio's
        semantic tokens) take it as keyword arguments of their adapter's ``prepare``.
        """
        custom = getattr(self.adapter, "prepare", None)
        if custom is not None:
            return custom(self, audio, prompt, sampling_rate, raw_prompt=raw_prompt, truncate=truncate,
                          mixdown=mixdown, system_prompt=system_prompt, **family_kwargs)
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
                wave = load_waveform(clip, rate, sampling_rate=sampling_rate, mixdown=mixdown, name=name)
                wave = limit_length(wave, rate, limit, truncate=truncate, name=name, model=self.cfg.arch)
                waves.append(wave)
                example_lengths.append(len(wave))
            lengths.append(example_lengths)
            texts.append(self._prompt_text(text, len(clips), raw_prompt, system_prompt, b))
        inputs = self.processor(
            text=texts, audio=waves, sampling_rate=rate, return_tensors="pt", **self.adapter.processor_kwargs()
        )
        inputs = {k: v for k, v in inputs.items() if k != "num_audio_tokens"}
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
        seconds = [[n / rate for n in example] for example in lengths]
        return LALMBatch(inputs, spans, texts, seconds).to(self.input_device, self.hf_model.dtype)

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

    def _inputs(self, batch: LALMBatch | dict) -> dict:
        """The HF keyword inputs; hand-made dicts are checked here, batches were checked by :meth:`prepare`."""
        if isinstance(batch, LALMBatch):
            return batch.inputs
        inputs = dict(batch)
        self.adapter.check_inputs(inputs)
        return inputs

    # -- running ----------------------------------------------------------
    def forward(
        self, batch: LALMBatch | dict, *, return_type: str | None = "logits", **hf_kwargs
    ) -> Float[torch.Tensor, "batch pos vocab"] | Any:
        """Run the model. ``return_type``: ``"logits"`` (default), ``"output"`` (the HF output object) or None."""
        if return_type not in ("logits", "output", None):
            raise ValueError(f"return_type must be 'logits', 'output' or None, got {return_type!r}")
        misplaced = {"fwd_hooks", "bwd_hooks"} & set(hf_kwargs)
        if misplaced:
            raise TypeError(f"forward() takes no {sorted(misplaced)}: use run_with_hooks, run_with_cache or hooks()")
        output = self.hf_model(**self._inputs(batch), use_cache=False, **hf_kwargs)
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
    ) -> tuple[Any, ActivationCache]:
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

        Shapes: see the hook tables in the README (``lalm-lens hooks MODEL``).
        """
        if incl_bwd and loss_fn is None:
            raise ValueError("incl_bwd=True needs loss_fn(logits) -> scalar to differentiate")
        cache, fwd, bwd = self.get_caching_hooks(names_filter, incl_bwd, device, remove_batch_dim, pos_slice=pos_slice)
        with self.hooks(fwd_hooks=[*fwd_hooks, *fwd], bwd_hooks=[*bwd_hooks, *bwd]):
            with torch.enable_grad() if incl_bwd else contextlib.nullcontext():
                out = self(batch, **forward_kwargs)
                if incl_bwd:
                    loss_fn(out).backward()
        return out, ActivationCache(cache, self, has_batch_dim=not remove_batch_dim)

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
            sliced = None if _is_audio_hook(name) else pos
            fwd.append((name, CacheWriter(cache, sliced, device, remove_batch_dim)))
            if incl_bwd:
                bwd.append((name, CacheWriter(cache, sliced, device, remove_batch_dim, suffix="_grad")))
        return cache, fwd, bwd

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

        Returns the decoded new text per example (``return_type="text"``) or
        the new token ids ``[batch, new]`` (``"tokens"``). Greedy by default.
        """
        if return_type not in ("text", "tokens"):
            raise ValueError(f"return_type must be 'text' or 'tokens', got {return_type!r}")
        inputs = self._inputs(batch)
        generate_kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        with self.hooks(fwd_hooks=list(fwd_hooks)):
            out = self.hf_model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, **generate_kwargs)
        new = out[:, inputs["input_ids"].shape[1] :]
        if return_type == "tokens":
            return new
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def to_tokens(self, text: str) -> torch.Tensor:
        """Token ids of ``text`` with no special tokens and no chat template, ``[n]`` (unlike TransformerLens, no batch axis)."""
        return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"])
