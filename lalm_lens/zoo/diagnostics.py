"""Mechanism diagnostics of ``lalm-toy``: where the decoder reads the audio, and whether its MLPs decide emotion.

They measure how the toy answers, not how the studies score on it, and are
how its training recipe is judged (see the model card):

- :func:`retrieval`: accuracy of yes/no and property questions when the last
  prompt position's attention to the audio is cut at one decoder layer, at
  every layer from it on, or when the question's own tokens may not see the audio;
- :func:`mlp_ablation`: emotion accuracy with each decoder layer's MLP output
  replaced by its mean, and with all of them at once;
- :func:`linear_probe` on :func:`pooled_audio_embeds`: a linear probe for
  emotion on the mean projector output of each clip (``hook_audio_embeds``),
  trained on one split of utterances and tested on another: what the encoder
  alone makes linearly available.

Answers are read as the first answer token's choice among the options
(e.g. ``high`` vs ``low``), which is what greedy generation starts with.
"""

from __future__ import annotations

from typing import Callable, Sequence

import einops
import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from .. import names
from ..analysis.statistics import clip_bootstrap, wilson
from ..batch import LALMBatch
from ..hooks.knockout import Knockout

SAMPLING_RATE = 16000
HooksFor = Callable[[LALMBatch], list]


def choices(
    model, waves: Sequence[np.ndarray], prompts: Sequence[str], options: Sequence[str],
    hooks_for: HooksFor | None = None, batch_size: int = 32,
) -> np.ndarray:
    """Index into ``options`` of the first answer token the model prefers, per example ``[n]``.

    ``hooks_for(batch)`` gives the ``fwd_hooks`` to run each batch with.
    """
    option_ids = [model.to_single_token(o) for o in options]
    picked = []
    for i in range(0, len(waves), batch_size):
        batch = model.prepare(list(waves[i : i + batch_size]), list(prompts[i : i + batch_size]), sampling_rate=SAMPLING_RATE)
        with torch.no_grad():
            logits = model.run_with_hooks(batch, fwd_hooks=hooks_for(batch) if hooks_for else [])
        picked.append(logits[:, -1, option_ids].argmax(-1).numpy())
    return np.concatenate(picked)


def _score(hits: np.ndarray) -> dict:
    k, n = int(hits.sum()), len(hits)
    return {"accuracy": k / n, "n": n, "ci95": wilson(k, n)}


def question_positions(batch: LALMBatch) -> list[int]:
    """Positions (from the end, the same in every example) of the question text after the audio, without the last prompt position."""
    ends = [len(batch.input_ids[b]) - (max(batch.audio_positions(b)) + 2) for b in range(len(batch))]
    if len(set(ends)) != 1:
        raise ValueError("the questions of this batch differ in length; group them by length")
    return list(range(-ends[0], -1))


def retrieval(model, items: Sequence[tuple[np.ndarray, str, Sequence[str], str]], batch_size: int = 32) -> dict:
    """Accuracy per question kind under knockouts of the attention to the audio.

    ``items``: ``(wave, question, options, answer)``; questions of one kind
    should have one length in tokens (the toy's canonical questions do).
    Returns ``{"none", "question_tokens", "last_at": [per layer], "last_from": [per layer],
    "prompt_from": [per layer]}`` of accuracy summaries (each knockout's with ``drop``, the accuracy lost
    against no knockout on the same questions, and ``drop_ci95``, its paired bootstrap interval: the same
    questions answered twice differ far less than two independent samples would): no knockout; the
    question's own tokens cut from the audio in every layer; the last prompt
    position cut at one layer; cut at that layer and every later one; every
    position after the audio (the question and the last position) cut at that
    layer and every later one, which tells a lookup made late from the
    question's words from one made at layer 0.
    """
    waves, prompts, options, truth = zip(*items)
    options = options[0]
    answer = np.array([options.index(t) for t in truth])
    n_layers = model.cfg.n_layers

    def hits(hooks_for) -> np.ndarray:
        return choices(model, waves, prompts, options, hooks_for, batch_size) == answer

    uncut = hits(None)

    def run(hooks_for):
        cut_hits = hits(hooks_for)
        mean, low, high = clip_bootstrap(uncut.astype(float) - cut_hits)
        return {**_score(cut_hits), "drop": mean, "drop_ci95": (low, high)}

    def cut(layers, queries):
        return lambda batch: Knockout.audio(batch, layers, queries=queries(batch)).fwd_hooks()

    def last(batch):
        return [-1]

    def prompt(batch):
        return [*question_positions(batch), -1]

    result = {"none": _score(uncut), "question_tokens": run(cut(range(n_layers), question_positions))}
    result["last_at"] = [run(cut([layer], last)) for layer in range(n_layers)]
    result["last_from"] = [run(cut(range(layer, n_layers), last)) for layer in range(n_layers)]
    result["prompt_from"] = [run(cut(range(layer, n_layers), prompt)) for layer in range(n_layers)]
    return result


