"""Batching the training examples of ``lalm-toy``, and its forward pass on a batch.

:class:`Encoder` turns a conversation into token ids with answer targets, :class:`Batches` collates examples with
their audio features and 4D attention masks (the audio dropout), and :func:`forward_logits` and
:func:`answer_stats` give the logits and the answer loss that training and ``--quick-look`` share.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor
from transformers.masking_utils import create_bidirectional_mask

from lalm_lens.adapters.base import tokens_after_whisper
from lalm_lens.zoo.frame_objective import frame_targets
from lalm_lens.zoo.toy.drawing import Example, draw_example, in_focus, ramp, since
from lalm_lens.zoo.toy.recipe import EMOTION_Q, QUESTION_KINDS, SAMPLING_RATE, SCENE_QUESTIONS, SPEECH_LEVEL_Q, Config


def answer_weight(cfg: Config) -> Callable[[str, str], float]:
    """The loss weight of each token of ``answer`` to ``question``: ``emotion_weight`` for emotion answers,
    ``property_weight`` for a scene's pitch and level answers, 1 for the rest."""

    def weight(question: str, answer: str) -> float:
        if question == EMOTION_Q:
            return cfg.emotion_weight
        if QUESTION_KINDS.get(answer) in ("pitch", "level") and question != SPEECH_LEVEL_Q:
            return cfg.property_weight
        return 1.0

    return weight


class Encoder:
    """Token ids of a conversation about one clip, which positions carry the loss and with what weight, and where
    each question is; ``weight(question, answer)`` weighs each answer token (default 1)."""

    def __init__(self, processor: Qwen2AudioProcessor, weight: Callable[[str, str], float] | None = None):
        self.tokenizer, self.weight = processor.tokenizer, weight or (lambda question, answer: 1.0)
        tok = self.tokenizer.convert_tokens_to_ids
        self.audio_id, self.end_id, self.pad_id = tok("<|AUDIO|>"), tok("<|im_end|>"), tok("<|endoftext|>")

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt(self, question: str) -> str:
        messages = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": question}]}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def __call__(self, turns: list[tuple[str, str]], n_audio: int) -> tuple[list[int], list[int], list[float], list[tuple[int, int]]]:
        """``(ids, targets, weights, questions)``: targets hold the next token at answer positions and -100
        elsewhere, weights each position's weight in the loss; ``questions[k]`` is the ``[start, stop)`` of turn ``k``'s text after the audio, up to (not including)
        the last prompt position, the one that predicts the answer."""
        ids, targets, weights, questions = [], [], [], []
        for k, (question, answer) in enumerate(turns):
            text = self.prompt(question) if k == 0 else f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
            prompt = self.ids(text)
            start = len(ids)
            if k == 0:
                at = prompt.index(self.audio_id)
                prompt = prompt[:at] + [self.audio_id] * n_audio + prompt[at + 1 :]
                start += at + n_audio
            reply = self.ids(answer) + [self.end_id]
            questions.append((start, len(ids) + len(prompt) - 1))
            ids += prompt + reply
            targets += [-100] * (len(prompt) - 1) + reply + [-100]
            weights += [1.0] * (len(prompt) - 1) + [self.weight(question, answer)] * len(reply) + [1.0]
        return ids, targets, weights, questions


