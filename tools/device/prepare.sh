#!/usr/bin/env bash
# Fills .devdata/ (git-ignored) with what one call of the GPU machine needs and cannot see from there:
# the wheels that machine lacks, the loss-network weights in float16, and a subset of ../shared.
# Then, with the device tool:  run(command="bash tools/device/run.sh", carry=[".devdata"], timeout_s=...)
#
#   PHOTOS=N   training photos to take (default 300, spread over every sub-folder of shared/data/train)
#   SHARED=DIR the shared folder (default ../shared)
#   VIDEO=1    also fill .devdata-video/ with PyAV's wheel (37 MB: too much beside .devdata in one call) for the
#              video phase, run by a second call on the warm machine:
#              run(command="PHASES=video bash tools/device/run.sh", carry=[".devdata-video"], timeout_s=...)
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${SHARED:-../shared}
PHOTOS=${PHOTOS:-300}
CACHE=${FASTSTYLE_CACHE:-.cache/test-weights}
DEST=.devdata
LIMIT_MB=62

rm -rf "$DEST"
mkdir -p "$DEST/whl" "$DEST/weights" "$DEST/shared/data"

# The GPU machine's python is 3.12 with pyarrow, pandas, fsspec, huggingface-hub and xxhash installed;
# `datasets` and its two pure-python needs are missing there. Same versions as here.
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
wheels() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$@"
}
wheels "$DEST/whl" "datasets==$(version datasets)" "dill==$(version dill)" "multiprocess==$(version multiprocess)"
# In case that machine's pyarrow or fsspec is too old for it: a release that asks for pyarrow>=15 only.
wheels "$DEST/whl-old" datasets==4.0.0 dill==0.3.8 multiprocess==0.70.16

if [[ ${VIDEO:-0} == 1 ]]; then
  rm -rf .devdata-video && mkdir -p .devdata-video
  wheels .devdata-video "av==$(version av)"
fi

# Loss-network weights, halved: the machine converts them back into its own cache.
python3 - "$CACHE" "$DEST/weights" <<'EOF'
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

cache, dest = Path(sys.argv[1]), Path(sys.argv[2])
for network in ("vgg16", "googlenet", "alexnet"):
    source = cache / f"{network}.safetensors"
    if not source.exists():
        sys.exit(f"{source} is missing: run the tests once (they fill {cache}) or `faststyle weights get {network}`")
    state = {k: v.half().contiguous() for k, v in load_file(source).items()}
    save_file(state, dest / f"{network}.safetensors")
EOF

# The parts of ../shared that the CUDA tests, the benchmarks and the training run read.
copy() { mkdir -p "$DEST/shared/$(dirname "$1")"; cp -r "$SHARED/$1" "$DEST/shared/$1"; }
for f in styles/vangogh_starry_night_crop.jpg styles/hokusai_great_wave_crop.jpg content/tubingen.jpg \
  content/chicago.jpg content/kodak/kodim05.png content/kodak/kodim07.png content/kodak/kodim11.png \
  train/unsplash; do
  copy "data/$f"
done
python3 - "$SHARED/data/train" "$DEST/shared/data/train" "$PHOTOS" <<'EOF'
import shutil
import sys
from pathlib import Path

source, dest, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
photos = sorted(p for p in source.rglob("*.jpg") if p.parent.name != "unsplash")
step = max(1, len(photos) // count)
for photo in photos[::step][:count]:
    target = dest / photo.relative_to(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(photo, target)
EOF

size_mb=$(( $(du -sb "$DEST" | cut -f1) / 1048576 ))
tree_mb=$(( $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) / 1048576 ))
echo "$DEST: ${size_mb} MiB (+ ${tree_mb} MiB of tracked files); $(find "$DEST/shared/data/train" -name '*.jpg' | wc -l) photos"
if (( size_mb + tree_mb > LIMIT_MB )); then
  echo "over the device tool's 64 MiB: lower PHOTOS" >&2
  exit 1
fi
