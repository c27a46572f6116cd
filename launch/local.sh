#!/usr/bin/env bash
# Multi-host on one CPU machine: runs N processes of `python -m bert_jax.train`, each with K fake
# CPU devices, joined through a coordinator on 127.0.0.1 (explicit --coordinator_address,
# --num_processes and --process_id; the trainer turns on gloo CPU collectives). Each process logs
# to its own file; the script waits for all of them, stops the rest if one fails, and exits
# non-zero if any failed. Ctrl-C sends SIGTERM to all (training saves a checkpoint and exits).
#
#   launch/local.sh [--num-processes=2] [--devices-per-process=2] [--port=12355] \
#     [--log-dir=runs/local_logs] [--python=PATH] [--dry-run] \
#     -- --config=configs/tiny.py --workdir=runs/local [TRAIN_FLAGS]
#
# Relative paths are relative to the repository root. --python defaults to the repository's
# .venv/bin/python if there is one, else python3.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=common.sh source-path=SCRIPTDIR
source "$repo/launch/common.sh"

num_processes=2 devices_per_process=2 port=12355 log_dir=runs/local_logs python="" train_args=()
while (( $# )); do
  case $1 in
    --num-processes=*) num_processes=${1#*=} ;;
    --devices-per-process=*) devices_per_process=${1#*=} ;;
    --port=*) port=${1#*=} ;;
    --log-dir=*) log_dir=${1#*=} ;;
    --python=*) python=${1#*=} ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage "$0"; exit 0 ;;
    --) shift; train_args=("$@"); break ;;
    *) die "unknown flag '$1' (flags take the form --flag=value; see --help)" ;;
  esac
  shift
done
for n in num_processes devices_per_process port; do
  [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "--${n//_/-} takes a positive number (got '${!n}')"
done
(( ${#train_args[@]} )) || die "pass the training flags after --, e.g. -- --config=configs/tiny.py --workdir=runs/local"
python=${python:-$(default_python "$repo")}

xla_flags="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$devices_per_process"
if (( DRY_RUN )); then
  quote_cmd cd "$repo"
fi
cd "$repo"
for (( i = 0; i < num_processes; i++ )); do
  spawn "$log_dir/process_$i.log" env JAX_PLATFORMS=cpu XLA_FLAGS="$xla_flags" \
    "$python" -m bert_jax.train "${train_args[@]}" \
    --coordinator_address="127.0.0.1:$port" --num_processes="$num_processes" --process_id="$i"
done
wait_group
