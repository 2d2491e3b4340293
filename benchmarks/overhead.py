"""Cost of hooking, as ratios against the plain HF forward run side by side in one process.

Every variant runs once per round, in a shuffled order, for ``--rounds``
rounds; the table shows each variant's median time, its ratio to the
median of the plain HF forward (same weights, same inputs, default sdpa
attention), and the memory the kernel handed the process fresh during a run
(minor page faults: what a run keeps, such as a cache, and the allocator had
given back, is paid for again on first touch). TransformerLens's
``TransformerBridge`` runs the same work where it boots offline.

    python benchmarks/overhead.py --rounds 15 --json out/overhead.json
    python benchmarks/overhead.py --real-widths --layers 2 --rounds 5   # one 7B layer's widths
    python benchmarks/overhead.py --family qwen3_omni_moe_thinker --experts 128 --layers 48 --width 64 \
        --only "one residual hook" "no hooks" --no-bridge   # as many hook points as the released thinker

The default model is 256 wide with the tiny builders' heads (decoder heads of
16 dims): patterns weigh far more there than in a released model, whose heads
are 128 (decoder) and 64 (encoder) wide, whose encoder layers are 5 times and
decoder layers 14 to 16 times wider, and whose decoder MLPs are 14 to 25
times wider.
``--real-widths`` builds layers as wide as the released checkpoints' (random
weights, few layers, a small vocabulary), which is what a user's forward
costs per layer.
"""

from __future__ import annotations

import argparse
import json
import mmap
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import lalm_lens as ll
from lalm_lens.hooks import AudioAttention
from lalm_lens.zoo.tiny import LayerShape, save_tiny_audio_flamingo3, save_tiny_qwen2_5_omni_thinker, save_tiny_qwen2_audio
from lalm_lens.zoo.tiny import save_tiny_granite_speech
from lalm_lens.zoo.tiny import save_tiny_qwen3_omni_thinker
from lalm_lens.zoo.tiny import save_tiny_gemma3n

PAGE = mmap.PAGESIZE

BUILDERS = {
    "qwen2_audio": save_tiny_qwen2_audio,
    "audioflamingo3": save_tiny_audio_flamingo3,
    "qwen2_5_omni_thinker": save_tiny_qwen2_5_omni_thinker,
    "granite_speech": save_tiny_granite_speech,
    "qwen3_omni_moe_thinker": save_tiny_qwen3_omni_thinker,
    "gemma3n": save_tiny_gemma3n,
}


# (d_model, d_audio, LayerShape) of the released checkpoints' layers
REAL_WIDTHS = {
    "qwen2_audio": (4096, 1280, LayerShape(heads=32, kv_heads=32, d_mlp=11008, audio_heads=20, d_audio_mlp=5120)),  # Qwen2-Audio-7B
    "audioflamingo3": (3584, 1280, LayerShape(heads=28, kv_heads=4, d_mlp=18944, audio_heads=20, d_audio_mlp=5120)),  # AF3 (Qwen2.5-7B)
    "qwen2_5_omni_thinker": (3584, 1280, LayerShape(heads=28, kv_heads=4, d_mlp=18944, audio_heads=20, d_audio_mlp=5120)),  # Omni-7B
}


def build(family: str, width: int, layers: int, real_widths: bool = False, experts: int | None = None) -> str:
    """A random checkpoint: ``width`` wide with the tiny builders' heads, or the released model's layer widths;
    ``experts`` per MoE block for the Qwen3-Omni thinker (its hook points grow with them: 3 per expert and layer)."""
    folder = tempfile.mkdtemp(prefix=f"bench-{family}-")
    if experts is not None:
        if family != "qwen3_omni_moe_thinker" or real_widths:
            raise ValueError(f"--experts applies to qwen3_omni_moe_thinker without --real-widths, not {family}")
        return str(BUILDERS[family](folder, d_model=width, layers=layers, d_audio=width, audio_layers=layers, n_experts=experts))
    if real_widths:
        if family not in REAL_WIDTHS:
            raise ValueError(f"--real-widths knows {sorted(REAL_WIDTHS)}, not {family}")
        d_model, d_audio, shape = REAL_WIDTHS[family]
        return str(BUILDERS[family](folder, d_model=d_model, layers=layers, d_audio=d_audio, audio_layers=layers, shape=shape))
    return str(BUILDERS[family](folder, d_model=width, layers=layers, d_audio=width, audio_layers=layers))


