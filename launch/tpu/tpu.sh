#!/usr/bin/env bash
# Cloud TPU: create a TPU VM (or a queued resource), set up every worker, train on all workers at
# once, follow the log, stop, delete, and relaunch after a preemption. Every command accepts
# --dry-run (print the gcloud commands, pasteable, and run nothing) and --help.
#
#   launch/tpu/tpu.sh COMMAND --name=NAME --zone=ZONE --project=PROJECT [flags] [-- TRAIN_FLAGS]
#
# Commands:
#   create    create the TPU:  --accelerator=v4-32  [--runtime-version=V]  [--spot | --reserved |
#             --best-effort]  [--queued]  [--create-arg=GCLOUD_FLAG ...]
#   setup     install bert_jax on every worker (--worker=all) into ~/bert_jax/.venv, either from git:
#             --repo=https://github.com/ORG/bert_jax [--ref=main]   or from a wheel:  --wheel=PATH
#             (the wheel goes with this checkout's configs/ and constraints.txt)  [--python-version=3.11]
#   train     start `python -m bert_jax.train --config=C --workdir=W TRAIN_FLAGS` on all workers at
#             once, in the background, logging to ~/bert_jax/train.log on each worker:
#             --config=configs/bert_base.py --workdir=gs://BUCKET/DIR [--env=KEY=VALUE ...]
#             -- [--config.train.batch_size=256 ...]      (the same command on every host; JAX
#             finds its peers itself; the same workdir resumes from the latest checkpoint)
#   logs      follow a worker's log (tail -F):  [--worker=0]
#   stop      SIGTERM the trainer on all workers: it saves a checkpoint at the next step and exits
#   delete    delete the TPU (with --queued: the queued resource and its TPU)
#   relaunch  after a preemption: delete the preempted TPU, create, setup and train again with the
#             same flags (all of create's, setup's and train's); refuses if the TPU is still READY
#
# Flags of every command:
#   --name=NAME  --zone=ZONE  --project=PROJECT   the TPU (and queued resource) name and location
#   --queued       the TPU is (to be) a queued resource of the same name (needed for --best-effort)
#   --dry-run      print the commands and run nothing
#
# Runtime versions by accelerator (override with --runtime-version): v6e-* v2-alpha-tpuv6e,
# v5p-* v2-alpha-tpuv5, v5litepod-* v2-alpha-tpuv5-lite, v4-* (and older) tpu-ubuntu2204-base.
# Needs: gcloud (authenticated), bash >= 4.4. See docs/launch.md.
set -euo pipefail
# shellcheck source=../common.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# shellcheck disable=SC2088  # a literal ~: the worker's shell expands it
remote_dir='~/bert_jax'   # on every worker
remote_scp_dir=bert_jax   # the same directory for scp (relative to the home directory)

# ---- flags -----------------------------------------------------------------------------------
command=${1:-}
case $command in
  create|setup|train|logs|stop|delete|relaunch) shift ;;
  -h|--help|"") usage "$0"; exit 0 ;;
  *) die "unknown command '$command' (create, setup, train, logs, stop, delete, relaunch; see --help)" ;;
esac

name="" zone="" project="" queued=0
accelerator="" runtime_version="" capacity="" create_args=()
repo="" ref=main wheel="" python_version=3.11
config="" workdir="" env_args=() train_args=()
worker=0
while (( $# )); do
  case $1 in
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --queued) queued=1 ;;
    --accelerator=*) accelerator=${1#*=} ;;
    --runtime-version=*) runtime_version=${1#*=} ;;
    --spot|--reserved|--best-effort)
      [[ -z $capacity || $capacity == "$1" ]] || die "choose one of --spot, --reserved, --best-effort"
      capacity=$1 ;;
    --create-arg=*) create_args+=("${1#*=}") ;;
    --repo=*) repo=${1#*=} ;;
    --ref=*) ref=${1#*=} ;;
    --wheel=*) wheel=${1#*=} ;;
    --python-version=*) python_version=${1#*=} ;;
    --config=*) config=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --env=*) env_args+=("${1#*=}") ;;
    --worker=*) worker=${1#*=} ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage "$0"; exit 0 ;;
    --) shift; train_args=("$@"); break ;;
    *) die "unknown flag '$1' (flags take the form --flag=value; see --help)" ;;
  esac
  shift
