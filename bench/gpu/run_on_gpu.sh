#!/usr/bin/env bash
# The GPU evidence of BENCHMARKS.md, run on an NVIDIA H100/H200 server with no package index.
# Expects the onnxruntime-gpu wheel parts in /tmp/ortgpu (see ../shared/gpu/README.md), the
# demo bundles (built where nncf is, carried in .gpubundles/) and $OUT for the results.
set -euo pipefail
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
wheel_name=$(cat .gpu*/WHEEL_NAME 2>/dev/null | head -1)
cat /tmp/ortgpu/part* > "/tmp/ortgpu/$wheel_name"
python3 -m pip install -q --no-index --no-deps --target /tmp/ortsite "/tmp/ortgpu/$wheel_name"
export PYTHONPATH=/tmp/ortsite
LD_LIBRARY_PATH=$(python3 -c 'import glob,os,nvidia; print(":".join(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib"))))')
export LD_LIBRARY_PATH PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/edgesite . 2>&1 | tail -2
export PYTHONPATH=/tmp/edgesite:/tmp/ortsite
es() { python3 -m edgeslim "$@"; }
log=$OUT/gpu.log
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c 'import onnxruntime as o, torch; print("onnxruntime", o.__version__, o.get_available_providers(), "torch", torch.__version__)'
  es devices
} 2>&1 | tee "$log"
work=/tmp/gpuwork && mkdir -p $work
demo=(.gpubundles/fp32 .gpubundles/fp16 .gpubundles/int8 .gpubundles/pruned-kd .gpubundles/pruned-kd-int8)
for batch in 1 32; do
  es -q validate "${demo[@]}" --data edgeslim.demo:digits_data --device cpu --device gpu --batch $batch \
     --runs 300 --warmup 30 --out $work/demo-b$batch.json > /dev/null
  cp $work/demo-b$batch.json "$OUT/"
done
(cd bench/gpu && python3 -m edgeslim run resnet18.yaml --out $work/r18 2>&1 | grep -v "━" | tail -25) | tee -a "$log"
cp $work/r18/report.json "$OUT/r18-b1.json"
es -q validate $work/r18/fp32 $work/r18/fp16 --data bench/gpu/resnet.py:digits64 --device cpu --device gpu \
   --batch 32 --runs 100 --warmup 10 --out $work/r18-b32.json > /dev/null
cp $work/r18-b32.json "$OUT/"
for bundle in fp32 fp16; do
  for batch in 1 32; do
    echo "== r18 $bundle gpu batch $batch, I/O kept on the device" | tee -a "$log"
    es -q bench $work/r18/$bundle --device gpu --io device --batch $batch --runs 300 --warmup 30 2>&1 | tee -a "$log"
  done
done
