# XLA / NCCL / CUDA settings for training on H100s (sourced by slurm.sh and multinode.sh).
# Flag names checked against jaxlib 0.10.2 (tests/launch runs XLA with these XLA_FLAGS), the JAX
# "GPU performance tips" page and NVIDIA JAX-Toolbox's GPU_performance.md. The values are starting
# points, not tuned for bert_jax: measure before and after changing them.
# Settings already in the environment win: your XLA_FLAGS go after these (XLA takes the last
# occurrence of a flag) and every variable below keeps a value you exported before.
# shellcheck shell=bash

bert_jax_xla_flags=(
  # Let XLA's scheduler start collectives (the gradient all-reduce) early and overlap them with
  # the remaining backward pass instead of running them after it.
  --xla_gpu_enable_latency_hiding_scheduler=true
  # Merge small all-reduces into buckets of up to 128 MiB: BERT-Base's fp32 gradients (~440 MB)
  # go in a few large NCCL calls, each of which can still overlap with compute. Tune between
  # 16 MiB and the full gradient size.
  --xla_gpu_all_reduce_combine_threshold_bytes=134217728
  # The same bucketing for the all-gathers / reduce-scatters of FSDP (--config.mesh.fsdp > 1).
  --xla_gpu_all_gather_combine_threshold_bytes=134217728
  --xla_gpu_reduce_scatter_combine_threshold_bytes=134217728
)
export XLA_FLAGS="${bert_jax_xla_flags[*]}${XLA_FLAGS:+ $XLA_FLAGS}"

# JAX preallocates 75% of GPU memory by default; 90% leaves room for NCCL and cuDNN workspaces
# and gives the batch the rest.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
# Hopper: one hardware work queue keeps kernels in XLA's launch order, which the latency hiding
# scheduler relies on to overlap communication (NVIDIA recommends NOT setting this on Blackwell).
export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
# Print NCCL's warnings (a wrong network interface or a missing InfiniBand plugin shows up here);
# set NCCL_DEBUG=INFO once to see which transport (NVLink, IB, sockets) each ring uses.
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# Cluster-specific, so left for you to set when NCCL picks the wrong network:
#   export NCCL_SOCKET_IFNAME=eth0     # interface for NCCL's bootstrap / socket traffic
#   export NCCL_IB_HCA=mlx5            # InfiniBand adapters to use across nodes

# shellcheck disable=SC2034  # read by the scripts that source this file
BERT_JAX_GPU_ENV=(XLA_FLAGS XLA_PYTHON_CLIENT_MEM_FRACTION CUDA_DEVICE_MAX_CONNECTIONS NCCL_DEBUG)
