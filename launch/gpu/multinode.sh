#!/usr/bin/env bash
# GPU training without SLURM: run this once on every node (by ssh, pdsh, your scheduler...), with
# the same flags except --node-rank. One process per node (default) sees all the node's GPUs; with
# --procs-per-node=8 it starts one process per GPU, each logging to its own file, and waits for them.
# With --num-nodes=1 (the default) it is the single-node launcher (8 x H100 on one machine).
#
#   launch/gpu/multinode.sh --config=configs/bert_base.py --workdir=DIR \
#     [--num-nodes=N --node-rank=I --coordinator=HOST0:PORT] [--procs-per-node=1|8] \
#     [--gpus-per-node=8] [--python=PATH] [--log-dir=DIR] [--dry-run] -- [TRAIN_FLAGS]
#
#   --coordinator=HOST:PORT  node 0's address, reachable from every node (default 127.0.0.1:12355,
#                            enough for one node)
#   --num-nodes=N            nodes in the job (default 1); --node-rank=I: this node, 0..N-1
#   --procs-per-node=P       1 (default: one process, all GPUs) or --gpus-per-node (one per GPU)
#   --workdir=DIR            shared by all nodes (NFS, Lustre or gs://...); the same DIR resumes
#   --log-dir=DIR            with one process per GPU: DIR/process_<id>.log (default runs/logs)
#   --python=PATH            default: .venv/bin/python of the repository if there is one, else python3
#   --dry-run                print the exports and commands; run nothing
# Environment (XLA / NCCL flags for H100s): launch/gpu/env.sh.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../common.sh source-path=SCRIPTDIR
source "$repo/launch/common.sh"
# shellcheck source=env.sh source-path=SCRIPTDIR
source "$repo/launch/gpu/env.sh"

config="" workdir="" coordinator=127.0.0.1:12355 num_nodes=1 node_rank=0 procs_per_node=1
gpus_per_node=8 python="" log_dir=runs/logs train_args=()
while (( $# )); do
  case $1 in
    --config=*) config=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --coordinator=*) coordinator=${1#*=} ;;
    --num-nodes=*) num_nodes=${1#*=} ;;
    --node-rank=*) node_rank=${1#*=} ;;
    --procs-per-node=*) procs_per_node=${1#*=} ;;
    --gpus-per-node=*) gpus_per_node=${1#*=} ;;
    --python=*) python=${1#*=} ;;
    --log-dir=*) log_dir=${1#*=} ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage "$0"; exit 0 ;;
    --) shift; train_args=("$@"); break ;;
    *) die "unknown flag '$1' (flags take the form --flag=value; see --help)" ;;
  esac
  shift
done
[[ -n $config ]] || die "--config is required (e.g. --config=configs/bert_base.py)"
[[ -n $workdir ]] || die "--workdir is required"
[[ $coordinator =~ ^[^:]+:[0-9]+$ ]] || die "--coordinator takes HOST:PORT (got '$coordinator')"
for n in num_nodes node_rank procs_per_node gpus_per_node; do
  [[ ${!n} =~ ^[0-9]+$ ]] || die "--${n//_/-} takes a number (got '${!n}')"
done
(( num_nodes >= 1 && node_rank < num_nodes )) || die "--node-rank must be in 0..$(( num_nodes - 1 ))"
(( procs_per_node == 1 || procs_per_node == gpus_per_node )) ||
  die "--procs-per-node must be 1 or $gpus_per_node (one process per GPU), not $procs_per_node"
python=${python:-$(default_python "$repo")}

num_processes=$(( num_nodes * procs_per_node ))
train=("$python" -m bert_jax.train --config="$config" --workdir="$workdir" "${train_args[@]}")
if (( DRY_RUN )); then
  print_exports "${BERT_JAX_GPU_ENV[@]}"
  quote_cmd cd "$repo"
fi
cd "$repo"

if (( num_processes == 1 )); then  # one process on one node: nothing to coordinate
  run "${train[@]}"
elif (( procs_per_node == 1 )); then
  run "${train[@]}" --coordinator_address="$coordinator" --num_processes="$num_processes" \
    --process_id="$node_rank"
else
  # One process per GPU: process p of this node sees only GPU p (JAX_LOCAL_DEVICE_IDS).
  for (( gpu = 0; gpu < procs_per_node; gpu++ )); do
    process_id=$(( node_rank * procs_per_node + gpu ))
    spawn "$log_dir/process_$process_id.log" env JAX_LOCAL_DEVICE_IDS="$gpu" "${train[@]}" \
      --coordinator_address="$coordinator" --num_processes="$num_processes" --process_id="$process_id"
  done
  wait_group
fi