class Batches(torch.utils.data.IterableDataset):
    """Collated training batches for steps ``start..stop``; batch ``s`` depends only on the seed and ``s``."""

    def __init__(self, cfg: Config, processor: Qwen2AudioProcessor, start: int, stop: int):
        self.cfg, self.processor, self.start, self.stop = cfg, processor, start, stop
        self.encode = Encoder(processor, answer_weight(cfg))

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        first, stride = (0, 1) if worker is None else (worker.id, worker.num_workers)
        for step in range(self.start + first, self.stop, stride):  # the loader takes workers in turn: steps in order
            yield self.batch(step)

    def batch(self, step: int) -> dict:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        max_s = float(rng.choice(cfg.durations))
        examples = [draw_example(cfg, step, i, max_s) for i in range(cfg.batch_size)]
        dropout = cfg.audio_dropout * ramp(step, cfg.dropout_step, cfg.ramp_steps)
        if cfg.focus_dropout and in_focus(cfg, step):
            dropout = cfg.focus_dropout
        late = ramp(step, max(cfg.dropout_step, cfg.late_step), cfg.ramp_steps)
        sighted = ("presence",) if since(cfg.sighted_presence_step, step) else ()
        return self.collate(examples, dropout, rng, cfg.late_audio * late,
                            blind_early_only=cfg.late_lookup, sighted_kinds=sighted)

    def collate(
        self, examples: list[Example], audio_dropout: float = 0.0, rng: np.random.Generator | None = None,
        late_audio: float = 0.0, sighted_tail: float = 0.0, blind_early_only: bool = False, sighted_kinds: tuple[str, ...] = (),
    ) -> dict:
        """Features, right-padded ids, answer targets and the 4D mask of ``examples``; each question turn's tokens
        lose the audio with probability ``audio_dropout``, and in a scene's question turns the position that answers
        loses it in the decoder's first half (``early_mask``, see :func:`decoder_output`) with probability
        ``late_audio`` (both drawn from ``rng``). ``sighted_tail``: the share of a dropped turn's tokens, counted back
        from the one before the answering position, that keep the audio all the same (lowered rung by rung, it pushes
        the lookup of a named sound from the name towards the answering position). ``blind_early_only``: a dropped
        turn's tokens lose the audio in the decoder's first half only (in ``early_mask``), so the name must look its
        sound up later but from its own position. ``sighted_kinds``: the question kinds (``QUESTION_KINDS``) whose
        turns keep the audio whatever the dropout (their draw is made all the same, so the other turns' are unchanged)."""
        extractor = self.processor.feature_extractor
        # zeros past the longest clip (and its frames' reach) give the frames kept below as 30 s of padding gives them
        reach = 2 * extractor.n_fft + 4 * extractor.hop_length
        feats = extractor(
            [e.wave for e in examples], sampling_rate=SAMPLING_RATE, return_tensors="pt", padding="max_length",
            max_length=min(extractor.n_samples, max(len(e.wave) for e in examples) + reach), return_attention_mask=True,
        )
        n_frames = feats["attention_mask"].sum(-1)
        keep = min(feats["input_features"].shape[-1], 4 * math.ceil((int(n_frames.max()) + 2) / 4))
        rows = [self.encode(e.turns, int(tokens_after_whisper(n))) for e, n in zip(examples, n_frames)]
        length = max(len(ids) for ids, *_ in rows)
        input_ids = torch.full((len(rows), length), self.encode.pad_id)
        targets = torch.full((len(rows), length), -100)
        weights = torch.ones((len(rows), length))
        mask = torch.zeros((len(rows), 1, length, length), dtype=torch.bool)
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
        early = []  # (example, query rows, audio keys) hidden in the decoder's first half only
        for b, (ids, tgt, wts, questions) in enumerate(rows):
            n = len(ids)
            input_ids[b, :n], targets[b, :n], weights[b, :n] = torch.tensor(ids), torch.tensor(tgt), torch.tensor(wts)
            mask[b, 0, :n, :n] = causal[:n, :n]
            mask[b, 0, range(n, length), range(n, length)] = True
            audio = input_ids[b] == self.encode.audio_id
            for (start, stop), (_, answer) in zip(questions, examples[b].turns):
                dropped = audio_dropout and rng.random() < audio_dropout
                if dropped and QUESTION_KINDS.get(answer) not in sighted_kinds:
                    blind = slice(start, stop - round(sighted_tail * (stop - start)))
                    if blind_early_only:
                        early.append((b, blind, audio))
                    else:
                        mask[b, 0, blind] &= ~audio
                if late_audio and examples[b].task in SCENE_QUESTIONS and rng.random() < late_audio:
                    early.append((b, stop, audio))
        early_mask = mask.clone() if early else None
        for b, rows_hidden, audio in early:
            early_mask[b, 0, rows_hidden] &= ~audio
        hop_s = self.processor.feature_extractor.hop_length / SAMPLING_RATE
        frames = frame_targets([e.events for e in examples], tokens_after_whisper(n_frames).tolist(), 4 * hop_s)
        return dict(
            input_ids=input_ids, attention_mask=mask, early_mask=early_mask, targets=targets, weights=weights, n_frames=n_frames,
            frame_targets=frames,
            input_features=feats["input_features"][..., :keep], tasks=[e.task for e in examples],
            kinds=[[QUESTION_KINDS.get(answer) if e.task in SCENE_QUESTIONS else None for _, answer in e.turns]
                   for e in examples],
            encoder_learns=torch.tensor([e.task != "emotion" for e in examples]),
        )


def audio_embeds(model: Qwen2AudioForConditionalGeneration, features: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
    """The projector output for every real audio token, concatenated over clips ``[tokens, d_model]``.

    The HF encoder's arithmetic on features trimmed to the longest clip of the
    batch: frames beyond a clip are masked out of its attention anyway, so the
    result equals the HF forward on 10 s of padding, at a fraction of the cost.
    """
    tower = model.model.audio_tower
    x = F.gelu(tower.conv2(F.gelu(tower.conv1(features.to(tower.conv1.weight.dtype))))).transpose(1, 2)
    x = x + tower.embed_positions.weight[: x.shape[1]]
    lengths = (n_frames - 1) // 2 + 1
    mask_2d = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).long()
    mask = create_bidirectional_mask(config=tower.config, inputs_embeds=x, attention_mask=mask_2d)
    for layer in tower.layers:
        x = layer(x, mask)
    x = tower.layer_norm(tower.avg_pooler(x.transpose(1, 2)).transpose(1, 2))
    x = model.model.multi_modal_projector(x)
    keep = torch.arange(x.shape[1], device=x.device)[None] < tokens_after_whisper(n_frames)[:, None]
    return x[keep]


