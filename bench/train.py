"""Training throughput and memory per device: GSPN-XL/2 and DiT-XL/2 at 256 px latents.

  python -m bench.train            # on a GPU: JSON in bench/results/train_<device>.json
  python -m bench.train --smoke    # anywhere: tiny models at batch 2, fp32, 8x8 latents

For each model, bf16 compute with remat off and on: the largest power-of-two batch that
fits one device, its images/s and the memory XLA plans for one step (arguments,
non-donated outputs and temporaries).
"""

import argparse
import sys

from bench.common import write_results
from bench.throughput import largest_batch, train_throughput


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="small models and batches (runs on a CPU)")
  p.add_argument("--out", default=None, help="JSON path")
  args = p.parse_args(argv)
  if args.smoke:
    models = [("GSPN-tiny", "GSPN", dict(hidden_size=32, depth=2, patch_size=2)),
              ("DiT-tiny", "DiT", dict(hidden_size=32, depth=2, num_heads=2, patch_size=2))]
  else:
    models = [("GSPN-XL/2", "GSPN-XL/2", {}), ("DiT-XL/2", "DiT-XL/2", {})]
  latent = 8 if args.smoke else 32  # 4x4 tokens keep the smoke compiles short
  rows = []
  for label, name, kwargs in models:
    for remat in (False, True):
      if args.smoke:
        found = (2, train_throughput(name, latent, 2, dtype="float32", remat=remat, iters=1, **kwargs))
      else:
        found = largest_batch(train_throughput, start=8, name=name, latent=latent, dtype="bfloat16", remat=remat,
                              **kwargs)
      row = {"model": label, "latent": latent, "remat": remat, "dtype": "float32" if args.smoke else "bfloat16"}
      if found is None:
        row["error"] = "batch 8 does not fit"
      else:
        batch, result = found
        row.update(batch=batch, **result)
      rows.append(row)
      print(row, file=sys.stderr)
  path = write_results("train_smoke" if args.smoke else "train", {"rows": rows}, args.out)
  print(f"wrote {path}")
  return path


if __name__ == "__main__":
  main()
