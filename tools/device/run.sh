#!/usr/bin/env bash
# Everything the GPU machine does, after tools/device/prepare.sh has filled .devdata/, in two calls back to back
# (both carry .devdata: a machine left idle 30 s is given back, and a fresh one has only what is carried; a warm one
# also keeps the first call's cache and trained model in /tmp/faststyle-device):
#   device run: command="PHASES='setup trainbench train' BUDGET=450 TRAIN_MINUTES=3 bash tools/device/run.sh", carry=[".devdata"]
#   device run: command="PHASES='setup gatys infer profile tests extras' BUDGET=<what is left> bash tools/device/run.sh", carry=[".devdata"]
# (2026-11-28 on an H200: the first took 363 s with TRAIN_MINUTES=3, the machine's start about 30 s; the second
# found the machine given back, started another and used its BUDGET=350.)
# Phases run in the order given, most important first; every step's time limit is cut to what is left of BUDGET
# seconds, and a step with under 20 s left is skipped, so the results are always packed before the call's limit.
# Writes, and rewrites after every phase: $OUT/summary.txt (versions, every benchmark's JSON line, the training
# result, test results) and $OUT/results.tar.gz (logs, validation grids, the trained model, the photos it
# stylized).
#
#   PHASES         any of: setup trainbench train gatys infer profile tests extras video (default: all but video);
#                  profile: tools/device/gpu_profile.py, where Gatys' and inference's time goes (profile.txt);
#                  trainbench: batch 4 beside the plain loop, batch 32 eager, compiled, and with CUDA graphs;
#                  gatys: fp32 beside torch's L-BFGS, bf16, and fp32 with CUDA graphs (compile reduce-overhead);
#                  extras: the loss networks' forward times, the other backbones' training steps, inference with
#                  the trained model, a compiled training step at batch 64.
#                  video needs .devdata-video from `VIDEO=1 prepare.sh`.
#   BUDGET         seconds this call may take in all (default 560)
#   TRAIN_MINUTES  the training run's time limit (default 2); TRAIN_BATCH its batch (default 8);
#   TRAIN_COMPILE  its torch.compile mode on CUDA (default: default)
#   TEST_COMPILE=1 also run the compiled variants of tests/test_accelerator.py (several minutes of compiling)
#   DEVICE         cuda (default), or cpu to check this script where there is no GPU
#   QUICK=1        tiny sizes everywhere, to check this script quickly
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out/device}
WORK=${WORK:-/tmp/faststyle-device}
DEVICE=${DEVICE:-cuda}
PHASES=${PHASES:-setup trainbench train gatys infer profile tests extras}
BUDGET=${BUDGET:-560}
TRAIN_MINUTES=${TRAIN_MINUTES:-2}
TRAIN_BATCH=${TRAIN_BATCH:-8}
TRAIN_COMPILE=${TRAIN_COMPILE:-default}
QUICK=${QUICK:-0}
mkdir -p "$OUT" "$WORK/logs"
SUMMARY=$OUT/summary.txt
export PYTHONUNBUFFERED=1 HF_HOME=$WORK/hf FASTSTYLE_CACHE=$WORK/cache
export FASTSTYLE_SHARED=$ROOT/.devdata/shared FASTSTYLE_TEST_DEVICE=$DEVICE FASTSTYLE_TEST_COMPILE=${TEST_COMPILE:-0}
DATA=$FASTSTYLE_SHARED/data

say() { echo "== $(date +%T) +${SECONDS}s $*" | tee -a "$SUMMARY"; }
has() { [[ " $PHASES " == *" $1 "* ]]; }
pick() { if [[ $QUICK == 1 ]]; then echo "$2"; else echo "$1"; fi; }
# limited CAP CMD...: runs CMD for at most CAP seconds and at most what is left of BUDGET (15 s kept for packing).
limited() {
  local cap=$1 left=$((BUDGET - SECONDS - 15))
  shift
  if ((left < 20)); then
    say "skipped for time: $*" >&2
    return 124
  fi
  timeout -k 5 $((cap < left ? cap : left)) "$@"
}
fs() { limited "$1" python3 -m faststyle.cli "${@:2}"; }
bench() {
  say "bench $*"
  fs 240 bench "$@" --device "$DEVICE" 2>>"$WORK/logs/bench.err" | tee -a "$OUT/bench.jsonl" "$SUMMARY"
}
pack() {
  tar -czf "$OUT/results.tar.gz" -C "$WORK" logs \
    $(cd "$WORK" && ls -d styled starry.safetensors starry_run/val starry_run/metrics.csv 2>/dev/null)
}

# The machine lacks `datasets` (and dill, multiprocess); the repository's faststyle is imported from here.
install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$1" "$2"/*.whl; }
photos_load() {
  python3 - "$DATA/train/unsplash" "$WORK/hf-check" <<'EOF' >>"$WORK/logs/setup.log" 2>&1
import sys

from faststyle.data import PhotoDataModule

dm = PhotoDataModule(sys.argv[1], batch_size=2, size=64, num_workers=0, cache_dir=sys.argv[2])
print("datasets works:", dm.num_images, "photos,", tuple(next(iter(dm.train_dataloader())).shape))
EOF
}
export PYTHONPATH=$ROOT
if ! python3 -c "import datasets" 2>/dev/null; then
  install "$WORK/site" .devdata/whl && export PYTHONPATH=$ROOT:$WORK/site
fi
if has setup && ! photos_load && [[ -d .devdata/whl-old ]]; then
  echo "$(ls .devdata/whl | grep -o 'datasets-[0-9.]*[0-9]') failed here; trying .devdata/whl-old" | tee -a "$SUMMARY"
  install "$WORK/site-old" .devdata/whl-old && export PYTHONPATH=$ROOT:$WORK/site-old
  photos_load || echo "datasets does not work here (logs/setup.log): tests and training will fail" | tee -a "$SUMMARY"
