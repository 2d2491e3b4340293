"""Time and peak memory of the three-event localization study, method by method.

One :class:`~lalm_lens.experiments.localization.Study` is set up (three
splits of clips, the unsteered generic-prompt profiles of the development and
test queries), then every asked method runs in the order :func:`run` uses;
the wall time of each step and the process's peak resident memory after it
(``resource.getrusage`` maxrss: torch's tensors are not seen by tracemalloc)
are recorded. Sizes: ``--n`` test clips (3 queries each), ``--n-dev``
development clips and ``--n-vectors`` vector clips (the last two are fixed
costs: every steering setting is tried on the development split).

    python benchmarks/localization.py --model lalm-toy --n 20 --threads 2 --json out/localization_bench.json
    python benchmarks/localization.py --n 4 --n-dev 4 --n-vectors 10 --scales 4 --methods steering,random,null

``--sweep R`` adds, in the same process, one clip under ``--prompts`` prompts
of different lengths (one padded batch) and R steering settings (a seeded
random direction at the middle layer, R scales), run two ways: naive
(``prepare`` + a full forward per setting, the audio re-encoded every time)
and encode-once (``encode_audio`` once, ``with_audio_embeds``, the decoder
per setting); it reports both times, their ratio and the largest logit
difference. The whole study at the issue's size (100 test clips, 300
queries, every method, with the sweep):

    python benchmarks/localization.py --model lalm-toy --n 100 --threads 2 --sweep 25 --json out/localization_bench.json

``--extrapolate N`` adds an estimate for N test clips, labelled as such:
the setup and every method's cost are split into a part that does not
depend on the test clips (measured by a second run at ``--n 1``, the same
seed and settings) and a part linear in them.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from lalm_lens.cli import load
from lalm_lens.data import EVENT_CLASSES, make_scene
from lalm_lens.experiments.localization import GENERIC_Q, METHODS, NAMING_Q, Study
from lalm_lens.hooks.steering import SteeringHook


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steps(study: Study) -> dict:
    return {
        "steering": lambda: study.steering("instructions"), "audio": lambda: study.steering("audio"),
        "prompting": study.prompting, "direct": study.direct, "generation": study.generation,
        "random": lambda: study.baseline(inside=False), "null": lambda: study.baseline(inside=True),
    }


def measure(model, methods: list[str], **options) -> dict:
    """Seconds and peak RSS (MiB) after the setup and after each method, for one study."""
    start = time.perf_counter()
    study = Study(model, progress=False, **options)
    rows = {"setup": {"seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib()}}
    run = steps(study)
    for method in METHODS:
        if method in methods:
            start = time.perf_counter()
            run[method]()
            rows[method] = {"seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib()}
    result = study.result()
    return {"queries": result.n, "steps": rows, "total_s": sum(r["seconds"] for r in rows.values()),
            "overlap": result.overlap}


def sweep(model, n_settings: int, n_prompts: int, seed: int = 0) -> dict:
    """One clip under ``n_prompts`` prompts and ``n_settings`` steering scales: naive against encode-once."""
    scene = make_scene(seed)
    prompts = ([GENERIC_Q] + [NAMING_Q.format(label=c) + " Answer yes or no." * (k % 3) for k, c in enumerate(EVENT_CLASSES)])
    prompts = (prompts * (1 + n_prompts // len(prompts)))[:n_prompts]
    clips = [scene.wave] * len(prompts)
    layer = model.cfg.n_layers // 2
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed))
    scales = [0.25 * (k + 1) for k in range(n_settings)]
    hooks = lambda scale: SteeringHook({layer: direction}, scale=scale).fwd_hooks()
    with torch.no_grad():
        start = time.perf_counter()
        naive = []
        for scale in scales:
            batch = model.prepare(clips, prompts, sampling_rate=scene.sampling_rate)
            naive.append(model.run_with_hooks(batch, fwd_hooks=hooks(scale))[:, -1])
        naive_s = time.perf_counter() - start
        start = time.perf_counter()
        embeds = model.encode_audio(model.prepare(scene.wave, GENERIC_Q, sampling_rate=scene.sampling_rate))
        reused = model.prepare(clips, prompts, sampling_rate=scene.sampling_rate).with_audio_embeds(embeds)
        once = [model.run_with_hooks(reused, fwd_hooks=hooks(scale))[:, -1] for scale in scales]
        once_s = time.perf_counter() - start
    diff = max(float((a - b).abs().max()) for a, b in zip(naive, once))
    return {"prompts": len(prompts), "settings": n_settings, "copies": len(prompts) * n_settings,
            "naive_s": naive_s, "encode_once_s": once_s, "ratio": naive_s / once_s, "max_abs_logit_diff": diff}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lalm-toy", help="folder, shipped name or tiny-* name")
    parser.add_argument("--n", type=int, default=20, help="test clips (3 queries each)")
    parser.add_argument("--n-dev", type=int, default=20)
    parser.add_argument("--n-vectors", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", default="equal", choices=["equal", "random"])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--scales", default="0.25,1,4,16")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--extrapolate", type=int, default=None, metavar="N",
                        help="also run at --n 1 and estimate the cost of N test clips (fixed + linear)")
    parser.add_argument("--sweep", type=int, default=None, metavar="R",
                        help="also time one clip under --prompts prompts and R steering settings, naive against encode-once")
    parser.add_argument("--prompts", type=int, default=9, help="prompts of different lengths in the --sweep batch")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if args.n < 1 or (args.extrapolate is not None and args.n < 2):
        parser.error("--n must be at least 1 (at least 2 with --extrapolate, which also runs --n 1)")
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = load(args.model)
    options = dict(seed=args.seed, layout=args.layout, n_dev=args.n_dev, n_vectors=args.n_vectors,
                   scales=[float(s) for s in args.scales.split(",")], batch_size=args.batch_size)
    result = {"model": args.model, "threads": torch.get_num_threads(), "methods": methods, "config": {"n": args.n, **options},
              "load_s": time.perf_counter() - start, "rss_after_load_mib": peak_rss_mib()}
    result["measured"] = measure(model, methods, n=args.n, **options)
    print(f"{args.model}, {args.n} test clips ({result['measured']['queries']} queries), n_dev {args.n_dev}, "
          f"n_vectors {args.n_vectors}, {result['threads']} threads; model loaded in {result['load_s']:.1f} s")
    print(f"{'step':<12} {'seconds':>9} {'peak RSS MiB':>13}")
    for name, row in result["measured"]["steps"].items():
        print(f"{name:<12} {row['seconds']:9.1f} {row['peak_rss_mib']:13.0f}")
    print(f"{'total':<12} {result['measured']['total_s']:9.1f}")
    if args.extrapolate is not None:
        small = measure(model, methods, n=1, **options)
        estimate = {}
        for name, row in result["measured"]["steps"].items():
            per_clip = max(0.0, (row["seconds"] - small["steps"][name]["seconds"]) / (args.n - 1))
            fixed = max(0.0, small["steps"][name]["seconds"] - per_clip)
            estimate[name] = {"fixed_s": fixed, "per_test_clip_s": per_clip, "seconds": fixed + per_clip * args.extrapolate}
        total = sum(e["seconds"] for e in estimate.values())
        result["extrapolated"] = {"n": args.extrapolate, "queries": 3 * args.extrapolate, "steps": estimate, "total_s": total,
                                  "note": f"ESTIMATE, not measured: linear fit through --n 1 and --n {args.n}"}
        print(f"ESTIMATE (not measured; linear in test clips through n=1 and n={args.n}) for {args.extrapolate} "
              f"test clips ({3 * args.extrapolate} queries): {total:.0f} s")
        for name, e in estimate.items():
            print(f"  {name:<12} fixed {e['fixed_s']:7.1f} s + {e['per_test_clip_s']:6.2f} s/clip -> {e['seconds']:7.1f} s")
    if args.sweep:
        result["sweep"] = sweep(model, args.sweep, args.prompts, seed=args.seed)
        sw = result["sweep"]
        print(f"sweep: 1 clip x {sw['prompts']} prompts x {sw['settings']} settings ({sw['copies']} copies): naive "
              f"{sw['naive_s']:.1f} s, encode-once {sw['encode_once_s']:.1f} s, ratio {sw['ratio']:.1f}x "
              f"(largest logit difference {sw['max_abs_logit_diff']:.1e})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
