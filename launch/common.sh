# Shared helpers for the launch scripts (sourced, never run): shell quoting, --dry-run, --help,
# and starting a group of processes that live and die together.
# shellcheck shell=bash

if (( BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 404 )); then
  echo "error: the launch scripts need bash >= 4.4, this is $BASH_VERSION (macOS: brew install bash)" >&2
  exit 1
fi

DRY_RUN=0   # set to 1 by --dry-run: print the commands instead of running them

die() {  # die MESSAGE: one-line error on stderr, exit 2
  echo "error: $*" >&2
  exit 2
}

usage() {  # usage SCRIPT: prints the script's leading comment block (after #!, without #SBATCH)
  awk 'NR == 1 || /^#SBATCH/ { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}

quote() {  # quote ARG: ARG as one word for a POSIX shell, exactly like Python's shlex.quote
  local sq="'"
  if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//$sq/$sq\"$sq\"$sq}"
  fi
}

quote_cmd() {  # quote_cmd ARG...: the command line, each word quoted; --flag='v a l' stays readable
  local arg out=()
  for arg in "$@"; do
    if [[ $arg =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
      out+=("${BASH_REMATCH[1]}$(quote "${BASH_REMATCH[2]}")")
    else
      out+=("$(quote "$arg")")
    fi
  done
  printf '%s\n' "${out[*]}"
}

run() {  # run CMD...: with --dry-run print CMD (pasteable), else echo it to stderr and run it
  if (( DRY_RUN )); then
    quote_cmd "$@"
  else
    echo "+ $(quote_cmd "$@")" >&2
    "$@"
  fi
}

print_exports() {  # print_exports NAME...: "export NAME=value" lines for the dry run
  local name
  for name in "$@"; do
    printf 'export %s=%s\n' "$name" "$(quote "${!name}")"
  done
}

default_python() {  # default_python REPO: REPO/.venv/bin/python if there is one, else python3
  if [[ -x $1/.venv/bin/python ]]; then echo "$1/.venv/bin/python"; else echo python3; fi
}

# Process groups: spawn starts one background process with its own log; wait_group waits for all,
# stops the rest as soon as one fails (its peers would only hang in a collective), and returns
# non-zero if any failed. Ctrl-C / SIGTERM to the launcher is forwarded to every process (SIGTERM
# makes training save a checkpoint and exit).
GROUP_PIDS=()
GROUP_LOGS=()

spawn() {  # spawn LOG CMD...
  local log=$1
  shift
  if (( DRY_RUN )); then
    printf '%s > %s 2>&1 &\n' "$(quote_cmd "$@")" "$(quote "$log")"
    return
  fi
  mkdir -p "$(dirname "$log")"
  echo "+ $(quote_cmd "$@") > $(quote "$log") 2>&1 &" >&2
  "$@" > "$log" 2>&1 &
  GROUP_PIDS+=("$!")
  GROUP_LOGS+=("$log")
}

_stop_group() {  # _stop_group SIGNAL: send SIGNAL to every process of the group still running
  local pid
  for pid in "${GROUP_PIDS[@]}"; do
    [[ -n $pid ]] && kill "-$1" "$pid" 2>/dev/null || true
  done
}

wait_group() {
  if (( DRY_RUN )); then
    echo wait
    return 0
  fi
  trap '_stop_group TERM' INT TERM
  local i pid rc failed=0 running=1
  while (( running )); do
    running=0
    for i in "${!GROUP_PIDS[@]}"; do
      pid=${GROUP_PIDS[$i]}
      [[ -n $pid ]] || continue
      if kill -0 "$pid" 2>/dev/null; then
        running=1
        continue
      fi
      rc=0
      wait "$pid" || rc=$?
      GROUP_PIDS[i]=""
      if (( rc != 0 )); then
        echo "process $i (pid $pid) failed with exit code $rc; log: ${GROUP_LOGS[$i]}" >&2
        (( failed )) || _stop_group TERM
        failed=1
      fi
    done
    (( running )) && sleep 1
  done
  trap - INT TERM
  if (( failed )); then return 1; fi
  echo "all ${#GROUP_LOGS[@]} processes finished; logs: ${GROUP_LOGS[*]}" >&2
}
