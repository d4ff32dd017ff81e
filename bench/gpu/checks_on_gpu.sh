#!/usr/bin/env bash
# Second GPU session: what only the GPU server can show. Same set-up as run_on_gpu.sh.
set -uo pipefail
wheel_name=$(cat .gpu*/WHEEL_NAME 2>/dev/null | head -1)
cat /tmp/ortgpu/part* > "/tmp/ortgpu/$wheel_name"
python3 -m pip install -q --no-index --no-deps --target /tmp/ortsite "/tmp/ortgpu/$wheel_name" 2>&1 | grep -v WARNING
LD_LIBRARY_PATH=$(PYTHONPATH=/tmp/ortsite python3 -c 'import glob,os,nvidia; print(":".join(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib"))))')
export LD_LIBRARY_PATH PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/edgesite . 2>&1 | grep -v WARNING | tail -2
export PYTHONPATH=/tmp/edgesite:/tmp/ortsite
es() { python3 -m edgeslim "$@"; }
log=$OUT/checks.log
{
  echo "== 1. training runs on CUDA (ResNet-18 recipe, train lines)"
  (cd bench/gpu && python3 -m edgeslim run resnet18.yaml --out /tmp/r18 2>&1 | grep -E "train epoch|wrote")
  echo "== 2. a provider onnxruntime cannot start is refused, not replaced by the CPU"
  es bench /tmp/r18/fp32 --device tensorrt --runs 5; echo "exit $?"
  echo "== 3. the x86 edge box (4 cores) is emulated on this 16-core x86 host"
  es bench .gpubundles/pruned-kd-int8 --device x86-edge --runs 300
  es bench .gpubundles/pruned-kd-int8 --device rpi5 --runs 300
  echo "== 4. 8 threads predicting on CUDA match serial calls"
  python3 - <<'PY'
import threading, numpy as np
from edgeslim.sdk import load
from edgeslim.demo import digits_arrays
x = digits_arrays()[2]
model = load(".gpubundles/fp32", device="gpu")
chunks = [x[i:i + 9] for i in range(0, 9 * 32, 9)]
serial = [model.predict(c) for c in chunks]
out = [None] * len(chunks)
def work(w):
    for i in range(w, len(chunks), 8):
        out[i] = model.predict(chunks[i])
threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
print("provider", model.session.get_providers()[0], "identical", all(np.array_equal(a, b) for a, b in zip(out, serial)))
PY
} 2>&1 | grep -v "━" | tee "$log"
