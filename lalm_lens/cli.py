"""The ``lalm-lens`` command."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from .data.audio import AudioError
from .zoo import TINY

USER_ERRORS = (AudioError, ValueError, KeyError, OSError)
"""What a user's input causes (bad audio, an unknown name or hook, a missing file or checkpoint): printed as
``lalm-lens: error: ...`` with exit status 2; anything else is a bug and keeps its traceback."""


def load(name: str, **kwargs):
    """Load a model by path, hub id in the local cache, shipped name, or ``tiny-*`` (built once into the cache)."""
    from . import HookedLALM

    return HookedLALM.from_pretrained(name, **kwargs)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--dtype``, for commands that load a model (a 7B checkpoint: ``--device cuda --dtype bfloat16``)."""
    parser.add_argument("--device", default=None, help="where to put the model (cpu, cuda, cuda:1...; default cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def load_from_args(args: argparse.Namespace):
    """The model named by ``args.model``, on ``args.device`` in ``args.dtype``."""
    return load(args.model, device=args.device, dtype=getattr(torch, args.dtype))


def hook_shapes(model, seconds: float, prompt: str | list[int]) -> dict[str, tuple[int, ...]]:
    """Every hook name with the shape it sees for one clip of ``seconds`` of audio.

    Kimi-Audio runs with blank semantic tokens (``semantic_tokens="blank"``): the shapes are those of real codes.
    """
    wave = (np.random.default_rng(0).standard_normal(int(seconds * model.cfg.sampling_rate)) * 0.1).astype(np.float32)
    family = {"semantic_tokens": "blank"} if model.cfg.arch == "kimi_audio" else {}
    batch = model.prepare(wave, prompt, sampling_rate=model.cfg.sampling_rate, **family)
    shapes = {}
    record = lambda tensor, hook: shapes.__setitem__(hook.name, tuple(tensor.shape))
    with torch.no_grad():
        model.run_with_hooks(batch, fwd_hooks=[(lambda name: True, record)])
    return {name: shapes[name] for name in model.hook_dict if name in shapes}


def token_ids(text: str) -> list[int]:
    """``"11,12,13"`` -> ``[11, 12, 13]`` (``--prompt-ids``)."""
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids such as 11,12,13, got {text!r}") from None


def cmd_hooks(args) -> int:
    model = load(args.model, dtype=getattr(torch, args.dtype))
    prompt = args.prompt if args.prompt_ids is None else args.prompt_ids
    shapes = hook_shapes(model, args.seconds, prompt)
    print(f"{args.model}: {model.cfg.arch}, {model.cfg.n_layers} decoder layers, {model.cfg.audio_n_layers} encoder layers")
    print(f"{len(shapes)} hook points for one {args.seconds:g} s clip and the prompt {prompt!r}:")
    width = max(map(len, shapes))
    for name, shape in shapes.items():
        print(f"  {name:<{width}}  {list(shape)}")
    return 0


def cmd_demo(args) -> int:
    from .data import make_scene
    from .hooks import AudioAttention
    from .plotting import plot_audio_attention

    model = load(args.model)
    scene = make_scene(seed=args.seed, n_events=3, duration_s=args.seconds, layout="equal")
    print("the clip:", ", ".join(f"{e.label} {e.start_s:g}–{e.stop_s:g} s" for e in scene.events))
    batch = model.prepare(scene.wave, args.prompt, sampling_rate=scene.sampling_rate)
    reader = AudioAttention(model.cfg.n_layers)
    answer = model.generate(batch, max_new_tokens=12)[0]
    print(f"Q: {args.prompt}\nA: {answer}")
    with torch.no_grad():
        model.run_with_hooks(batch, fwd_hooks=reader.fwd_hooks())
    seconds = reader.over_time(batch, 0)[0]
    curves = np.stack([reader.over_time(batch, layer)[1] for layer in range(model.cfg.n_layers)])
    figure = plot_audio_attention(seconds, curves, scene.wave, scene.sampling_rate, events=scene.events,
                                  title=f"{args.prompt!r} → {answer!r}: last prompt token's attention to audio")
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


STUDIES = [
    ("localize", "lalm_lens.experiments.localization",
     "the three-event localization study: steering, prompting and baselines (--help for its options)"),
    ("neurons", "lalm_lens.experiments.emotion_neurons",
     "the emotion-neuron study: selectors, deactivation and gain (--help for its options)"),
]
"""Subcommands that hand their arguments to a study's own command line."""


def run_study(module: str, argv: list[str]) -> int:
    import importlib

    importlib.import_module(module).main(argv)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lalm-lens", description="Hooked audio-language models.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    commands = parser.add_subparsers(dest="command", required=True)
    hooks = commands.add_parser("hooks", help="print every hook name with its shape")
    hooks.add_argument("model", help=f"folder, hub id in the local cache, lalm-toy, or one of {', '.join(TINY)}")
    hooks.add_argument("--seconds", type=float, default=6.0, help="length of the test clip (default 6)")
    hooks.add_argument("--prompt", default="What sounds are in the audio?")
    hooks.add_argument("--prompt-ids", type=token_ids, default=None, metavar="IDS",
                       help="the prompt as comma-separated token ids, for checkpoints without a text tokenizer")
    hooks.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    hooks.set_defaults(run=cmd_hooks)
    demo = commands.add_parser("demo", help="listen to a generated three-event clip, answer, and plot attention to audio")
    demo.add_argument("--model", default="lalm-toy")
    demo.add_argument("--prompt", default="What sounds are in the audio?")
    demo.add_argument("--seconds", type=float, default=6.0)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="lalm-lens-demo.png", help="where to write the plot (PNG)")
    demo.set_defaults(run=cmd_demo)
    for name, module, help_text in STUDIES:
        study = commands.add_parser(name, help=help_text, add_help=False)
        study.set_defaults(run=lambda args, module=module: run_study(module, args.study_argv))
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in {name for name, _, _ in STUDIES}:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.study_argv = rest
    try:
        return args.run(args)
    except USER_ERRORS as error:
        if args.debug:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"{parser.prog}: error: {message}\n(run `{parser.prog} --debug ...` for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