done

[[ -n $name ]] || die "--name is required"
[[ $name =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name: lower-case letters, digits and dashes, starting with a letter (got '$name')"
[[ -n $zone ]] || die "--zone is required"
[[ -n $project ]] || die "--project is required"
where=(--zone="$zone" --project="$project")
if [[ $capacity == --best-effort ]]; then
  (( queued )) || die "--best-effort needs --queued (only queued resources have a best-effort tier)"
fi

# ---- commands --------------------------------------------------------------------------------
join_steps() {  # join_steps STEP...: one remote command line, "STEP; STEP; ..."
  local out
  printf -v out '%s; ' "$@"
  echo "${out%; }"
}

ssh_all() {  # ssh_all REMOTE_COMMAND: run it on every worker at once
  run gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all --command="$1"
}

check_create_flags() {
  [[ -n $accelerator ]] || die "--accelerator is required (e.g. --accelerator=v4-32)"
  if [[ -z $runtime_version ]]; then
    case $accelerator in
      v6e-*) runtime_version=v2-alpha-tpuv6e ;;
      v5p-*) runtime_version=v2-alpha-tpuv5 ;;
      v5litepod-*|v5e-*) runtime_version=v2-alpha-tpuv5-lite ;;
      v2-*|v3-*|v4-*) runtime_version=tpu-ubuntu2204-base ;;
      *) die "no default runtime version for '$accelerator'; pass --runtime-version" ;;
    esac
  fi
}

check_setup_flags() {
  if [[ -n $wheel ]]; then
    [[ -z $repo ]] || die "pass --repo or --wheel, not both"
    [[ $(basename "$wheel") =~ ^[A-Za-z0-9_.+-]+\.whl$ ]] || die "--wheel must be a .whl file (got '$wheel')"
    [[ -f $wheel || $DRY_RUN == 1 ]] || die "--wheel: no such file: $wheel"
  else
    [[ -n $repo ]] || die "setup needs --repo=https://github.com/ORG/bert_jax [--ref=REF] or --wheel=PATH"
  fi
}