fi

if has setup; then
  say setup
  python3 - <<'EOF' 2>&1 | tee -a "$SUMMARY"
import importlib.metadata as md
import platform

import torch

def version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "absent"


names = ["torch", "torchvision", "pytorch-lightning", "torchmetrics", "datasets", "pyarrow", "onnxruntime"]
print("python", platform.python_version(), *(f"{n} {version(n)}" for n in names))
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
EOF
  for network in vgg16 googlenet alexnet; do
    fs 120 weights get "$network" --from file --path ".devdata/weights/$network.safetensors" >>"$WORK/logs/setup.log" 2>&1 ||
      say "weights $network: failed (see logs/setup.log)"
  done
fi

size=$(pick 256 64)
batch=$(pick 32 2)
steps=$(pick 20 2)
content=$DATA/content/tubingen.jpg style=$DATA/styles/vangogh_starry_night_crop.jpg
gatys=(--backbone vgg16 --size "$(pick 512 64)" --iters "$(pick 500 5)" --repeats 2 --content "$content" --style "$style")

if has trainbench; then
  bench train --size "$size" --batch 4 --steps "$steps" --repeats 3
  bench train --size "$size" --batch "$batch" --steps "$steps" --repeats 3 --no-baseline
  bench train --size "$size" --batch "$batch" --steps "$steps" --repeats 3 --no-baseline --compile
  bench train --size "$size" --batch "$batch" --steps "$steps" --repeats 3 --no-baseline --compile reduce-overhead
fi

if has train; then
  # at most what is left of BUDGET less ~100 s for the start, compiling, the last grid and the model file
  minutes=$(python3 -c "print(round(max(0.5, min($TRAIN_MINUTES, ($BUDGET - $SECONDS - 115) / 60)), 2))")
  say "training run: Starry Night, VGG16, ${minutes} min"
  rm -rf "$WORK/starry_run" "$WORK/starry.safetensors" "$WORK/styled"  # a rerun on a warm machine trains afresh
  fs "$(python3 -c "print(round($minutes * 60 + 150))")" train --style "$style" --data "$DATA/train" --backbone vgg16 \
    --size "$size" --batch "$(pick "$TRAIN_BATCH" 2)" --steps 40000 --max-minutes "$minutes" \
    --gpu-cache $([[ $DEVICE == cuda ]] && echo --compile "$TRAIN_COMPILE") --accelerator "$([[ $DEVICE == cuda ]] && echo gpu || echo cpu)" \
    --val-every "$(pick 2000 20)" --checkpoint-every "$(pick 2000 20)" --no-progress \
    --out "$WORK/starry.safetensors" >"$WORK/logs/train.log" 2>&1
  grep -E "^wrote|error" "$WORK/logs/train.log" | tee -a "$SUMMARY"
  if [[ -f $WORK/starry.safetensors ]]; then
    fs 60 stylize --model "$WORK/starry.safetensors" "$DATA/content" --size 512 --out "$WORK/styled" --device "$DEVICE" \
      >>"$WORK/logs/train.log" 2>&1
  fi
  pack
fi

if has gatys; then
  bench gatys "${gatys[@]}" --precision fp32 --baseline
  bench gatys "${gatys[@]}" --precision bf16
  bench gatys "${gatys[@]}" --precision fp32 --compile reduce-overhead
  pack
fi

if has infer; then
  for infer_size in $(pick "512 1080p" 64); do
    bench infer --model random --size "$infer_size" --backend all --repeats "$(pick 20 2)" --warmup 3
  done
  pack
fi

if has profile; then
  say "profile: Gatys and inference under torch.profiler (tables in profile.txt)"
  limited 150 python3 tools/device/gpu_profile.py --device "$DEVICE" --out "$OUT" \
    $([[ $QUICK == 1 ]] && echo --size 64 --infer-size 64x64 --iters 2) 2>>"$WORK/logs/profile.err" | tee -a "$SUMMARY"
fi

if has tests; then
  say "tests on $DEVICE"
  limited 180 python3 -m pytest -q -p no:cacheprovider tests/test_accelerator.py tests/test_transformer.py \
    tests/test_losses.py >"$WORK/logs/pytest.log" 2>&1
  tail -n 3 "$WORK/logs/pytest.log" | tee -a "$SUMMARY"
  pack
fi

if has extras; then
  for backbone in vgg16 googlenet alexnet; do
    bench lossnet --backbone "$backbone" --size "$size" --batch "$batch" --repeats 5
  done
  for backbone in googlenet alexnet; do
    bench train --backbone "$backbone" --size "$size" --batch "$batch" --steps "$steps" --repeats 3 --no-baseline
  done
  if [[ -f $WORK/starry.safetensors ]]; then
    bench infer --model "$WORK/starry.safetensors" --size "$(pick 1080p 64)" --backend all
  fi
  bench train --size "$size" --batch "$((2 * batch))" --steps "$steps" --repeats 3 --no-baseline --compile
  bench train --size "$size" --batch "$batch" --steps "$steps" --repeats 3 --no-baseline --compile --stability-weight 300
  pack
fi

if has video; then
  if ! python3 -c "import av" 2>/dev/null; then
    install "$WORK/site-video" .devdata-video && export PYTHONPATH=$PYTHONPATH:$WORK/site-video
  fi
  for video_size in $(pick "720p 1080p" 64); do
    for video_batch in 1 8; do
      bench video --size "$video_size" --frames "$(pick 120 4)" --batch "$video_batch" --repeats 3
    done
  done
fi

say "done"
pack
ls -la "$OUT" | tee -a "$SUMMARY"
