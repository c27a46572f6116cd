#!/usr/bin/env bash
# The GPU benchmark, both families, cuDNN flash attention on vs off, ours vs HF PyTorch: one
# script for a machine with one NVIDIA GPU (H100 / H200, CUDA 12 driver) and about 10 minutes.
#
#   bash benchmarks/gpu.sh [OUT_DIR]          (default ./gpu_results)
#
# 1. Environment: launch/setup_venv.sh gpu,hf (.venv with jax[cuda12] at constraints.txt's jax
#    version, torch and transformers from the hf extra; needs PyPI; skipped when it is already
#    set up), then a check that JAX sees the GPU (else it stops) and torch sees CUDA (else the
#    torch rows are left out, and the summary says so).
# 2. benchmarks/train_step.py --device=gpu --attention_impl=cudnn,xla (ours with cuDNN flash
#    attention, then with jax.nn.dot_product_attention through XLA: no cuDNN) --only=ours,torch
#    --keep_going --json, bf16, attention dropout 0 in every row (the fused kernels have none),
#    for, in this order:
#      bert_base_512        BERT-Base, seq 512, batch 32, 76 masked/seq
#      modernbert_base_1024 ModernBERT-base, seq 1024, batch 16, 308 masked/seq
#      modernbert_base_8192 ModernBERT-base, seq 8192, batch 1, 2458 masked/seq
#    each under `timeout`, within one budget counted from the start, installs included
#    (GPU_SH_BUDGET_S, default 480 s): a benchmark that no longer fits in what is left is skipped
#    and listed so. A row that fails (out of memory, say) is a failed row; the others still run.
# 3. OUT_DIR: <name>.txt (the table), <name>.json (its JSON line), <name>.err (progress and
#    errors), env.txt (jax.print_environment_info, torch), setup.log, status.tsv, summary.md.
#
# Environment:
#   GPU_SH_DRY_RUN=1     print the commands, run nothing (no GPU needed)
#   GPU_SH_PYTHON=PATH   use this interpreter as it is: no setup; it must import GPU jax (and, for
#                        the torch rows, a CUDA torch and transformers); bert_jax is imported from
#                        this checkout (PYTHONPATH)
#   GPU_SH_TORCH_INDEX=URL  after the setup, reinstall the constraints' torch from this package
#                        index (a CUDA build that matches the driver, where PyPI's does not)
#   GPU_SH_BUDGET_S=480  the whole run's wall-clock budget, in seconds
#   GPU_SH_IMPLS=cudnn,xla  the attention kernels compared (any of auto,xla,cudnn,manual)
#   GPU_SH_PEERS=0       leave the torch rows out
# XLA / CUDA settings: launch/gpu/env.sh (as the training launchers use them).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../launch/common.sh source-path=SCRIPTDIR
source "$repo/launch/common.sh"
# shellcheck source=../launch/gpu/env.sh source-path=SCRIPTDIR
source "$repo/launch/gpu/env.sh"
cd "$repo"

case ${1:-} in -h|--help) usage "$0"; exit 0 ;; esac
outdir=${1:-gpu_results}
DRY_RUN=${GPU_SH_DRY_RUN:-0}
budget=${GPU_SH_BUDGET_S:-480}
impls=${GPU_SH_IMPLS:-cudnn,xla}
peers=${GPU_SH_PEERS:-1}
[[ $budget =~ ^[0-9]+$ ]] || die "GPU_SH_BUDGET_S takes whole seconds (got '$budget')"

# name | train_step.py shape flags | the most seconds it may take (compiles included)
benchmarks=(
  "bert_base_512|--model=base --seq_len=512 --batch_size=32|150"
  "modernbert_base_1024|--model=modernbert_base --seq_len=1024 --batch_size=16|170"
  "modernbert_base_8192|--model=modernbert_base --seq_len=8192 --batch_size=1|170"
)
common=(--device=gpu --dtype=bfloat16 "--attention_impl=$impls" --warmup=3 --steps=10
        --keep_going --json)
