"""Forward multiply-adds and parameters of DiffuSSM-XL and DiT-XL/2 against the papers' figures.

  python -m bench.flops            # JSON in bench/results/ (from shapes: nothing is compiled or run)
  python -m bench.flops --smoke    # tiny models

"GFLOPs" as DiT and DiffuSSM report them are the multiply-adds of the matrix products of one
forward pass at batch 1 (fvcore's count). `matmul_macs` sums every dot_general and
convolution of the model's jaxpr; it gives DiT-XL/2 118.6 G at 256 px and 524.5 G at 512 px,
and `count_params` 675,129,632 parameters (fixed positional embedding included), DiT's own
figures. Beside them: XLA's cost analysis of the same forward (every op, FFTs and elementwise
work included, halved), and for DiffuSSM the linear maps from the paper's per-layer formula
(7.5 L D^2 at M = 2), the part of the matrix products that builds the S4D kernels (complex
Vandermonde products: once per batch, not per image), and the per-layer maps the paper's two
totals imply (`implied_layer_maps`).
"""

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench.common import write_results
from gspn_jax.models import count_params, create_model
from gspn_jax.models.diffussm import layer_linear_macs, layer_linear_params

# (params, forward multiply-adds in G) as the papers state them.
PAPER = {("DiffuSSM-XL", 256): (673e6, 280.0), ("DiT-XL/2", 256): (675e6, 118.6), ("DiT-XL/2", 512): (675e6, 524.6)}


def _abstract_forward(name, latent, **kwargs):
  """(forward function of state and inputs, abstract state, abstract inputs, parameter count) from shapes."""
  abstract = nnx.eval_shape(lambda: create_model(name, input_size=latent, in_channels=4, num_classes=1000,
                                                 rngs=nnx.Rngs(0), **kwargs))
  graphdef, state = nnx.split(abstract)
  x = jax.ShapeDtypeStruct((1, latent, latent, 4), jnp.float32)
  label = jax.ShapeDtypeStruct((1,), jnp.int32)
  return (lambda state, x, t, y: nnx.merge(graphdef, state)(x, t, y)), (state, x, label, label), count_params(abstract)


def dot_macs(jaxpr):
  """(all, complex-valued) multiply-adds of the dot_generals and convolutions in a jaxpr and its sub-jaxprs."""
  total = complex_part = 0
  for eqn in jaxpr.eqns:
    out = eqn.outvars[0].aval
    macs = 0
    if eqn.primitive.name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      macs = int(np.prod(out.shape)) * int(np.prod([lhs[i] for i in contract]))
    elif eqn.primitive.name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
      macs = int(np.prod(out.shape)) * int(np.prod(rhs)) // out_features
    total += macs
    complex_part += macs if jnp.issubdtype(out.dtype, jnp.complexfloating) else 0
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      t, c = dot_macs(sub)
      total, complex_part = total + t, complex_part + c
  return total, complex_part


def forward_counts(name, latent, **kwargs):
  """Parameters, matrix-product multiply-adds (all, complex part) and XLA's multiply-adds of one forward."""
  fn, args, params = _abstract_forward(name, latent, **kwargs)
  macs, complex_macs = dot_macs(jax.make_jaxpr(fn)(*args).jaxpr)
  cost = jax.jit(fn).lower(*args).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {"params": params, "matmul_gmacs": macs / 1e9, "s4d_kernel_gmacs": complex_macs / 1e9,
          "xla_gmacs": cost["flops"] / 2 / 1e9}


def implied_layer_maps(row, width, depth, length, ratio=2):
  """Linear-map weights per layer, in D^2, at the shortened length J = L/M (x) and at the full length L (y)
  that would make this model's other parts plus the maps give the paper's two totals exactly:
  x + y = weights, x J + y L = multiply-adds (the maps' share of each total). Stated: x + y = 13, x J + y L = 7.5 L."""
  d2 = width * width
  weights = (row["paper_params"] - (row["params"] - depth * layer_linear_params(width, ratio))) / (depth * d2)
  macs = (row["paper_gmacs"] * 1e9 - (row["matmul_gmacs"] * 1e9 - depth * layer_linear_macs(width, length, ratio)))
  macs /= depth * d2
  y = (macs - weights * length / ratio) / (length - length / ratio)
  return {"weights_d2": weights, "macs_ld2": macs / length, "at_short_length_d2": weights - y, "at_full_length_d2": y}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny models")
  p.add_argument("--out", default=None, help="JSON path")
  args = p.parse_args(argv)
  if args.smoke:
    models = [("DiffuSSM", dict(hidden_size=32, depth=2, state_size=8), 32, 2),
              ("DiT", dict(hidden_size=32, depth=2, num_heads=2), 32, 2)]
    resolutions = (64,)
  else:
    models = [("DiffuSSM-XL", {}, 1152, 29), ("DiT-XL/2", {}, 1152, 28)]
    resolutions = (256, 512)
  rows = []
  for res in resolutions:
    latent = res // 8
    for name, kw, width, depth in models:
      row = {"model": name, "resolution": res, **forward_counts(name, latent, **kw)}
      if name.startswith("DiffuSSM"):
        row["linear_maps_gmacs"] = depth * layer_linear_macs(width, latent ** 2) / 1e9
      if (name, res) in PAPER:
        row["paper_params"], row["paper_gmacs"] = PAPER[(name, res)]
        row["params_vs_paper"] = row["params"] / row["paper_params"] - 1
        row["matmul_vs_paper"] = row["matmul_gmacs"] / row["paper_gmacs"] - 1
        if name.startswith("DiffuSSM"):
          row["linear_maps_vs_paper"] = row["linear_maps_gmacs"] / row["paper_gmacs"] - 1
          row["implied_by_paper_totals"] = implied_layer_maps(row, width, depth, latent ** 2)
      rows.append(row)
      print(row, file=sys.stderr)
  path = write_results("flops_smoke" if args.smoke else "flops", {"rows": rows}, args.out)
  print(f"wrote {path}")
  return path


if __name__ == "__main__":
  main()