check_train_flags() {
  [[ -n $config ]] || die "--config is required (e.g. --config=configs/bert_base.py)"
  [[ $workdir == gs://?* ]] || die "--workdir must be a gs:// path so that every worker sees the same checkpoints (got '${workdir}')"
  local kv
  for kv in "${env_args[@]}"; do
    [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env takes KEY=VALUE (got '$kv')"
  done
}

create() {
  local tier=() cmd
  if [[ -n $capacity ]]; then tier=("$capacity"); fi
  if (( queued )); then
    cmd=(gcloud compute tpus queued-resources create "$name")
    # The best-effort tier exists only in the v2alpha1 API, i.e. gcloud alpha.
    if [[ $capacity == --best-effort ]]; then cmd=(gcloud alpha compute tpus queued-resources create "$name"); fi
    run "${cmd[@]}" "${where[@]}" --node-id="$name" --accelerator-type="$accelerator" \
      --runtime-version="$runtime_version" "${tier[@]}" "${create_args[@]}"
    wait_until_active
  else
    run gcloud compute tpus tpu-vm create "$name" "${where[@]}" --accelerator-type="$accelerator" \
      --version="$runtime_version" "${tier[@]}" "${create_args[@]}"
  fi
}

wait_until_active() {  # a queued resource is created at once but provisioned later
  local cmd=(gcloud compute tpus queued-resources describe "$name" "${where[@]}" --format='value(state.state)')
  if (( DRY_RUN )); then
    echo "# then poll every 60 s until the state is ACTIVE:"
    quote_cmd "${cmd[@]}"
    return
  fi
  local state
  while :; do
    state=$("${cmd[@]}")
    case $state in
      ACTIVE) return ;;
      FAILED|SUSPENDING|SUSPENDED) die "queued resource $name is $state (see: gcloud compute tpus queued-resources describe $name)" ;;
    esac
    echo "queued resource $name is ${state:-not visible yet}; checking again in 60 s" >&2
    sleep 60
  done
}

setup() {
  local steps=("set -e" "mkdir -p $remote_dir" "cd $remote_dir") spec
  if [[ -n $wheel ]]; then
    # Copy the wheel with this checkout's configs/ (the training configs) and constraints.txt.
    ssh_all "mkdir -p $remote_dir"
    run gcloud compute tpus tpu-vm scp "$wheel" "$repo_root/configs" "$repo_root/constraints.txt" \
      "$name:$remote_scp_dir/" "${where[@]}" --worker=all --recurse
    spec="./$(basename "$wheel")[tpu]"
  else
    # A shallow fetch of exactly REF (branch, tag or commit), so configs/ match the package.
    steps+=("git init -q ." "git fetch -q --depth=1 $(quote "$repo") $(quote "$ref")"
            "git checkout -q --force FETCH_HEAD")
    spec=".[tpu]"
  fi
  # jax needs Python >= 3.11; the TPU images have 3.10, so uv brings its own interpreter.
  steps+=("python3 -m pip install -q --user --upgrade uv"
          "[ -x .venv/bin/python ] || python3 -m uv venv -q --python $(quote "$python_version") .venv"
          "python3 -m uv pip install -q --python .venv/bin/python -c constraints.txt --reinstall-package bert_jax \"$spec\""
          "echo \"\$(hostname): bert_jax ready, jax \$(.venv/bin/python -c \"import bert_jax, jax; print(jax.__version__)\")\"")
  ssh_all "$(join_steps "${steps[@]}")"
}

train() {
  local py=(.venv/bin/python -m bert_jax.train --config="$config" --workdir="$workdir" "${train_args[@]}")
  if (( ${#env_args[@]} )); then py=(env "${env_args[@]}" "${py[@]}"); fi
  # Refuse to start twice; nohup and the redirects let the trainer outlive the ssh session; `stop`
  # signals the pid in train.pid.
  ssh_all "$(join_steps "cd $remote_dir" \
    "if [ -f train.pid ] && kill -0 \"\$(cat train.pid)\" 2>/dev/null; then echo \"\$(hostname): training is already running (pid \$(cat train.pid)); use stop first\" >&2; exit 1; fi" \
    "echo \"=== \$(date -u +%FT%TZ) start\" >> train.log" \
    "nohup $(quote_cmd "${py[@]}") >> train.log 2>&1 < /dev/null & echo \$! > train.pid" \
    "echo \"\$(hostname): started pid \$(cat train.pid), log $remote_dir/train.log\"")"
}

logs() {
  [[ $worker =~ ^[0-9]+$ ]] || die "--worker takes one worker number (got '$worker')"
  run gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker="$worker" \
    --command="tail -n 100 -F $remote_dir/train.log"
}

stop() {
  ssh_all "cd $remote_dir; if [ -f train.pid ] && kill -TERM \"\$(cat train.pid)\" 2>/dev/null; then echo \"\$(hostname): sent SIGTERM to pid \$(cat train.pid)\"; else echo \"\$(hostname): not running\"; fi"
}

delete() {
  if (( queued )); then  # --force: delete the TPU of the queued resource too
    run gcloud compute tpus queued-resources delete "$name" "${where[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$name" "${where[@]}" --quiet
  fi
}

relaunch() {
  local describe state
  if (( queued )); then
    describe=(gcloud compute tpus queued-resources describe "$name" "${where[@]}" --format='value(state.state)')
  else
    describe=(gcloud compute tpus tpu-vm describe "$name" "${where[@]}" --format='value(state)')
  fi
  if (( DRY_RUN )); then
    quote_cmd "${describe[@]}"
    echo "# stop here if that state is READY / ACTIVE (the TPU is fine: use train); delete it if it exists:"
    delete
  else
    state=$("${describe[@]}" 2>/dev/null) || state=""   # empty: there is no such TPU
    case $state in
      READY|ACTIVE) die "$name is $state, not preempted: use 'train' to restart training on it (or 'delete' first)" ;;
      "") echo "$name does not exist; creating it" >&2 ;;
      *) echo "$name is $state; deleting it" >&2; delete ;;
    esac
  fi
  create
  setup
  train
}

case $command in
  create) check_create_flags; create ;;
  setup) check_setup_flags; setup ;;
  train) check_train_flags; train ;;
  logs) logs ;;
  stop) stop ;;
  delete) delete ;;
  relaunch) check_create_flags; check_setup_flags; check_train_flags; relaunch ;;
esac
