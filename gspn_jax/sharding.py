"""Sharding by name: a device mesh from the config, logical axis names, a rules table.

Every parameter gets logical axis names from its role (a Linear kernel is
("embed_in", "embed_out"), a Conv kernel (None, None, "embed_in", "embed_out"), an
embedding table ("vocab", "embed"), a bias or norm scale ("embed_out",)); activations
are ("batch", ...) (models/layers.py shard_batch). A rules table maps logical names to mesh axes:

  replicated data parallelism  batch -> (data, fsdp); parameters replicated
  FSDP (config.mesh.fsdp > 1)  additionally embed_out -> fsdp (embed_in where embed_out
                               does not divide), so parameters, EMA and optimizer state
                               are split over the fsdp axis

H and W are never sharded: GSPN scans and convolutions see whole images per shard.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp")


def make_mesh(mesh_config, devices=None):
  """A (data, fsdp) mesh; one size may be -1 for "all remaining devices"."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  sizes = {"data": int(mesh_config.data), "fsdp": int(mesh_config.fsdp)}
  free = [k for k, v in sizes.items() if v == -1]
  if len(free) > 1:
    raise ValueError("config.mesh: at most one of data, fsdp may be -1")
  fixed = int(np.prod([v for v in sizes.values() if v != -1]))
  if free:
    if devices.size % fixed:
      raise ValueError(f"config.mesh: {devices.size} devices are not divisible by {fixed}")
    sizes[free[0]] = devices.size // fixed
  if sizes["data"] * sizes["fsdp"] != devices.size:
    raise ValueError(f"config.mesh data={sizes['data']} x fsdp={sizes['fsdp']} does not use the "
                     f"{devices.size} devices; set one of them to -1")
  return Mesh(devices.reshape(sizes["data"], sizes["fsdp"]), MESH_AXES)


def logical_axes(path, shape):
  """Logical axis names of a parameter, from its role (its name and rank)."""
  leaf = str(path[-1])
  if leaf == "embedding":
    return ("vocab", "embed")  # small: replicated, so label lookups stay local
  if leaf == "kernel" and len(shape) == 2:
    return ("embed_in", "embed_out")
  if leaf == "kernel" and len(shape) == 4:
    return (None, None, "embed_in", "embed_out")
  if len(shape) == 1:
    return ("embed_out",)
  return (None,) * len(shape)  # fixed positional embeddings, the 4 merge weights


def rules(fsdp):
  """The logical -> mesh axis table."""
  table = {"batch": ("data", "fsdp")}
  if fsdp:
    table.update(embed_out="fsdp", embed_in="fsdp")
  return table


def param_spec(path, shape, mesh, table):
  """PartitionSpec of one parameter: the first logical axis (embed_out before embed_in)
  whose mapped mesh size divides the dimension; everything else replicated."""
  names = logical_axes(path, shape)
  spec = [None] * len(shape)
  for preferred in ("embed_out", "embed_in"):
    if preferred in names and table.get(preferred):
      dim = names.index(preferred)
      if shape[dim] % mesh.shape[table[preferred]] == 0:
        spec[dim] = table[preferred]
        break
  return P(*spec)


def tree_shardings(tree, mesh, table):
  """NamedShardings for a pytree of parameter-shaped leaves (params, EMA, Adam moments)."""
  def one(path, leaf):
    keys = [getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path]
    return NamedSharding(mesh, param_spec(keys, leaf.shape, mesh, table))
  return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh, ndim):
  """Examples split over every mesh axis; the rest of each array whole."""
  return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh):
  return NamedSharding(mesh, P())


def global_batch(local_batch, mesh):
  """This process's slice of the global batch -> global jax.Arrays sharded over the mesh."""
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), np.asarray(v))
          for k, v in local_batch.items()}
