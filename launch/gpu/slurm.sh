#!/usr/bin/env bash
# SLURM batch script: pretrain on N nodes x 8 GPUs with srun, one process per node (default, all 8
# GPUs visible to it) or one process per GPU. jax.distributed.initialize() in the trainer finds the
# coordinator, the process count and the process id in SLURM's environment: no multi-host flags.
#
#   sbatch [--nodes=N] [--ntasks-per-node=8] [--partition=P] [--account=A] [--time=HH:MM:SS] \
#     launch/gpu/slurm.sh --config=configs/bert_base.py --workdir=DIR [--python=PATH] \
#     [--srun-arg=ARG ...] [--dry-run] -- [TRAIN_FLAGS, e.g. --config.train.batch_size=256]
#
#   --ntasks-per-node=8   one process per GPU (the sbatch option; default 1: one per node)
#   --workdir=DIR         on a filesystem every node sees (or gs://...); the same DIR resumes
#   --python=PATH         default: .venv/bin/python of the repository if there is one, else python3
#   --srun-arg=ARG        extra srun option, e.g. --srun-arg=--container-image=IMAGE (repeatable)
#   --dry-run             print the exports and the srun command; run nothing (works outside SLURM,
#                         where it assumes the #SBATCH defaults below)
#
# Submit from the repository root on a filesystem the nodes share: sbatch runs a copy of this
# script, which finds launch/ and .venv through the submit directory. Environment: launch/gpu/env.sh.
# The job gets SIGTERM 5 minutes before its time limit (--signal): training saves a checkpoint
# and exits; submit the same command again to resume.
#SBATCH --job-name=bert_jax
#SBATCH --nodes=2
#SBATCH --gpus-per-node=8
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --signal=TERM@300
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ ! -f $repo/launch/common.sh ]]; then  # inside the job: a copy of this script in SLURM's spool
  repo=${SLURM_SUBMIT_DIR:-$PWD}
  [[ -f $repo/launch/common.sh ]] || { echo "error: submit from the bert_jax repository root ($repo has no launch/common.sh)" >&2; exit 2; }
fi
# shellcheck source=../common.sh source-path=SCRIPTDIR
source "$repo/launch/common.sh"
# shellcheck source=env.sh source-path=SCRIPTDIR
source "$repo/launch/gpu/env.sh"

config="" workdir="" python="" srun_args=() train_args=()
while (( $# )); do
  case $1 in
    --config=*) config=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --python=*) python=${1#*=} ;;
    --srun-arg=*) srun_args+=("${1#*=}") ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage "$0"; exit 0 ;;
    --) shift; train_args=("$@"); break ;;
    *) die "unknown flag '$1' (flags take the form --flag=value; see --help)" ;;
  esac
  shift
done
[[ -n $config ]] || die "--config is required (e.g. --config=configs/bert_base.py)"
[[ -n $workdir ]] || die "--workdir is required"
python=${python:-$(default_python "$repo")}

# The allocation (outside a job, for --dry-run: the #SBATCH defaults above).
tasks_per_node=${SLURM_NTASKS_PER_NODE:-1}
gpus_per_node=${SLURM_GPUS_ON_NODE:-8}
exports=("${BERT_JAX_GPU_ENV[@]}")
if (( tasks_per_node == 1 )); then
  # Under SLURM, jax.distributed.initialize() gives each process only GPU $SLURM_LOCALID; the one
  # process of a node must see all of them.
  JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $(( gpus_per_node - 1 )))
  export JAX_LOCAL_DEVICE_IDS
  exports+=(JAX_LOCAL_DEVICE_IDS)
elif (( tasks_per_node == gpus_per_node )); then
  unset JAX_LOCAL_DEVICE_IDS  # process i of a node takes GPU i ($SLURM_LOCALID): JAX's default
else
  die "--ntasks-per-node must be 1 (one process per node) or $gpus_per_node (one per GPU), not $tasks_per_node"
fi

# --kill-on-bad-exit: if one process dies, end the step instead of leaving the others hanging in
# a collective. --cpus-per-task: srun no longer inherits it, and one CPU per process starves the
# input pipeline, so split the node's CPUs between its processes.
srun_cmd=(srun --kill-on-bad-exit=1 --label)
if [[ -n ${SLURM_CPUS_ON_NODE:-} ]]; then
  srun_cmd+=(--cpus-per-task=$(( SLURM_CPUS_ON_NODE / tasks_per_node )))
fi
srun_cmd+=("${srun_args[@]}" "$python" -m bert_jax.train --config="$config" --workdir="$workdir" "${train_args[@]}")

if (( DRY_RUN )); then
  print_exports "${exports[@]}"
  quote_cmd cd "$repo"
fi
cd "$repo"
run "${srun_cmd[@]}"
