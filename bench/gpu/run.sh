#!/usr/bin/env bash
# One command for the GPU bench: set up an offline machine, then time each named config.
#   bash bench/gpu/run.sh CONFIG...      (from the repo root; results in /tmp/bench/out; bench/gpu/device.sh packs them into $OUT)
# A CONFIG runs alone on GPU 0 in workspace ws0 (CONFIG@N: in wsN); "A+B" runs A in ws0 and B in ws1 (same
# data, same seed), on GPU 0 and GPU 1 at the same time on a 2-GPU machine, one after the other on one GPU.
# Configs: see the case below.
# Short configs train 40 steps (40 images, 2 epochs, batch 2); *200 configs train 200 steps for the
# equivalence check (bench/gpu/compare.py). Needs .whl/ and .cache/sd-scripts carried (bench/RESULTS.md).
set -u
REPO=$PWD
B=/tmp/bench
RES=$B/out
IMAGES=${BENCH_IMAGES:-40}   # repeats 1: IMAGES/2 steps per epoch at batch 2
mkdir -p "$B" "$RES"
# a warm machine may still run a training that a killed call left behind: it would share the GPU with this call's runs
pkill -f sdxl_train_network.py && sleep 5

if [ ! -d /tmp/site/accelerate ] || [ ! -d /tmp/site/open_clip ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$REPO PYTHONUNBUFFERED=1 SD_SCRIPTS_DIR=$REPO/.cache/sd-scripts
export LD_LIBRARY_PATH=/tmp/site/nvidia/cuda_runtime/lib:${LD_LIBRARY_PATH:-}
export HF_HUB_OFFLINE=1 HF_HOME=$B/hf TOKENIZERS_PARALLELISM=false
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
if [ ! -d "$B/ws0/training_data" ]; then
  python3 -m bespoke demo-data --out "$B/data" --count "$IMAGES" >/dev/null &&
  python3 -m bespoke prepare --workspace "$B/ws0" --data "$B/data" --expect "$IMAGES" --repeats 1 2>&1 | tail -3
  for n in 1 2; do mkdir -p "$B/ws$n" && cp -r "$B/ws0/training_data" "$B/ws$n/"; done
fi
GPUS=$(nvidia-smi -L | wc -l)
common() {  # EPOCHS: the run's length; one LoRA saved at its end
  echo --set "pretrained_model_name_or_path=$CKPT" --set "max_train_epochs=$1" --set "save_every_n_epochs=$1" \
    --set sample_every_n_epochs=100
}
ws203() {  # ws3: the user's count, 203 images (start-up and latent caching only)
  [ -d "$B/ws3/training_data" ] && return
  python3 -m bespoke demo-data --out "$B/data203" --count 203 >/dev/null &&
  python3 -m bespoke prepare --workspace "$B/ws3" --data "$B/data203" --expect 203 --repeats 1 2>&1 | tail -1
}
clear_latents() { find "$1/training_data" -name '*.npz' -delete; }

bespoke_train() {  # NAME WS EPOCHS [bespoke train options...]
  local name=$1 ws=$2 epochs=$3; shift 3
  rm -rf "$ws/output"
  # shellcheck disable=SC2046
  "${T[@]}" "$name" "$RES" --images-per-step "${IPS:-2}" ${STOP:+--stop-at "$STOP"} --tail "$ws/output/logs/train-*.log" -- \
    python3 -m bespoke train --workspace "$ws" $(common "$epochs") "$@"
  local rc=$?
  ls -la "$ws/output"/*.safetensors "$ws/output/status.json" 2>&1 | tee -a "$RES/$name.files"
  cp "$ws/output/status.json" "$RES/$name.status" 2>/dev/null
  echo "$name: $(grep -c 'Recompiling function' "$RES/$name.log") recompiles"
  grep -E "bespoke fastsdxl|bespoke: |OutOfMemory|Error" "$RES/$name.log" | cut -c1-220 | tail -8
  return $rc
}

raw_train() {  # NAME WS EPOCHS [bespoke train options]: the argv bespoke would run, launched without bespoke
  # (PROFILED=1: with bench/gpu/profiled.py as accelerate's script, in place of the profile's launcher)
  local name=$1 ws=$2 epochs=$3 line script; shift 3
  rm -rf "$ws/output" "$ws/raw_out"
  # shellcheck disable=SC2046
  line=$(python3 -m bespoke train --workspace "$ws" $(common "$epochs") "$@" --dry-run | grep -A1 '^launch command:' | tail -1)
  mkdir -p "$ws/raw_out"
  line=${line//"$ws/output"/"$ws/raw_out"}
  if [ -n "${PROFILED:-}" ]; then
    script=$SD_SCRIPTS_DIR/sdxl_train_network.py
    line=${line//"$REPO/bespoke/launch/fastsdxl.py "/}
    line=${line//"$script"/"$REPO/bench/gpu/profiled.py $script"}
  fi
  python3 -c "from bespoke import recipe; print(recipe.prompt_file_text(width=1024, height=1024), end='')" \
    > "$(grep -oE -- "--sample_prompts[= ][^ ]*" <<<"$line" | cut -c18-)" 2>/dev/null || true
  echo "$line" > "$RES/$name.cmd"
  # the compile caches bespoke would use in this workspace (a fast run there leaves them warm)
  TORCHINDUCTOR_CACHE_DIR=$ws/.cache/torchinductor TRITON_CACHE_DIR=$ws/.cache/triton "${T[@]}" "$name" "$RES" -- bash -c "$line"
  ls -la "$ws/raw_out" | tee -a "$RES/$name.files"
}

tm() {  # LABEL COMMAND...: the command's wall seconds
  local label=$1 t=$EPOCHREALTIME; shift
  "$@"; echo "$(python3 -c "print(round($EPOCHREALTIME - $t, 2))") s  $label" >&3  # fd 3: diag's file
}
diag() {  # where the seconds before sd-scripts' first line go: each start-up piece alone, cold (first) then warm
  local f=$RES/diag.txt i
  exec 3>>"$f"
  for i in cold warm; do
    { echo "--- $i" >&3
      tm "import torch" python3 -c "import torch"
      tm "bespoke.launch.gpuprobe --imports-only" python3 -m bespoke.launch.gpuprobe --imports-only >/dev/null
      tm "nvidia-smi query" nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader
      tm "bespoke train --dry-run" python3 -m bespoke train --workspace "$B/ws0" $(common 2) --profile exact --dry-run >/dev/null
      tm "accelerate launch (empty script)" python3 -m accelerate.commands.launch --num_processes 1 --mixed_precision bf16 /dev/null
      (cd "$SD_SCRIPTS_DIR" && tm "sdxl_train_network.py --help (its imports)" python3 -X importtime sdxl_train_network.py --help >/dev/null 2>"$RES/importtime-$i.txt")
    } >>"$RES/diag.out" 2>&1
  done
  exec 3>&-
  sort -t'|' -k2 -n -r "$RES/importtime-cold.txt" | head -25 >>"$f"; cat "$f"
}

one() {  # CONFIG SLOT: run one config in workspace ws<SLOT>, on GPU SLOT (GPU 0 on a 1-GPU machine)
  local cfg=$1 ws=$B/ws$2
  export CUDA_VISIBLE_DEVICES=$(( $2 % GPUS ))
  case $cfg in
    # exact is not the default on Hopper GPUs any more: the exact configs ask for it
    diag) diag ;;
    exact) clear_latents "$ws"; bespoke_train "$cfg" "$ws" 2 --profile exact ;;
    raw) clear_latents "$ws"; raw_train "$cfg" "$ws" 2 --profile exact ;;
    nogc) bespoke_train "$cfg" "$ws" 2 --profile exact --set gradient_checkpointing=false ;;
    fast) bespoke_train "$cfg" "$ws" 2 --profile fast ;;  # nogc + sdpa + compiled blocks + flat step (fastsdxl.py)
    fast_nocompile) BESPOKE_COMPILE=off bespoke_train "$cfg" "$ws" 2 --profile fast ;;
    fast_xf) bespoke_train "$cfg" "$ws" 2 --profile fast --set xformers=true --set sdpa=false ;;
    fast_py) BESPOKE_CPP_WRAPPER=0 bespoke_train "$cfg" "$ws" 2 --profile fast ;;  # launched from Python (calls 8-11's fast)
    fast_noflat) BESPOKE_FLAT_STEP=off bespoke_train "$cfg" "$ws" 2 --profile fast ;;  # per-tensor AdamW8bit
    # issue 16: the notes' sampling (4 prompts, 30 steps, 1024^2) after each of the 2 epochs; the recompile log on
    exact_s) clear_latents "$ws"; bespoke_train "$cfg" "$ws" 2 --profile exact --set sample_every_n_epochs=1 ;;
    fast_s) TORCH_LOGS=recompiles bespoke_train "$cfg" "$ws" 2 --profile fast --set sample_every_n_epochs=1 ;;
    # goal 1, a fresh pod: step 1 with empty compile caches (1 epoch; its exit saves the cache artifacts, with
    # BESPOKE_CPP_WRAPPER=0 only), then (fast_art@2) in ws2 with nothing but those artifacts. share_cache copies
    # ws0's artifacts folder to ws1 and ws2: not the compile cache itself, which bespoke empties at another path
    # (its C++ launchers name kernel files by path: the copies of call 7 failed at step 1, bespoke/kernelcache.py)
    fast_cold) rm -rf "$ws/.cache/torchinductor" "$ws/.cache/triton"
      TORCH_LOGS=recompiles bespoke_train "$cfg" "$ws" 1 --profile fast ;;
    share_cache) for n in 1 2; do rm -rf "$B/ws$n/.cache/torchinductor/bespoke-artifacts"
        mkdir -p "$B/ws$n/.cache/torchinductor" && cp -a "$B/ws0/.cache/torchinductor/bespoke-artifacts" "$B/ws$n/.cache/torchinductor/"; done
      du -sh "$B/ws0/.cache"/* | tee "$RES/share_cache.txt"; ls -la "$B/ws0/.cache/torchinductor/bespoke-artifacts" | tee -a "$RES/share_cache.txt" ;;
    fast_art) find "$ws/.cache/torchinductor" -mindepth 1 -maxdepth 1 ! -name bespoke-artifacts -exec rm -rf {} +
      rm -rf "$ws/.cache/triton"; TORCH_LOGS=recompiles bespoke_train "$cfg" "$ws" 1 --profile fast ;;
    fast_cold_py | fast_art_py) [[ $cfg == fast_cold* ]] && rm -rf "$ws/.cache/torchinductor" "$ws/.cache/triton"
      [[ $cfg == fast_art* ]] && { find "$ws/.cache/torchinductor" -mindepth 1 -maxdepth 1 ! -name bespoke-artifacts -exec rm -rf {} +; rm -rf "$ws/.cache/triton"; }
      BESPOKE_CPP_WRAPPER=0 TORCH_LOGS=recompiles bespoke_train "$cfg" "$ws" 1 --profile fast ;;
    # goal 3: fastb is fast under another name (fast+fastb: two 1-GPU runs side by side: does the host slow them?);
    # the 2-GPU runs time their all-reduce and log NCCL's transport; _aff pins each process near its GPU
    fastb) bespoke_train "$cfg" "$ws" 2 --profile fast ;;
    fast2gpu_t | fast2gpu_aff) CUDA_VISIBLE_DEVICES=0,1 IPS=4 NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT BESPOKE_TIME_ALLREDUCE=1 \
      BESPOKE_CPU_AFFINITY=$([[ $cfg == *aff ]] && echo 1 || echo 0) bespoke_train "$cfg" "$B/ws1" 4 --profile fast
      grep -E "via |all-reduce of|CPUs near" "$RES/$cfg.log" | sort | uniq -c | sort -rn | head -12 ;;
    # goal 4: lean without the cap (its own peak), and capped with the allocator's expandable segments
    lean) bespoke_train "$cfg" "$ws" 2 --profile lean ;;
    lean22x) PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True BESPOKE_GPU_MEMORY_GB=22 bespoke_train "$cfg" "$ws" 2 --profile lean ;;
    # the 24 GB profile with this process's GPU memory capped at 22 GB (torch's per-process memory fraction)
    lean22) BESPOKE_GPU_MEMORY_GB=22 bespoke_train "$cfg" "$ws" 2 --profile lean ;;
    lean200) BESPOKE_GPU_MEMORY_GB=22 bespoke_train "$cfg" "$ws" 10 --profile lean ;;  # the 200-step equivalence, capped
    lean22_s) BESPOKE_GPU_MEMORY_GB=22 bespoke_train "$cfg" "$ws" 2 --profile lean --set sample_every_n_epochs=1 ;;
    # the same, kernels launched from Python (compiles in about half the time; ~1.2x slower steps)
    lean22py_s) BESPOKE_CPP_WRAPPER=0 BESPOKE_GPU_MEMORY_GB=22 TORCH_LOGS=recompiles \
      bespoke_train "$cfg" "$ws" 2 --profile lean --set sample_every_n_epochs=1 ;;
    # where the step's time goes (bench/gpu/profiled.py: phases, kernels, top ops), 40 steps, raw launch
    prof) PROFILED=1 PROFILE_NAME=$cfg PROFILE_OUT=$RES raw_train "$cfg" "$ws" 2 --profile fast ;;
    prof_noflat) BESPOKE_FLAT_STEP=off PROFILED=1 PROFILE_NAME=$cfg PROFILE_OUT=$RES raw_train "$cfg" "$ws" 2 --profile fast ;;
    prof_exact) PROFILED_BASE=exact PROFILED=1 PROFILE_NAME=$cfg PROFILE_OUT=$RES raw_train "$cfg" "$ws" 2 --profile exact ;;
    # 203 images (ws3): latent caching at a VAE batch size, then stopped; time to step 1 with latents on disk
    cache1 | cache8 | cache16 | cache32) ws203; clear_latents "$B/ws3"
      STOP=network bespoke_train "$cfg" "$B/ws3" 1 --profile exact --set "vae_batch_size=${cfg#cache}" ;;
    start203 | start203b) ws203; STOP=step1 bespoke_train "$cfg" "$B/ws3" 1 --profile exact ;;
    vae8) clear_latents "$ws"; bespoke_train "$cfg" "$ws" 2 --profile exact --set vae_batch_size=8 ;;
    vae16) clear_latents "$ws"; bespoke_train "$cfg" "$ws" 2 --profile exact --set vae_batch_size=16 ;;
    exact200 | exact200b) bespoke_train "$cfg" "$ws" 10 --profile exact ;;  # twice: one caching in-run shifts the random stream (RESULTS.md)
    fast200) bespoke_train "$cfg" "$ws" 10 --profile fast ;;
    # both GPUs, in ws1 (GPU 0's 1-GPU LoRA stays in ws0 for LORA_LOAD); global batch 4: 10 steps/epoch
    exact2gpu) CUDA_VISIBLE_DEVICES=0,1 IPS=4 bespoke_train "$cfg" "$B/ws1" 4 --profile exact ;;
    fast2gpu) CUDA_VISIBLE_DEVICES=0,1 IPS=4 bespoke_train "$cfg" "$B/ws1" 4 --profile fast ;;
    fast2gpu_noflat) BESPOKE_FLAT_STEP=off CUDA_VISIBLE_DEVICES=0,1 IPS=4 bespoke_train "$cfg" "$B/ws1" 4 --profile fast ;;
    *) echo "unknown config $cfg" ;;
  esac
  unset CUDA_VISIBLE_DEVICES
}

for cfg in "$@"; do
  echo "=== $cfg $(date +%T)"
  if [[ $cfg == *+* && $GPUS -gt 1 ]]; then
    one "${cfg%%+*}" 0 & one "${cfg#*+}" 1 & wait
  elif [[ $cfg == *+* ]]; then
    one "${cfg%%+*}" 0; one "${cfg#*+}" 1
  elif [[ $cfg == *@* ]]; then
    one "${cfg%@*}" "${cfg#*@}"
  else
    one "$cfg" 0
  fi
done
for spec in ${COMPARE:-}; do  # COMPARE="NAME:I:J ...": the runs in wsI and wsJ, same math? (NAME alone: ws0, ws1)
  IFS=: read -r cname i j <<<"$spec"
  python3 bench/gpu/compare.py "$cname" "$RES" "$B/ws${i:-0}/output" "$B/ws${j:-1}/output" 2>&1 | tail -3
done
if [ -n "${LORA_LOAD:-}" ]; then  # LORA_LOAD=NAME: GPU 0's LoRA (one GPU) and GPU 1's (the 2-GPU run) load alike?
  python3 bench/gpu/lora_load.py "$LORA_LOAD" "$RES" "$CKPT" "$B/ws0/output" "$B/ws1/output" 2>&1 | tail -3
fi
echo "=== results"
cat "$RES"/*.json 2>/dev/null | python3 -c "
import json,sys
for d in json.loads('['+sys.stdin.read().replace('}\n{','},{').replace('}{','},{')+']'):
    if 'milestones_s' in d: print(d['name'], d.get('rc'), d.get('s_per_step_median'), d.get('s_per_step_mean'), d.get('peak_mem_mib_nvsmi'), d.get('gpu_busy_pct_nvsmi'), d['milestones_s'], d.get('sampling_s'))
" 2>&1 || true
cat "$RES"/*.phases.json 2>/dev/null
