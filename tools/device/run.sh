#!/usr/bin/env bash
# Everything one call of the GPU machine does, after tools/device/prepare.sh has filled .devdata/:
#   device run: command="bash tools/device/run.sh", carry=[".devdata"], timeout_s=570
# Planned for about 9 minutes on an H100 (most of it torch.compile and the 2-minute training run). Writes, and
# rewrites after every phase so that a run cut short still returns what it did: $OUT/summary.txt (versions,
# every benchmark's JSON line, the training result, test results) and $OUT/results.tar.gz (logs, validation
# grids, the trained model and the content photos it stylized).
#
#   PHASES         any of: setup bench train tests video (default: the first four, in that order; video needs
#                  .devdata-video from `VIDEO=1 tools/device/prepare.sh`, carried by a call of its own)
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
PHASES=${PHASES:-setup bench train tests}
TRAIN_MINUTES=${TRAIN_MINUTES:-2}
TRAIN_BATCH=${TRAIN_BATCH:-8}
TRAIN_COMPILE=${TRAIN_COMPILE:-default}
QUICK=${QUICK:-0}
mkdir -p "$OUT" "$WORK/logs"
SUMMARY=$OUT/summary.txt
export PYTHONUNBUFFERED=1 HF_HOME=$WORK/hf FASTSTYLE_CACHE=$WORK/cache
export FASTSTYLE_SHARED=$ROOT/.devdata/shared FASTSTYLE_TEST_DEVICE=$DEVICE FASTSTYLE_TEST_COMPILE=${TEST_COMPILE:-0}
DATA=$FASTSTYLE_SHARED/data

say() { echo "== $(date +%T) $*" | tee -a "$SUMMARY"; }
has() { [[ " $PHASES " == *" $1 "* ]]; }
fs() { python3 -m faststyle.cli "$@"; }
bench() {
  say "bench $*"
  timeout -k 20 300 python3 -m faststyle.cli bench "$@" --device "$DEVICE" 2>>"$WORK/logs/bench.err" |
    tee -a "$OUT/bench.jsonl" "$SUMMARY"
}
pick() { if [[ $QUICK == 1 ]]; then echo "$2"; else echo "$1"; fi; }
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
if ! photos_load && [[ -d .devdata/whl-old ]]; then
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
    fs weights get "$network" --from file --path ".devdata/weights/$network.safetensors" >>"$WORK/logs/setup.log" 2>&1 ||
      say "weights $network: failed (see logs/setup.log)"
  done
fi

if has bench; then
  size=$(pick 256 64)
  for backbone in vgg16 googlenet alexnet; do
    bench lossnet --backbone "$backbone" --size "$size" --batch "$(pick 32 2)" --repeats 5
  done
  bench train --size "$size" --batch 4 --steps "$(pick 20 2)" --repeats 3
  batch=$(pick 32 2)
  bench train --size "$size" --batch "$batch" --steps "$(pick 20 2)" --repeats 3 --no-baseline
  bench train --size "$size" --batch "$batch" --steps "$(pick 20 2)" --repeats 3 --no-baseline --compile
  for backbone in googlenet alexnet; do
    bench train --backbone "$backbone" --size "$size" --batch "$batch" --steps "$(pick 20 2)" --repeats 3 --no-baseline
  done
  content=$DATA/content/tubingen.jpg style=$DATA/styles/vangogh_starry_night_crop.jpg
  gatys=(--backbone vgg16 --size "$(pick 512 64)" --iters "$(pick 500 5)" --repeats 2 --content "$content" --style "$style")
  bench gatys "${gatys[@]}" --precision fp32 --baseline
  bench gatys "${gatys[@]}" --precision bf16
  bench gatys "${gatys[@]}" --precision bf16 --compile reduce-overhead
  for size in $(pick "512 1080p" 64); do
    bench infer --model random --size "$size" --backend all --repeats "$(pick 20 2)" --warmup 3
  done
  pack
fi

if has video; then
  if ! python3 -c "import av" 2>/dev/null; then
    install "$WORK/site-video" .devdata-video && export PYTHONPATH=$PYTHONPATH:$WORK/site-video
  fi
  for size in $(pick "720p 1080p" 64); do
    for batch in 1 8; do
      bench video --size "$size" --frames "$(pick 120 4)" --batch "$batch" --repeats 3
    done
  done
fi

if has train; then
  say "training run: Starry Night, VGG16, ${TRAIN_MINUTES} min"
  rm -rf "$WORK/starry_run" "$WORK/starry.safetensors" "$WORK/styled"  # a rerun on a warm machine trains afresh
  fs train --style "$DATA/styles/vangogh_starry_night_crop.jpg" --data "$DATA/train" --backbone vgg16 \
    --size "$(pick 256 64)" --batch "$(pick "$TRAIN_BATCH" 2)" --steps 40000 --max-minutes "$TRAIN_MINUTES" \
    --gpu-cache $([[ $DEVICE == cuda ]] && echo --compile "$TRAIN_COMPILE") --accelerator "$([[ $DEVICE == cuda ]] && echo gpu || echo cpu)" \
    --val-every "$(pick 2000 20)" --checkpoint-every "$(pick 2000 20)" --no-progress \
    --out "$WORK/starry.safetensors" >"$WORK/logs/train.log" 2>&1
  grep -E "^wrote|error" "$WORK/logs/train.log" | tee -a "$SUMMARY"
  if [[ -f $WORK/starry.safetensors ]]; then
    fs stylize --model "$WORK/starry.safetensors" "$DATA/content" --size 512 --out "$WORK/styled" --device "$DEVICE" \
      >>"$WORK/logs/train.log" 2>&1
    fs bench infer --model "$WORK/starry.safetensors" --size "$(pick 1080p 64)" --backend all --device "$DEVICE" \
      2>>"$WORK/logs/bench.err" | tee -a "$OUT/bench.jsonl" "$SUMMARY"
  fi
  pack
fi

if has tests; then
  say "tests on $DEVICE"
  timeout -k 20 300 python3 -m pytest -q -p no:cacheprovider tests/test_accelerator.py tests/test_transformer.py \
    tests/test_losses.py >"$WORK/logs/pytest.log" 2>&1
  tail -n 3 "$WORK/logs/pytest.log" | tee -a "$SUMMARY"
  pack
fi

say "done"
pack
ls -la "$OUT" | tee -a "$SUMMARY"