min_s=60  # a benchmark is not started with less than this left

say() { echo "[gpu.sh ${SECONDS}s] $*" >&2; }

# ---- 1. environment --------------------------------------------------------------------------
if (( DRY_RUN )); then
  echo "# GPU_SH_DRY_RUN=1: the commands, in order (OUT_DIR=$outdir, budget ${budget}s)"
  print_exports "${BERT_JAX_GPU_ENV[@]}"
  echo "mkdir -p $(quote "$outdir")"
fi
(( DRY_RUN )) || mkdir -p "$outdir"
if [[ -n ${GPU_SH_PYTHON:-} ]]; then
  py=$GPU_SH_PYTHON
  export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
  if (( DRY_RUN )); then echo "export PYTHONPATH=$(quote "$PYTHONPATH")"; fi
else
  py=.venv/bin/python
  if (( DRY_RUN )); then
    echo "launch/setup_venv.sh gpu,hf > $(quote "$outdir/setup.log") 2>&1"
  else
    say "setting up .venv (launch/setup_venv.sh gpu,hf; first run: a few minutes)"
    launch/setup_venv.sh gpu,hf > "$outdir/setup.log" 2>&1 \
      || die "launch/setup_venv.sh gpu,hf failed; see $outdir/setup.log"
  fi
  if [[ -n ${GPU_SH_TORCH_INDEX:-} ]]; then
    torch_pin=$(grep -E '^torch==' constraints.txt) || die "constraints.txt pins no torch"
    run "$py" -m pip install -q --force-reinstall --no-deps --index-url "$GPU_SH_TORCH_INDEX" \
      "$torch_pin"
  fi
fi

probe_jax='import jax, sys
d = jax.devices()[0]
print(f"jax {jax.__version__}: {d.platform} {d.device_kind}")
sys.exit(0 if d.platform == "gpu" else 1)'
probe_torch='import torch, transformers
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}), "
      f"transformers {transformers.__version__}")'
if (( DRY_RUN )); then
  quote_cmd "$py" -c "$probe_jax"
  if (( peers )); then quote_cmd "$py" -c "$probe_torch"; fi
else
  { nvidia-smi 2>&1 || true
    JAX_PLATFORMS=cuda "$py" -c "import jax; jax.print_environment_info()" 2>&1 || true
  } > "$outdir/env.txt"
  if ! jax_line=$(JAX_PLATFORMS=cuda "$py" -c "$probe_jax" 2>&1); then
    echo "$jax_line" >> "$outdir/env.txt"
    die "JAX sees no NVIDIA GPU with $py ($(tail -n1 <<< "$jax_line")); see $outdir/env.txt"
  fi
  say "$jax_line"
  if (( peers )); then
    if torch_line=$("$py" -c "$probe_torch" 2>&1); then
      say "$torch_line"
    else
      peers=0
      torch_line="torch rows left out: $(tail -n1 <<< "$torch_line")"
      say "$torch_line (GPU_SH_TORCH_INDEX installs another torch build)"
    fi
    echo "$torch_line" >> "$outdir/env.txt"
  fi
fi
only=--only=ours
if (( peers )); then only=--only=ours,torch; fi

