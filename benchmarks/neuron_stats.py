"""Cost of accumulating NeuronStats during forwards, and its memory as the dataset grows.

Throughput: the same prepared batches run as plain forwards and as forwards
that accumulate :class:`~lalm_lens.neurons.NeuronStats` (every layer of one
site), interleaved in a shuffled order for ``--rounds`` rounds; the ratio is
the median plain time over the median accumulating time (1.0 = free; the
target is >= 0.9). Memory: statistics are accumulated over the dataset, then
over ``--growth`` times as many batches (the same clips again) in the same
process; the peak resident memory and the statistics' own size are recorded
after each, so a footprint that grew with the data would show.

    python benchmarks/neuron_stats.py --model lalm-toy --batches 4 --rounds 5 --threads 1 --json out/neuron_stats.json
    python benchmarks/neuron_stats.py --real-widths qwen2_5_omni_thinker --layers 2 --batches 1 --batch-size 2 --rounds 3

The toy is 128 wide, so there the statistics weigh far more against the
forward than in a released model; ``--real-widths FAMILY`` builds random
layers as wide as the released 7B checkpoint's (as ``overhead.py`` does).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import time
from pathlib import Path

import torch

from lalm_lens import HookedLALM
from lalm_lens.cli import load
from lalm_lens.data import EMOTIONS, SPEAKERS, derive_seed, make_utterance
from lalm_lens.experiments.emotion_neurons import QUESTION
from lalm_lens.neurons import NeuronStats


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_batches(model, n_batches: int, batch_size: int, seed: int = 0):
    batches = []
    for b in range(n_batches):
        utts = [make_utterance(EMOTIONS[k % 4], SPEAKERS[(b * batch_size + k) % len(SPEAKERS)], derive_seed(seed, b * batch_size + k))
                for k in range(batch_size)]
        batches.append((model.prepare([u.wave for u in utts], QUESTION, sampling_rate=16000), [u.emotion for u in utts]))
    return batches


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lalm-toy", help="folder, shipped name or tiny-* name")
    parser.add_argument("--real-widths", default=None, metavar="FAMILY",
                        help="instead of --model: random layers as wide as the released checkpoint of FAMILY")
    parser.add_argument("--layers", type=int, default=2, help="encoder and decoder layers with --real-widths")
    parser.add_argument("--sites", nargs="+", default=["mlp.hook_gate", "audio.mlp.hook_post"])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--growth", type=int, default=4, help="the larger dataset is this many times the batches")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = None
    if args.real_widths:
        import shutil

        from overhead import build  # the sibling benchmark's builder of released-width layers

        folder = build(args.real_widths, 0, args.layers, real_widths=True)
        model, args.model = HookedLALM.from_pretrained(folder), f"{args.real_widths} at released widths, {args.layers} layers"
        shutil.rmtree(folder)
    else:
        model = load(args.model)
    batches = make_batches(model, args.batches, args.batch_size)

    def plain():
        for batch, _ in batches:
            model(batch, return_type=None)

    def accumulate(site):
        stats = NeuronStats.for_model(model, EMOTIONS, site=site)
        for batch, labels in batches:
            stats.accumulate(model, batch, labels)

    variants = {"plain forward": plain, **{f"NeuronStats {site}": (lambda s=site: accumulate(s)) for site in args.sites}}
    times = {name: [] for name in variants}
    for fn in variants.values():  # warm-up
        fn()
    rng = random.Random(0)
    for _ in range(args.rounds):
        order = list(variants)
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "model": args.model, "batches": args.batches, "batch_size": args.batch_size, "rounds": args.rounds,
        "threads": torch.get_num_threads(), "median_s": median,
        "throughput_ratio": {name: median["plain forward"] / t for name, t in median.items()},
        "memory": {},
    }
    for site in args.sites:
        stats = NeuronStats.for_model(model, EMOTIONS, site=site)
        state_mib = sum(getattr(stats, n).element_size() * getattr(stats, n).numel()
                        for n in ("fires", "sum", "sumsq", "tokens", "examples")) / 2**20
        rows = []
        for size in (args.batches, args.batches * args.growth):
            stats = NeuronStats.for_model(model, EMOTIONS, site=site)
            for i in range(size):
                batch, labels = batches[i % len(batches)]
                stats.accumulate(model, batch, labels)
            rows.append({"clips": size * args.batch_size, "tokens": int(stats.tokens[:, 0].sum()),
                         "peak_rss_mib": round(peak_rss_mib(), 1), "stats_mib": round(state_mib, 3)})
        result["memory"][site] = rows
    print(f"{'variant':<34} {'median s':>9} {'throughput vs plain':>20}")
    for name in variants:
        print(f"{name:<34} {median[name]:9.3f} {result['throughput_ratio'][name]:19.2f}x")
    for site, rows in result["memory"].items():
        for row in rows:
            print(f"memory {site}: {row['clips']} clips, {row['tokens']} tokens -> peak RSS {row['peak_rss_mib']} MiB, "
                  f"statistics {row['stats_mib']} MiB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
