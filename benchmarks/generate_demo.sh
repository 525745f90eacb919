#!/usr/bin/env bash
# The README's "Generate a model for a new task" session, run for real:
#   PROTONET=DIR/protonet bash benchmarks/generate_demo.sh   (DIR from benchmarks/omniglot.py --workdir DIR)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export ZIP=${ZIP:-$ROOT/../shared/data/omniglot/images_background.zip}
PROTONET=${PROTONET:?set PROTONET to DIR/protonet after python benchmarks/omniglot.py --workdir DIR}
mkdir -p "${WORKDIR:-generate-demo}" && cd "${WORKDIR:-generate-demo}"
rm -rf runs mlflow.db support.csv queries.csv omniglot_task queries_img
export MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db
echo '$ distmeta train --workers 0 --output runs/sine'
distmeta train --workers 0 --output runs/sine --json 2>/dev/null > train.out
head -2 train.out; tail -1 train.out > train.json
RUN=$(python -c "import json; print(json.load(open('train.json'))['run_id'])")
python - <<'PY'
import numpy as np, pandas as pd
x = np.random.default_rng(7).uniform(-5, 5, 110)
frame = pd.DataFrame({"x": x, "y": 3.0 * np.sin(x - 1.2)})
frame[:10].to_csv("support.csv", index=False)      # the new task's 10 labelled points
frame[10:].to_csv("queries.csv", index=False)      # 100 more of the same sine, to score
PY
echo '$ head -3 support.csv'; head -3 support.csv
echo "\$ distmeta generate --meta-model runs:/$RUN/meta_model --support support.csv --name sine-3-1.2 --json"
distmeta generate --meta-model "runs:/$RUN/meta_model" --support support.csv --name sine-3-1.2 --json 2>/dev/null
python - <<'PY'
import mlflow, numpy as np, pandas as pd
queries = pd.read_csv("queries.csv")
after = mlflow.pyfunc.load_model("models:/sine-3-1.2/1").predict(queries[["x"]])["y"]
client = mlflow.MlflowClient()
version = client.get_model_version("sine-3-1.2", "1")
meta_uri = client.get_run(version.tags["distmeta.source_run_id"]).data.tags["distmeta.meta_model_uri"]
before = mlflow.pyfunc.load_model(meta_uri).predict(queries[["x"]])["y"]
print(f"MSE on the 100 other points: generated model {np.mean((after - queries.y) ** 2):.4f}, "
      f"meta-model before adaptation {np.mean((before - queries.y) ** 2):.4f}")
PY
mlflow models serve -m models:/sine-3-1.2/1 --env-manager local --host 127.0.0.1 --port 5055 >serve.log 2>&1 &
SERVER=$!
for i in $(seq 60); do curl -s -o /dev/null http://127.0.0.1:5055/ping && break; sleep 1; done
echo "\$ curl -s http://127.0.0.1:5055/invocations -H 'Content-Type: application/json' -d '{\"dataframe_split\": {\"columns\": [\"x\"], \"data\": [[-2.0], [0.0], [1.2], [3.0]]}}'"
curl -s http://127.0.0.1:5055/invocations -H 'Content-Type: application/json' \
  -d '{"dataframe_split": {"columns": ["x"], "data": [[-2.0], [0.0], [1.2], [3.0]]}}'; echo
echo "truth: $(python -c "import numpy as np; print([round(float(3*np.sin(x-1.2)), 4) for x in (-2.0, 0.0, 1.2, 3.0)])")"
kill $SERVER; wait $SERVER 2>/dev/null || true

# Omniglot: the 30-minute ProtoNets meta-model of benchmarks/omniglot.py, 5 new characters of a test alphabet
python - <<'PY'
import os, pathlib, zipfile
archive = zipfile.ZipFile(os.environ["ZIP"])
for c in range(1, 6):
    members = sorted(m for m in archive.namelist() if m.startswith(f"images_background/Tifinagh/character{c:02d}/") and m.endswith(".png"))
    for i, member in enumerate(members):
        target = pathlib.Path("omniglot_task" if i == 0 else "queries_img") / f"character{c:02d}" / pathlib.Path(member).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(member))
PY
echo "$ distmeta generate --meta-model $PROTONET --support omniglot_task --name tifinagh-5 --json"
distmeta generate --meta-model "$PROTONET" --support omniglot_task --name tifinagh-5 --json 2>/dev/null
python - <<'PY'
import mlflow, numpy as np, pandas as pd, pathlib
from PIL import Image
rows, truth = [], []
for folder in sorted(pathlib.Path("queries_img").iterdir()):
    for png in sorted(folder.glob("*.png")):
        image = Image.open(png).convert("L").resize((28, 28), Image.LANCZOS)
        rows.append(np.asarray(image, dtype=np.float64).reshape(-1) / 255)
        truth.append(folder.name)
predicted = mlflow.pyfunc.load_model("models:/tifinagh-5/1").predict(pd.DataFrame({"image": rows}))
print(predicted.head(3).to_string())
print(f"accuracy on the other {len(truth)} drawings of the 5 characters: {np.mean(predicted['label'] == truth):.3f}")
PY
