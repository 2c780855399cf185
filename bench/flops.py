"""Forward FLOPs of DiffuSSM-XL and DiT-XL/2 at 256 and 512 px against the papers' figures.

  python -m bench.flops            # JSON in bench/results/ (the count needs no device: nothing is compiled)
  python -m bench.flops --smoke    # tiny models

The count is XLA's cost analysis of one forward pass at batch 1, lowered from parameter
shapes alone (jax.eval_shape), reported as multiply-adds ("GFLOPs" as DiT and DiffuSSM
count them: DiT-XL/2's 118.6 at 256 px). Beside it, DiffuSSM's linear maps alone from the
paper's per-layer formula (7.5 L D^2 at M = 2), which excludes the S4D kernels, the FFTs
and the elementwise work that XLA also counts.
"""

import argparse
import sys

import jax
import jax.numpy as jnp
from flax import nnx

from bench.common import write_results
from gspn_jax.models import create_model
from gspn_jax.models.diffussm import layer_linear_macs

PAPER_GMACS = {("DiffuSSM-XL", 256): 280.0, ("DiT-XL/2", 256): 118.6, ("DiT-XL/2", 512): 524.6}


def forward_macs(name, latent, **kwargs):
  """Multiply-adds of model(x, t, y) at batch 1 (XLA's flop count / 2), from shapes only."""
  abstract = nnx.eval_shape(lambda: create_model(name, input_size=latent, in_channels=4, num_classes=1000,
                                                 rngs=nnx.Rngs(0), **kwargs))
  graphdef, state = nnx.split(abstract)
  fn = jax.jit(lambda state, x, t, y: nnx.merge(graphdef, state)(x, t, y))
  x = jax.ShapeDtypeStruct((1, latent, latent, 4), jnp.float32)
  label = jax.ShapeDtypeStruct((1,), jnp.int32)
  cost = fn.lower(state, x, label, label).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost["flops"] / 2


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny models")
  p.add_argument("--out", default=None, help="JSON path")
  args = p.parse_args(argv)
  if args.smoke:
    models = [("DiffuSSM", dict(hidden_size=32, depth=2, state_size=8), 32, 2), ("DiT", dict(hidden_size=32, depth=2,
                                                                                              num_heads=2), 32, 2)]
    resolutions = (64,)
  else:
    models = [("DiffuSSM-XL", {}, 1152, 29), ("DiT-XL/2", {}, 1152, 28)]
    resolutions = (256, 512)
  rows = []
  for res in resolutions:
    latent = res // 8
    for name, kw, width, depth in models:
      row = {"model": name, "resolution": res, "xla_gmacs": forward_macs(name, latent, **kw) / 1e9,
             "paper_gmacs": PAPER_GMACS.get((name, res))}
      if name.startswith("DiffuSSM"):
        row["linear_maps_gmacs"] = depth * layer_linear_macs(width, latent ** 2) / 1e9
      if row["paper_gmacs"]:
        row["xla_vs_paper"] = row["xla_gmacs"] / row["paper_gmacs"] - 1
      rows.append(row)
      print(row, file=sys.stderr)
  path = write_results("flops_smoke" if args.smoke else "flops", {"rows": rows}, args.out)
  print(f"wrote {path}")
  return path


if __name__ == "__main__":
  main()
