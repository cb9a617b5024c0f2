#!/bin/bash
# Is training still bit-identical? The lesson's recipe for 2 epochs on a 2,000-image real-MNIST subset,
# through the CLI and through cnnlab.train; prints each run's best.pt weight hash and metrics.csv
# (timings left out). Run it for two checkouts and diff the outputs:
#   bash benchmarks/bitcheck.sh SRC_DIR DATA_DIR > a.txt      (SRC_DIR: a checkout's src/)
set -e
SRC=$(cd "$1" && pwd); DATA=$(cd "$2" && pwd); OUT=$(mktemp -d)
export PYTHONPATH=$SRC OMP_NUM_THREADS=1
cd "$OUT"
python -m cnnlab train --data-dir "$DATA" --no-download --subset 2000 --epochs 2 --threads 1 --no-progress --run-dir "$OUT/cli" > /dev/null
python - "$OUT" "$DATA" <<'PY'
import csv, hashlib, json, sys
import torch
import cnnlab
out, data = sys.argv[1], sys.argv[2]
cnnlab.train(data_dir=data, download=False, subset=2000, epochs=2, threads=1, run_dir=f"{out}/api", log=None)
for run in ("cli", "api"):
    rows = list(csv.DictReader(open(f"{out}/{run}/metrics.csv")))
    keep = [{k: v for k, v in r.items() if "time" not in k} for r in rows]
    sd = torch.load(f"{out}/{run}/best.pt", weights_only=True)["state_dict"]
    h = hashlib.sha256(b"".join(v.cpu().contiguous().numpy().tobytes() for k, v in sorted(sd.items()))).hexdigest()
    print(run, h, json.dumps(keep))
PY
rm -rf "$OUT"
