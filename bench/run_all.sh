#!/usr/bin/env bash
# Every speed benchmark of bench/, one after the other, on one device; each writes its JSON to bench/results/.
#
#   bash bench/run_all.sh            # this CPU: about 30 min on 2 cores (run nothing else meanwhile)
#   bash bench/run_all.sh cuda       # a GPU: a few minutes, adds the `full` preset's BERT-base sizes
#
# The order matters: machine_limit first, since every other bench reads its rates against that file.
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cpu}"
py="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
tag="$("$py" -c 'import sys; sys.path.insert(0, "bench"); import common; print(common.tag(sys.argv[1]))' "$device")"
run() { echo; echo "## $*"; "$py" "$@"; }
run bench/machine_limit.py --device "$device"
run bench/embed_speed.py --device "$device"
run bench/retrieval_price.py --device "$device"
if [ "$device" != cpu ]; then
  run bench/retrieval_price.py --device "$device" --preset full --bf16 --steps 10
  run bench/retrieval_price.py --device "$device" --preset full --bf16 --steps 10 --set batch_size=16 \
    --json "bench/results/retrieval_price-full-b16-$tag.json"
fi
if [ "$device" = cpu ]; then  # 1M vectors: IVF training and HNSW construction take many minutes on few cores
  run bench/mips_speed.py --sizes 100000
else
  run bench/mips_speed.py --device "$device"
fi
run bench/cost_growth.py --device "$device" --plot "bench/results/cost_growth-$tag.png"
if [ "$device" = cpu ]; then
  run bench/profile_stages.py
  run bench/refresh_hidden.py
fi