def mean_mlp_out(model, waves: Sequence[np.ndarray], prompt: str, batch_size: int = 32) -> Float[torch.Tensor, "layer d_model"]:
    """Mean of each decoder layer's ``hook_mlp_out`` over every real position of ``waves`` under ``prompt``."""
    n_layers = model.cfg.n_layers
    total, count = torch.zeros(n_layers, model.cfg.d_model, dtype=torch.float64), 0
    names_filter = [names.decoder(layer, "hook_mlp_out") for layer in range(n_layers)]
    for i in range(0, len(waves), batch_size):
        batch = model.prepare(list(waves[i : i + batch_size]), prompt, sampling_rate=SAMPLING_RATE)
        real = batch.inputs["attention_mask"].bool()
        with torch.no_grad():
            _, cache = model.run_with_cache(batch, names_filter=names_filter)
        for layer, name in enumerate(names_filter):
            total[layer] += cache[name][real].double().sum(0)
        count += int(real.sum())
    return (total / count).float()


def mlp_ablation(
    model, waves: Sequence[np.ndarray], prompt: str, options: Sequence[str], truth: Sequence[str],
    means: Float[torch.Tensor, "layer d_model"], batch_size: int = 32,
) -> dict:
    """Accuracy with no ablation, with each layer's ``hook_mlp_out`` set to its mean, and with all layers at once."""
    answer = np.array([list(options).index(t) for t in truth])
    n_layers = model.cfg.n_layers

    def ablate(layers):
        def hooks_for(batch):
            return [(names.decoder(layer, "hook_mlp_out"), _constant(means[layer])) for layer in layers]
        return hooks_for

    def run(hooks_for):
        return _score(choices(model, waves, [prompt] * len(waves), options, hooks_for, batch_size) == answer)

    return {
        "none": run(None),
        "layer": [run(ablate([layer])) for layer in tqdm(range(n_layers), desc="MLP mean-ablation", leave=False)],
        "all": run(ablate(range(n_layers))),
    }


def _constant(value: torch.Tensor):
    def hook(activation, hook):
        return value.to(activation.dtype).expand_as(activation).clone()
    return hook


def pooled_audio_embeds(model, waves: Sequence[np.ndarray], prompt: str, batch_size: int = 32) -> Float[np.ndarray, "clip d_model"]:
    """The projector output (``hook_audio_embeds``) averaged over each clip's audio tokens."""
    rows = []
    for i in range(0, len(waves), batch_size):
        batch = model.prepare(list(waves[i : i + batch_size]), prompt, sampling_rate=SAMPLING_RATE)
        with torch.no_grad():
            _, cache = model.run_with_cache(batch, names_filter=["hook_audio_embeds"])
        embeds = cache["hook_audio_embeds"]
        for b in range(len(batch)):
            n = len(batch.audio_positions(b))
            rows.append(embeds[b, :n].mean(0).double().numpy())
    return np.stack(rows)


def given_class(x: Float[np.ndarray, "n d"], classes: Sequence[int], n_classes: int) -> Float[np.ndarray, "n cd"]:
    """Each row of ``x`` moved into its class's block of ``n_classes`` (zeros elsewhere): a linear probe on the result
    fits one direction per class, for a property (pitch, level) that is high or low relative to its class."""
    return einops.rearrange(np.eye(n_classes)[list(classes)][:, :, None] * x[:, None, :], "n c d -> n (c d)")


def linear_probe(
    train_x: Float[np.ndarray, "n d"], train_y: np.ndarray, test_x: Float[np.ndarray, "m d"], test_y: np.ndarray,
    weight_decay: float = 1e-2,
) -> dict:
    """Multinomial logistic regression (standardised features, L2, L-BFGS); test accuracy with its interval."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-8
    x = torch.tensor((train_x - mean) / std, dtype=torch.float64)
    y = torch.tensor(train_y)
    w = torch.zeros(x.shape[1], int(max(train_y.max(), test_y.max())) + 1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(w.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + weight_decay * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = (torch.tensor((test_x - mean) / std, dtype=torch.float64) @ w + b).argmax(-1).numpy()
    return _score(predicted == test_y)