# ---- 2. the benchmarks -----------------------------------------------------------------------
(( DRY_RUN )) || printf 'name\tstatus\tseconds\tcommand\n' > "$outdir/status.tsv"
for entry in "${benchmarks[@]}"; do
  IFS='|' read -r name shape cap <<< "$entry"
  read -ra shape_args <<< "$shape"
  cmd=("$py" benchmarks/train_step.py "${shape_args[@]}" "${common[@]}" "$only")
  left=$(( budget - SECONDS ))
  limit=$(( cap < left ? cap : left ))
  if (( DRY_RUN )); then
    printf 'timeout -k 10 %s %s > %s 2> %s\n' "$cap" "$(quote_cmd "${cmd[@]}")" \
      "$(quote "$outdir/$name.txt")" "$(quote "$outdir/$name.err")"
    continue
  fi
  if (( limit < min_s )); then
    say "$name: skipped (${left}s of the ${budget}s budget left, under ${min_s}s)"
    printf '%s\tskipped: out of time (%ss left)\t0\t%s\n' "$name" "$left" \
      "$(quote_cmd "${cmd[@]}")" >> "$outdir/status.tsv"
    continue
  fi
  say "$name (timeout ${limit}s): $(quote_cmd "${cmd[@]}")"
  start=$SECONDS rc=0
  timeout -k 10 "$limit" "${cmd[@]}" > "$outdir/$name.txt" 2> "$outdir/$name.err" || rc=$?
  took=$(( SECONDS - start ))
  if (( rc == 0 )); then
    status=ok
    tail -n1 "$outdir/$name.txt" > "$outdir/$name.json"
    sed '$d' "$outdir/$name.txt"  # the table, without the JSON line
  elif (( rc == 124 || rc == 137 )); then
    status="timed out after ${limit}s ($(grep 'running' "$outdir/$name.err" | tail -n1 || true))"
  else
    status="failed, exit $rc: $(tail -n1 "$outdir/$name.err" | cut -c1-300)"
  fi
  say "$name: $status"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$took" "$(quote_cmd "${cmd[@]}")" \
    >> "$outdir/status.tsv"
done

# ---- 3. summary ------------------------------------------------------------------------------
if (( DRY_RUN )); then
  echo "$(quote "$py") - $(quote "$outdir") <<'PY'  # the summary: status.tsv and *.json -> summary.md"
  exit 0
fi
"$py" - "$outdir" <<'PY' || say "the summary failed; the results are in $outdir"
import csv, json, os, sys
out = sys.argv[1]
lines = ["# GPU benchmark (benchmarks/gpu.sh)", ""]
if os.path.exists(os.path.join(out, "env.txt")):
  env = open(os.path.join(out, "env.txt")).read().splitlines()
  lines += ["    " + l.strip(' |"') for l in env if "NVIDIA-SMI" in l
            or l.startswith(("jax:", "jaxlib:", "device info:", "torch"))] + [""]
lines += ["| benchmark | row | attention | tok/s | MFU | step ms | peak GiB | ours/x | x/torch |",
          "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
notes = []
for s in csv.DictReader(open(os.path.join(out, "status.tsv")), delimiter="\t"):
  name, path = s["name"], os.path.join(out, s["name"] + ".json")
  if s["status"] != "ok" or not os.path.exists(path):
    lines.append(f"| {name} | {s['status']} | | | | | | | |")
    continue
  j = json.load(open(path))
  several = len(j["attention_impls"]) > 1
  rows = {(f"ours[{k}]" if several else "ours"): v for k, v in j["ours"].items()}
  rows.update(j["peers"])
  ref = next(iter(j["ours"].values()), None)
  for row, r in rows.items():
    x = f"{ref['tokens_per_s'] / r['tokens_per_s']:.2f}" if ref else ""
    t = j.get("vs_torch", {}).get(row)
    t = "1.00" if row == "torch" else "" if t is None else f"{t:.2f}"
    lines.append(f"| {name} | {row} | {r.get('attention', '')} | {r['tokens_per_s']:,.0f} | "
                 f"{100 * r['mfu']:.1f}% | {1e3 * r['step_time_s']:.1f} | "
                 f"{r['peak_mem_bytes'] / 2 ** 30:.1f} | {x} | {t} |")
  for row, msg in j.get("failed", {}).items():
    lines.append(f"| {name} | {row}: FAILED | {msg[:200]} | | | | | | |")
  notes.append(f"- {name}: {j['model']} seq {j['seq_len']} batch {j['batch_size']} "
               f"{j['dtype']}, attention dropout {j['attention_dropout_set']} in every row, "
               f"MFU over {j['peak_flops'] / 1e12:.4g} TFLOP/s (datasheet), {s['seconds']} s")
lines += ["", "ours/x: the first kernel's row over the row (tok/s); x/torch: the row over torch."]
lines += [""] + notes
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
say "done: $outdir/summary.md"
