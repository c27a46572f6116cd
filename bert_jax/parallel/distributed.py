"""Multi-process start-up: jax.distributed from flags, or auto-detected on Cloud TPU / SLURM."""

from __future__ import annotations

import logging
import os

import jax

from bert_jax.errors import UserError

log = logging.getLogger("bert_jax")


def detected_cluster() -> str | None:
  """'tpu' | 'slurm' | 'mpi' when this process is one of several in a known cluster."""
  env = os.environ
  if "," in env.get("TPU_WORKER_HOSTNAMES", "") or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "tpu"
  if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1")) > 1:
    return "slurm"
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "mpi"
  return None


def initialize(coordinator_address: str = "", num_processes: int = 0,
               process_id: int = -1) -> None:
  """Calls jax.distributed.initialize when running as one of several processes.

  Explicit: --coordinator_address=HOST:PORT --num_processes=N --process_id=I (plain multi-node
  GPU clusters, local multi-process CPU runs). Otherwise auto-detected on multi-host Cloud TPU,
  under SLURM (srun) and Open MPI; a single process needs nothing. CPU collectives use gloo.
  Must run before anything touches a JAX device.
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator_address:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise UserError(f"--process_id={process_id} --num_processes={num_processes}: need "
                       "0 <= process_id < num_processes with --coordinator_address")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif num_processes > 1 or process_id >= 0:
    raise UserError("--num_processes/--process_id need --coordinator_address=HOST:PORT")
  elif (cluster := detected_cluster()) is not None:
    log.info("multi-process %s cluster detected; calling jax.distributed.initialize()", cluster)
    jax.distributed.initialize()
