"""Placement: logical axis names -> mesh axes, in one table.

The model names every parameter axis and key activation axis with a logical name
(`models/layers.py`, `models/bert.py`); this module alone decides where each goes on the
(data, fsdp, tensor) mesh. Parameters are sharded ZeRO-3 style over `fsdp` along `embed`, and
tensor-parallel over `tensor` along heads / mlp / vocab; activations are sharded over `data` and
`fsdp` along the batch.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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
    ("layers", None),
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
      raise KeyError(f"logical axis {n!r} has no rule in bert_jax.sharding.LOGICAL_AXIS_RULES")
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


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Sharding constraint by logical names; a no-op outside `activation_sharding`."""
  mesh = _ACTIVE_MESH.get()
  if mesh is None or mesh.size == 1:
    return x
  spec = fit_spec(logical_to_spec(names), x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