def variants(folder: str, seconds: float, bridge: bool, only: list[str] | None = None) -> dict[str, Callable[[], object]]:
    """The runs to time, by name; with ``only``, the HF forward and those whose names contain one of its strings."""
    model = ll.HookedLALM.from_pretrained(folder)
    print(f"{len(model.hook_dict)} hook points")
    hf = type(model.hf_model).from_pretrained(folder).eval()
    wave = (np.random.default_rng(0).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)
    batch = model.prepare(wave, "What sounds are in the audio?", sampling_rate=16000)
    mid = model.cfg.n_layers // 2
    decoder_patterns = lambda name: name.startswith("blocks.") and name.endswith("hook_pattern")
    not_encoder_patterns = lambda name: not (name.startswith("audio.") and name.endswith("hook_pattern"))
    reader = AudioAttention(model.cfg.n_layers)
    runs = {
        "HF forward (sdpa)": lambda: hf(**batch.inputs, use_cache=False),
        "HookedLALM, no hooks": lambda: model(batch),
        "one residual hook": lambda: model.run_with_hooks(batch, fwd_hooks=[(f"blocks.{mid}.hook_resid_post", lambda t, hook: t)]),
        "run_with_cache, everything": lambda: model.run_with_cache(batch),
        "run_with_cache, all but encoder patterns": lambda: model.run_with_cache(batch, names_filter=not_encoder_patterns),
        "run_with_cache, decoder patterns": lambda: model.run_with_cache(batch, names_filter=decoder_patterns),
        "last-query text→audio attention": lambda: model.run_with_hooks(batch, fwd_hooks=reader.fwd_hooks()),
    }
    if bridge:
        runs.update(bridge_variants(folder, batch, decoder_patterns))
    if only:
        runs = {name: run for name, run in runs.items() if name == "HF forward (sdpa)" or any(s in name for s in only)}
    return runs


def bridge_variants(folder: str, batch, decoder_patterns) -> dict[str, Callable[[], object]]:
    try:
        from transformer_lens.model_bridge import TransformerBridge

        tl = TransformerBridge.boot_transformers(folder, device="cpu", dtype=torch.float32)
    except Exception as error:  # the bridge is optional: report why it did not run
        print(f"TransformerBridge did not boot: {str(error)[:200]}")
        return {}
    inputs = dict(batch.inputs)
    ids = inputs.pop("input_ids")
    kept: dict[str, torch.Tensor] = {}
    last_row = lambda tensor, hook: kept.__setitem__(hook.name, tensor[:, :, -1:].mean(1).clone())
    return {
        "bridge: no hooks": lambda: tl(ids, **inputs),
        "bridge: run_with_cache, everything": lambda: tl.run_with_cache(ids, **inputs),
        "bridge: run_with_cache, decoder patterns": lambda: tl.run_with_cache(ids, names_filter=decoder_patterns, **inputs),
        "bridge: last-query attention hooks": lambda: tl.run_with_hooks(ids, fwd_hooks=[(decoder_patterns, last_row)], **inputs),
    }


def fresh_pages() -> int:
    """Minor page faults of this process so far: memory the kernel handed over fresh (0 where unknown)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(runs: dict[str, Callable[[], object]], rounds: int, warmup: int = 2) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per variant, and median MiB of fresh memory it touched per run."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    faults: dict[str, list[int]] = {name: [] for name in runs}
    order = list(runs)
    with torch.inference_mode():
        for round_ in range(warmup + rounds):
            random.shuffle(order)
            for name in order:
                pages, start = fresh_pages(), time.perf_counter()
                runs[name]()
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - start)
                    faults[name].append(fresh_pages() - pages)
    mib = {name: statistics.median(f) * PAGE / 2**20 for name, f in faults.items()}
    return {name: statistics.median(t) for name, t in times.items()}, mib


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="qwen2_audio", choices=list(BUILDERS))
    parser.add_argument("--width", type=int, default=256, help="encoder and decoder width")
    parser.add_argument("--layers", type=int, default=4, help="encoder and decoder layers")
    parser.add_argument("--real-widths", action="store_true",
                        help="layers as wide as the released 7B checkpoint's (heads, key/value heads, MLP); ignores --width")
    parser.add_argument("--experts", type=int, default=None,
                        help="experts per MoE block (qwen3_omni_moe_thinker; the released thinker has 128)")
    parser.add_argument("--only", nargs="+", default=None, help="time only the variants whose names contain one of these")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-bridge", action="store_true", help="skip TransformerLens's TransformerBridge")
    parser.add_argument("--json", default=None, help="write the results to this path")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(0)
    folder = build(args.family, args.width, args.layers, args.real_widths, args.experts)
    try:
        runs = variants(folder, args.seconds, not args.no_bridge, args.only)
    finally:
        shutil.rmtree(folder)
    medians, fresh = measure(runs, args.rounds)
    base = medians["HF forward (sdpa)"]
    widths = "the released model's widths" if args.real_widths else f"width {args.width}"
    experts = "" if args.experts is None else f", {args.experts} experts per block"
    print(f"{args.family}: {widths}{experts}, {args.layers}+{args.layers} layers, {args.seconds:g} s audio, "
          f"{args.rounds} rounds, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| variant | median ms | × HF | fresh MiB/run |\n|---|---:|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / base:.3f} | {fresh[name]:.1f} |")
    result = {"args": vars(args), "median_s": medians, "ratio": {k: v / base for k, v in medians.items()}, "fresh_mib": fresh}
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
