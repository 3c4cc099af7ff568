#!/usr/bin/env bash
# bench/gpu: build the CUDA engine, run its tests, then measure it and both PyTorch baselines in
# the same run on this machine, and print the table (bench/gpu/README.md).
#
#   bench/gpu/run.sh [stage ...]     stages: build test probe engine peft mixture summary (default: all)
#
# Each stage writes JSON lines under $OUT (default bench/out/gpu-<UTC stamp>, git-ignored); run stages in
# separate commands with the same OUT when one command may not run for more than ~10 minutes.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/bench/gpu"
build="${BUILD_DIR:-$root/native/build-gpu}"
out="${OUT:-$root/bench/out/gpu-$(date -u +%Y%m%dT%H%M%SZ)}"
python="${PYTHON:-python3}"
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build test probe engine peft mixture summary)
mkdir -p "$out"
echo "bench/gpu: results in $out" >&2

measured() {  # the square bf16 rate from the probe, for MFU of measured
  [ -f "$out/matmul.jsonl" ] || { echo 0; return; }
  "$python" -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["shape"] == "square_8192": print(r["tflops"])' "$out/matmul.jsonl"
}

for stage in "${stages[@]}"; do
  echo "== $stage" >&2
  case "$stage" in
    build)
      cmake -S "$root/native" -B "$build" -DCMAKE_BUILD_TYPE=Release 2>&1 | tee "$out/cmake.log" | grep 'expertune:' >&2
      grep -q 'CUDA backend ON (nvcc' "$out/cmake.log" || { echo "bench/gpu: the CUDA backend with cuBLASLt was not found (see $out/cmake.log)" >&2; exit 1; }
      cmake --build "$build" -j "$(nproc)" >&2 ;;
    test)
      ctest --test-dir "$build" --output-on-failure 2>&1 | tee "$out/ctest.log" >&2 ;;
    probe)
      "$python" "$here/matmul_probe.py" > "$out/matmul.jsonl"
      "$build/bench_gpu_gemm" > "$out/gemm.jsonl" ;;
    engine)  # both attention kernels: CUDA cores (default) and tensor cores (EXPERTUNE_CUDA_ATTENTION=mma)
      "$build/bench_gpu_engine" --device cuda:0 --measured-tflops "$(measured)" | tee "$out/engine.jsonl"
      EXPERTUNE_CUDA_ATTENTION=mma "$build/bench_gpu_engine" --device cuda:0 --measured-tflops "$(measured)" \
        | tee -a "$out/engine.jsonl" ;;
    peft)
      (cd "$here" && "$python" peft_lora.py --measured-tflops "$(measured)") | tee "$out/peft.jsonl" ;;
    mixture)
      for method in mola loramoe dynmole flylora; do
        (cd "$here" && "$python" torch_mixture.py --method "$method" --measured-tflops "$(measured)")
      done | tee "$out/torch_mixture.jsonl" ;;
    summary)
      "$python" "$here/summarize.py" "$out" | tee "$out/summary.md" ;;
    *)
      echo "unknown stage $stage (build test probe engine peft mixture summary)" >&2; exit 2 ;;
  esac
done
