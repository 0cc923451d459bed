#!/usr/bin/env bash
# One command for the GPU bench: set up an offline machine, then time each named config.
#   bash bench/gpu/run.sh CONFIG...      (from the repo root; results in /tmp/bench/out; bench/gpu/device.sh packs them into $OUT)
# Configs: exact (bespoke train, exact profile), raw (the same argv through accelerate, no bespoke),
# and any name defined in configs() below. Needs .whl/ and .cache/sd-scripts carried (bench/RESULTS.md).
set -u
REPO=$PWD
B=/tmp/bench
RES=$B/out
IMAGES=${BENCH_IMAGES:-64}   # repeats 1, one epoch: IMAGES/2 steps at batch 2
mkdir -p "$B" "$RES"

if [ ! -d /tmp/site/accelerate ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$REPO PYTHONUNBUFFERED=1 SD_SCRIPTS_DIR=$REPO/.cache/sd-scripts
export LD_LIBRARY_PATH=/tmp/site/nvidia/cuda_runtime/lib:${LD_LIBRARY_PATH:-}
export HF_HUB_OFFLINE=1 HF_HOME=$B/hf TOKENIZERS_PARALLELISM=false
WS=$B/ws
CKPT=$B/sdxl_random.safetensors
T=(python3 "$REPO/bench/gpu/timed.py")

if [ ! -f "$B/versions.txt" ]; then
  { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import torch,transformers,diffusers,accelerate,bitsandbytes;print('torch',torch.__version__,'transformers',transformers.__version__,'diffusers',diffusers.__version__,'accelerate',accelerate.__version__,'bitsandbytes',bitsandbytes.__version__)"
    python3 -c "import xformers.ops, xformers; print('xformers', xformers.__version__, 'ok')" 2>&1 | tail -1
    echo "sd-scripts $(cat bespoke/SD_SCRIPTS_COMMIT 2>/dev/null)"; nproc; } > "$B/versions.txt" 2>&1
fi
cp "$B/versions.txt" "$RES/"; cat "$B/versions.txt"
if [ ! -f "$CKPT" ]; then
  python3 bench/gpu/build_checkpoint.py .cache/sd-scripts "$CKPT" 2>&1 | tail -2 | tee "$RES/checkpoint.txt"
fi
if [ ! -d "$WS/training_data" ]; then
  python3 -m bespoke demo-data --out "$B/data" --count "$IMAGES" >/dev/null &&
  python3 -m bespoke prepare --workspace "$WS" --data "$B/data" --expect "$IMAGES" --repeats 1 2>&1 | tail -3
fi
COMMON=(--set "pretrained_model_name_or_path=$CKPT" --set max_train_epochs=1 --set sample_every_n_epochs=100)

clear_latents() { find "$WS/training_data" -name '*.npz' -delete; }

bespoke_train() {  # NAME [bespoke train options...]
  local name=$1; shift
  rm -rf "$WS/output"
  "${T[@]}" "$name" "$RES" --tail "$WS/output/logs/train-*.log" -- \
    python3 -m bespoke train --workspace "$WS" "${COMMON[@]}" "$@"
  ls -la "$WS/output"/*.safetensors "$WS/output/status.json" 2>&1 | tee -a "$RES/$name.files"
  cp "$WS/output/status.json" "$RES/$name.status" 2>/dev/null
}

raw_train() {  # NAME [bespoke train options]: the argv bespoke would run, launched without bespoke
  local name=$1 line; shift
  rm -rf "$WS/output" "$B/raw_out"
  line=$(python3 -m bespoke train --workspace "$WS" "${COMMON[@]}" "$@" --dry-run | grep -A1 '^launch command:' | tail -1)
  # BESPOKE_COMPILE set: run the same argv through the compile launcher (not in any profile yet)
  [ -n "${BESPOKE_COMPILE:-}" ] && line=${line/" $SD_SCRIPTS_DIR/sdxl_train_network.py"/" $REPO/bespoke/fastsdxl.py $SD_SCRIPTS_DIR/sdxl_train_network.py"}
  mkdir -p "$B/raw_out"
  line=${line//"$WS/output"/"$B/raw_out"}
  python3 -c "from bespoke import recipe; print(recipe.prompt_file_text(width=1024, height=1024), end='')" \
    > "$(grep -o -- "--sample_prompts [^ ]*" <<<"$line" | cut -d' ' -f2)" 2>/dev/null || true
  echo "$line" > "$RES/$name.cmd"
  "${T[@]}" "$name" "$RES" -- bash -c "$line"
  ls -la "$B/raw_out" | tee -a "$RES/$name.files"
}

NOGC=(--set gradient_checkpointing=false)
SDPA=(--set xformers=false --set sdpa=true)
for cfg in "$@"; do
  echo "=== $cfg $(date +%T)"
  case $cfg in
    exact) [ -n "${KEEP_LATENTS:-}" ] || clear_latents; bespoke_train exact ;;
    raw) [ -n "${KEEP_LATENTS:-}" ] || clear_latents; raw_train raw ;;
    nogc_vae8) clear_latents; bespoke_train nogc_vae8 "${NOGC[@]}" --set vae_batch_size=8 ;;
    nogc) bespoke_train nogc "${NOGC[@]}" ;;
    nogc_sdpa) bespoke_train nogc_sdpa "${NOGC[@]}" "${SDPA[@]}" ;;
    nogc_workers0) bespoke_train nogc_workers0 "${NOGC[@]}" --set max_data_loader_n_workers=0 ;;
    compile_default) BESPOKE_COMPILE=default raw_train compile_default --profile fast ;;
    compile_nocg) BESPOKE_COMPILE=max-autotune-no-cudagraphs raw_train compile_nocg --profile fast ;;
    compile_cg) BESPOKE_COMPILE=reduce-overhead raw_train compile_cg --profile fast ;;
    fast) bespoke_train fast --profile fast ;;
    *) echo "unknown config $cfg" ;;
  esac
done
echo "=== results"
cat "$RES"/*.json 2>/dev/null | python3 -c "
import json,sys
for d in json.loads('['+sys.stdin.read().replace('}\n{','},{').replace('}{','},{')+']'):
    print(d['name'], d.get('rc'), d.get('s_per_step_median'), d.get('s_per_step_mean'), d.get('peak_mem_mib_nvsmi'), d.get('gpu_busy_pct_nvsmi'), d['milestones_s'])
" 2>&1 || true
