"""Time-binned activation patching on lalm-toy (or ``--model``): does the effect sit inside the queried event's interval?

For each held-out three-event clip, ask "Is there a {label} sound?" about one of its events (cycling through
the three), corrupt the clip by replacing that event with silence (or another class), and patch
clean -> corrupted over (layer x 0.5 s bin), metric logit(yes) - logit(no). Per clip and layer: the share of
the positive normalised effect inside the event, the share of bins inside (the chance baseline), the largest
normalised effect over the bins, and the attribution-vs-exact correlation over the (layer x group) grid.

    python -m lalm_lens.experiments.patching_localization run --start 0 --n 25 --out part0.jsonl
    python -m lalm_lens.experiments.patching_localization summary part*.jsonl

(shards of 10-25 clips take a few minutes each on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def run(args):
    import lalm_lens as ll
    from lalm_lens import patching
    from lalm_lens.data import make_scene
    from lalm_lens.data.events import synth_event
    from lalm_lens.zoo.toy.evaluation import heldout_seed
    from lalm_lens.zoo.toy.recipe import PRESENCE_Q

    model = ll.HookedLALM.from_pretrained(args.model)
    metric = patching.logit_diff(model, "yes", "no")
    start = time.time()
    with open(args.out, "w") as out:
        for i in range(args.start, args.start + args.n):
            scene = make_scene(heldout_seed(args.offset + i), n_events=3, duration_s=6.0, layout=args.layout)
            event = scene.events[i % 3]
            a, b = int(round(event.start_s * 16000)), int(round(event.stop_s * 16000))
            corrupted = scene.wave.copy()
            if args.corruption == "silence":
                corrupted[a:b] = 0
            else:
                corrupted[a:b] = synth_event(args.corruption, b - a, np.random.default_rng(i), 16000)
            prompt = PRESENCE_Q.format(label=event.label)
            clean = model.prepare(scene.wave, prompt, sampling_rate=16000)
            bad = model.prepare(corrupted, prompt, sampling_rate=16000)
            record = {"clip": i, "event": [event.label, event.start_s, event.stop_s]}
            for site in args.sites:
                groups = patching.position_groups(model, clean, bin_s=args.bin_s, text=args.text)
                if site.startswith("encoder") or site == "audio_embeds":
                    groups = [g for g in groups if g.is_audio]
                exact = patching.activation_patching(model, clean, bad, metric, site=site, groups=groups, progress=False)
                record["clean"], record["corrupted"] = exact.source_value, exact.destination_value
                if not exact.source_value > 0 > exact.destination_value:
                    record["flipped"] = False  # the toy does not say yes on the clean clip and no on the corrupted one
                    break
                record["flipped"] = True
                audio = [j for j, g in enumerate(groups) if g.is_audio]
                inside = [event.start_s <= groups[j].centre_s < event.stop_s for j in audio]
                norm = exact.normalized.reshape(-1, len(groups))
                entry = {
                    "rows": exact.row_labels(),
                    "share_inside": exact.share_inside(event.start_s, event.stop_s).tolist(),
                    "bins_inside": float(np.mean(inside)),
                    "max_audio_effect": norm[:, audio].max(-1).tolist(),
                }
                if args.attribution:
                    attr = patching.attribution_patching(model, clean, bad, metric, site=site, groups=groups)
                    entry["attribution_corr"] = float(np.corrcoef(exact.normalized.ravel(), attr.normalized.ravel())[0, 1])
                record[site] = entry
            out.write(json.dumps(record) + "\n")
            out.flush()
            print(f"clip {i}  {time.time() - start:.0f} s", flush=True)


def summary(paths):
    from lalm_lens.analysis.statistics import clip_bootstrap

    records = [json.loads(line) for p in paths for line in open(p)]
    kept = [r for r in records if r["flipped"]]
    print(f"clips: {len(records)}, answer flipped by the corruption (kept): {len(kept)}")
    if not kept:
        return
    sites = [k for k in kept[0] if isinstance(kept[0][k], dict)]
    fmt = lambda m: f"{m[0]:.2f} [{m[1]:.2f}, {m[2]:.2f}]"
    for site in sites:
        rows = [r[site] for r in kept]
        print(f"\n{site}: chance share (bins inside the event) {fmt(clip_bootstrap([r['bins_inside'] for r in rows]))}")
        share = np.array([r["share_inside"] for r in rows], dtype=float)
        peak = np.array([r["max_audio_effect"] for r in rows])
        labels = rows[0].get("rows", [f"layer {i}" for i in range(share.shape[1])])  # records before "rows" name layers
        for layer, label in enumerate(labels):
            ok = np.isfinite(share[:, layer])
            if not ok.any():
                print(f"  {label}: no positive audio-bin effect in any clip")
                continue
            print(f"  {label}: share inside {fmt(clip_bootstrap(share[ok, layer]))} (n={ok.sum()}), "
                  f"largest normalised audio-bin effect {fmt(clip_bootstrap(peak[:, layer]))}")
        if "attribution_corr" in rows[0]:
            c = np.array([r["attribution_corr"] for r in rows])
            print(f"  attribution vs exact, Pearson r over the grid, mean over clips {fmt(clip_bootstrap(c[np.isfinite(c)]))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lalm_lens.experiments.patching_localization")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="patch clean -> corrupted per clip and write one JSON line per clip")
    r.add_argument("--model", default="lalm-toy", help="folder, shipped name (lalm-toy) or tiny-* name")
    r.add_argument("--start", type=int, default=0)
    r.add_argument("--n", type=int, default=20)
    r.add_argument("--offset", type=int, default=400_000,
                   help="held-out seed offset (the toy's --evaluate draws scenes from 400000 too, in equal layout "
                        "with pitch and level: the same classes, other clips)")
    r.add_argument("--layout", default="random")
    r.add_argument("--bin-s", type=float, default=0.5)
    r.add_argument("--text", default="none", help="text groups besides the audio bins: none, after_audio, all")
    r.add_argument("--sites", nargs="+", default=["resid_pre", "encoder_resid_post"])
    r.add_argument("--attribution", action="store_true")
    r.add_argument("--corruption", default="silence", help="'silence' or an event class to put in the event's place")
    r.add_argument("--out", required=True)
    s = sub.add_parser("summary", help="print the shares and correlations with clip-bootstrap intervals")
    s.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.command == "run":
        run(args)
    else:
        summary(args.paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