def batch_audio_embeds(model: Qwen2AudioForConditionalGeneration, batch: dict) -> torch.Tensor:
    """:func:`audio_embeds` of a training batch, with autograd only while the encoder learns."""
    with torch.set_grad_enabled(torch.is_grad_enabled() and model.model.multi_modal_projector.linear.weight.requires_grad):
        return audio_embeds(model, batch["input_features"], batch["n_frames"])


def forward_logits(model: Qwen2AudioForConditionalGeneration, batch: dict, audio: torch.Tensor | None = None) -> torch.Tensor:
    """Logits ``[batch, pos, vocab]`` of a right-padded training batch (``attention_mask``: 2D padding or 4D boolean);
    ``audio``: its :func:`batch_audio_embeds`, if computed already.

    Clips whose ``encoder_learns`` is False reach the decoder detached: their loss does not train the encoder."""
    return model.lm_head(decoder_output(model, batch, audio).last_hidden_state)


def decoder_output(model: Qwen2AudioForConditionalGeneration, batch: dict, audio: torch.Tensor | None = None, **kwargs):
    """The language model's output on a training batch (as :func:`forward_logits`, before the unembedding), from
    the batch's :func:`audio_embeds` (``audio``, if computed already); ``kwargs`` go to it
    (``output_hidden_states=True`` for the residual after every layer). The decoder's first half of layers
    attends under ``batch["early_mask"]`` where the batch has one (``Config.late_audio``)."""
    ids = batch["input_ids"]
    embeds = model.model.get_input_embeddings()(ids)
    if audio is None:
        audio = batch_audio_embeds(model, batch)
    if audio.requires_grad and "encoder_learns" in batch and not batch["encoder_learns"].all():
        learns = batch["encoder_learns"].repeat_interleave(tokens_after_whisper(batch["n_frames"]))
        audio = torch.where(learns[:, None], audio, audio.detach())
    embeds = embeds.masked_scatter((ids == model.config.audio_token_index)[..., None], audio.to(embeds.dtype))
    language_model = model.model.language_model
    mask, early_mask = (attention_mask_for(language_model, batch.get(key)) for key in ("attention_mask", "early_mask"))

    def swap_mask(module, args, layer_kwargs):
        return args, {**layer_kwargs, "attention_mask": early_mask}

    first_half = language_model.layers[: len(language_model.layers) // 2] if early_mask is not None else []
    handles = [layer.register_forward_pre_hook(swap_mask, with_kwargs=True) for layer in first_half]
    try:
        return language_model(inputs_embeds=embeds, attention_mask=mask, **kwargs)
    finally:
        for handle in handles:
            handle.remove()


def attention_mask_for(language_model: torch.nn.Module, mask: torch.Tensor | None) -> torch.Tensor | None:
    """``mask`` as ``language_model``'s attention takes it: a 4D boolean mask stays boolean for SDPA (the kernel
    the toy trains with) and becomes additive (0 or the dtype's minimum) otherwise, since eager attention adds a
    4D mask to its scores as it is, so a boolean one would mask nothing."""
    if mask is None or mask.dim() != 4 or mask.dtype != torch.bool or language_model.config._attn_implementation == "sdpa":
        return mask
    dtype = language_model.get_input_embeddings().weight.dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def answer_stats(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Loss over answer tokens (each weighted by ``batch["weights"]`` where given; divided by their number), and
    per task ``[loss sum, examples, answers exactly right, answers]`` under teacher forcing; with
    ``batch["kinds"]`` (per example, the kind of each answer or None), the scene questions' answers are also
    counted per kind (``presence``, ``pitch``, ``level``: one example per answer), which a task's mixed window
    cannot show."""
    targets = batch["targets"]
    token_loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
    mask = targets != -100
    loss = (token_loss * batch["weights"] if "weights" in batch else token_loss).sum() / mask.sum()
    right = (logits.argmax(-1) == targets) | ~mask
    stats: dict[str, np.ndarray] = {}
    with torch.no_grad():
        token_loss, mask, right = token_loss.detach().cpu(), mask.cpu(), right.cpu()  # one sync, not one per answer
        for b, task in enumerate(batch["tasks"]):
            m = mask[b].long()
            starts = ((m[1:] - m[:-1]) == 1).nonzero().flatten() + 1
            stops = ((m[1:] - m[:-1]) == -1).nonzero().flatten() + 1
            spans = list(zip(starts.tolist(), stops.tolist()))
            hits = [bool(right[b, a:z].all()) for a, z in spans]
            stats[task] = stats.get(task, 0) + np.array([float(token_loss[b][mask[b]].mean()), 1, sum(hits), len(hits)])
            for kind, hit, (a, z) in zip(batch["kinds"][b] if "kinds" in batch else [], hits, spans):
                if kind:
                    stats[kind] = stats.get(kind, 0) + np.array([float(token_loss[b, a:z].mean()), 1, hit, 1])
    return loss, stats
