#!/usr/bin/env bash
# Re-measure every toy figure of the README on a model folder (a candidate before it ships, or the shipped toy).
#
#     bash docs/toy_recipe/remeasure.sh MODEL OUT [STEP...]
#
# MODEL: a saved model folder (or the package's lalm_lens/zoo/lalm-toy); OUT: where the JSON files and logs go;
# evaluate writes eval_results.json and MODEL_CARD.md into MODEL itself. STEP: any of
# evaluate demo localize neurons gain transfer patching (the default) and bench: the README's commands for its
# toy figures, with the pitch question's localization run as localize_pitch (in the default steps too).
# notebooks runs every notebook and saves it with its outputs in OUT (the shipped toy only; not a default step).
# Measured on a slow 2-core machine, two of these running side by side on one thread each (run L2): evaluate 15.7 min
# (--n 200, the shipped card's n), localize 9.5, localize_pitch 5.9, transfer 3.2, gain 11.6, neurons 25.4 (8 runs),
# patching 34.1, bench 12.1.
set -euo pipefail
MODEL=${1:?model folder or lalm-toy}
OUT=${2:?output folder}
shift 2
STEPS=${*:-evaluate demo localize localize_pitch neurons gain transfer patching}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
NEURONS="python -m lalm_lens.experiments.emotion_neurons --model $MODEL --n-identify 16 --n-evaluate 32"

for step in $STEPS; do
  echo "== $step $(date +%H:%M:%S)"
  case $step in
    evaluate)  # held-out accuracy, diagnostics and the model card (a saved run's folder: --write-card writes there)
      python -m lalm_lens.zoo.train_toy --evaluate --out "$MODEL" --threads 1 --n 200 --write-card > "$OUT/evaluate.log" 2>&1 ;;
    demo)
      python -c "
import lalm_lens as ll
from lalm_lens.data import make_scene
model = ll.HookedLALM.from_pretrained('$MODEL')
scene = make_scene(seed=0, n_events=3, duration_s=6.0, layout='equal')
batch = model.prepare(audio=[scene.wave, scene.wave[: 3 * 16000]], prompt='What sounds are in the audio?', sampling_rate=16000)
print(model.generate(batch, max_new_tokens=12))" > "$OUT/demo.log" 2>&1 ;;
    localize)  # the steering table and its knockouts
      lalm-lens localize --model "$MODEL" --layout equal --n 100 --seed 0 \
        --methods steering,prompting,audio,direct,generation,random,null --json "$OUT/localize.json" \
        --plot "$OUT/localize.png" > "$OUT/localize.log" 2>&1 ;;
    localize_pitch)  # the same study with the pitch question as the event-naming prompt
      lalm-lens localize --model "$MODEL" --layout equal --n 100 --seed 0 --methods steering,prompting,random,null \
        --naming "Is the {label} sound high or low?" --answers high,low --json "$OUT/localize_pitch.json" \
        --plot "$OUT/localize_pitch.png" > "$OUT/localize_pitch.log" 2>&1 ;;
    bench)  # the study's cost, method by method (not run by default: it repeats localize's work)
      MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/localization.py --model "$MODEL" --n 100 --threads 1 --sweep 25 \
        --json "$OUT/localization_bench.json" > "$OUT/bench.log" 2>&1 ;;
    neurons)  # deactivation, encoder MLP and decoder gate, four selectors
      for selector in magnitude entropy frequency contrast; do
        $NEURONS --site audio.mlp.hook_post --selector $selector --budget 0.1 --n-random 3 \
          --json "$OUT/neurons_encoder_$selector.json" >> "$OUT/neurons.log" 2>&1
        $NEURONS --site mlp.hook_gate --selector $selector --budget 0.05 --n-random 3 \
          --json "$OUT/neurons_gate_$selector.json" >> "$OUT/neurons.log" 2>&1
      done ;;
    gain)
      $NEURONS --site mlp.hook_gate --selector magnitude --budget 0.05 --intervention gain --sweep 2 4 8 16 --n-random 3 \
        --json "$OUT/gain.json" > "$OUT/gain.log" 2>&1 ;;
    transfer)  # neurons chosen on reverberant, noisy speech, evaluated on clean speech
      $NEURONS --site mlp.hook_gate --selector magnitude --budget 0.05 --n-random 3 --identify-condition reverb_noisy \
        --json "$OUT/transfer.json" > "$OUT/transfer.log" 2>&1 ;;
    patching)
      P="python -m lalm_lens.experiments.patching_localization"
      parts=()
      for start in 0 10 20 30 40 50 60 70 80 90; do
        $P run --model "$MODEL" --start $start --n 10 --out "$OUT/patch_$start.jsonl" >> "$OUT/patching.log" 2>&1
        parts+=("$OUT/patch_$start.jsonl")
      done
      $P summary "${parts[@]}" > "$OUT/patching_summary.txt" 2>&1
      $P run --model "$MODEL" --n 20 --corruption rain --out "$OUT/patch_rain.jsonl" >> "$OUT/patching.log" 2>&1
      $P summary "$OUT/patch_rain.jsonl" > "$OUT/patching_rain_summary.txt" 2>&1
      $P run --model "$MODEL" --n 20 --sites resid_pre attn_out mlp_out z --text after_audio --bin-s 1.0 --attribution \
        --out "$OUT/patch_attribution.jsonl" >> "$OUT/patching.log" 2>&1
      $P summary "$OUT/patch_attribution.jsonl" > "$OUT/patching_attribution_summary.txt" 2>&1 ;;
    notebooks)  # every notebook run and saved with its outputs into OUT, to read what their text describes; they load
      # lalm-toy by name, so this step measures the shipped toy whatever MODEL is (not run by default)
      for nb in notebooks/*.ipynb; do
        python -c "
import sys, nbformat
from nbclient import NotebookClient
notebook = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(notebook, timeout=900, kernel_name='python3', resources={'metadata': {'path': sys.argv[2]}}).execute()
nbformat.write(notebook, sys.argv[2] + '/' + sys.argv[1].split('/')[-1])" "$nb" "$OUT" >> "$OUT/notebooks.log" 2>&1
      done ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
echo "== done $(date +%H:%M:%S)"
