"""Placement: logical axis names -> mesh axes, in one table.

The model names every parameter axis and key activation axis with a logical name
(`models/layers.py`, `models/bert.py`); this module alone decides where each goes on the
(data, fsdp, tensor) mesh. Parameters are sharded ZeRO-3 style over `fsdp` along `embed`, and
tensor-parallel over `tensor` along heads / mlp / vocab; activations are sharded over `data` and
`fsdp` along the batch.
"""

from __future__ import annotations

import contextlib
import math
import contextvars
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bert_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis (or axes, or None = replicated). The whole placement policy.
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("qkv", None),
    ("norm", None),
    ("pos", None),
    ("types", None),
    ("classes", None),
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
)

_RULES = dict(LOGICAL_AXIS_RULES)



def logical_to_spec(names: Sequence[str | None], rules=None) -> PartitionSpec:
  """('embed', 'mlp') -> PartitionSpec('fsdp', 'tensor') under the rules table."""
  table = _RULES if rules is None else dict(rules)
  out = []
  for n in names:
    if n is None:
      out.append(None)
    elif n not in table:
      raise KeyError(f"logical axis {n!r} has no rule in bert_jax.parallel.sharding.LOGICAL_AXIS_RULES")
    else:
      out.append(table[n])
  return PartitionSpec(*out)


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """Drops mesh axes that do not divide a dimension (e.g. 2 token types over 4 fsdp shards)."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      out.append(None)
      continue
    axes_t = (axes,) if isinstance(axes, str) else tuple(axes)
    kept = []
    size = 1
    for a in axes_t:
      if dim % (size * mesh.shape[a]) == 0:
        kept.append(a)
        size *= mesh.shape[a]
    out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return PartitionSpec(*out)


# ---- activation constraints -----------------------------------------------------------------
_ACTIVE_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar(
    "bert_jax_mesh", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh | None):
  """Within this context (while tracing), `constrain` pins activations onto `mesh`."""
  token = _ACTIVE_MESH.set(mesh)
  try:
    yield
  finally:
    _ACTIVE_MESH.reset(token)


def under_mesh(fn, mesh: Mesh):
  """fn, traced with activation constraints pinned to `mesh` (wrap before jax.jit)."""
  def wrapped(*args):
    with activation_sharding(mesh):
      return fn(*args)
  return wrapped


def tensor_parallel() -> bool:
  """Whether the mesh being traced for splits the `tensor` axis (heads / mlp / vocab)."""
  mesh = _ACTIVE_MESH.get()
  return mesh is not None and mesh.shape["tensor"] > 1


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Sharding constraint by logical names; a no-op outside `activation_sharding`."""
  mesh = _ACTIVE_MESH.get()
  if mesh is None or mesh.size == 1:
    return x
  spec = fit_spec(logical_to_spec(names), x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


# ---- mesh -------------------------------------------------------------------------------------
class MeshError(UserError):
  pass


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
  """Resolves -1 (fill) and checks data × fsdp × tensor == num_devices."""
  sizes = [data, fsdp, tensor]
  for name, s in zip(MESH_AXES, sizes):
    if s == 0 or s < -1:
      raise MeshError(f"--config.mesh.{name}={s}: mesh sizes are positive integers or -1 (fill)")
  if sizes.count(-1) > 1:
    raise MeshError("--config.mesh.*: at most one of data, fsdp, tensor may be -1 (fill)")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise MeshError(f"--config.mesh.*: {known} does not divide the {num_devices} devices; "
                      "choose sizes whose product divides the device count")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise MeshError(f"--config.mesh.*: data×fsdp×tensor = {'×'.join(map(str, sizes))} = "
                    f"{math.prod(sizes)} but there are {num_devices} devices; make the product "
                    f"{num_devices} (or set one size to -1)")
  return tuple(sizes)


def create_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, *, dcn_data: int = 1,
                devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all). dcn_data > 1 splits the data
  axis across TPU slices (DCN) with the rest inside each slice (ICI)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(data, fsdp, tensor, len(devices))
  auto = (jax.sharding.AxisType.Auto,) * 3
  if dcn_data > 1:
    from jax.experimental import mesh_utils
    if shape[0] % dcn_data:
      raise MeshError(f"--config.mesh.dcn_data={dcn_data} does not divide the data axis "
                      f"({shape[0]})")
    ici = (shape[0] // dcn_data, shape[1], shape[2])
    arr = mesh_utils.create_hybrid_device_mesh(ici, (dcn_data, 1, 1), devices)
    return Mesh(arr, MESH_AXES, axis_types=auto)
  return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)


# ---- parameter and state placement ------------------------------------------------------------
def param_logical_names(params_state) -> dict:
  """nnx.State of Params -> pure dict of logical axis-name tuples."""
  from flax import nnx
  names = jax.tree.map(lambda v: tuple(v.get_metadata()["out_sharding"]), params_state,
                       is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(names) if isinstance(names, nnx.State) else names


def param_shardings(logical_names: dict, shapes: dict, mesh: Mesh) -> dict:
  """Pure dicts of logical names and shapes -> pure dict of NamedShardings."""
  return jax.tree.map(
      lambda names, x: NamedSharding(mesh, fit_spec(logical_to_spec(names), x.shape, mesh)),
      logical_names, shapes, is_leaf=lambda x: isinstance(x, tuple))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batch dimension over data and fsdp; the rest replicated."""
  return NamedSharding(mesh, logical_to_spec(("activation_batch",)))


def data_parallel_size(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]
