"""PNG plots of the benchmarks' results, for the README."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save(fig, path, dpi=100):
  """Lays the figure out, writes it and frees it; returns the path."""
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


def _lines(ax, rows, x, y, by):
  for key in sorted({r[by] for r in rows}):
    pts = [(r[x], r[y]) for r in rows if r[by] == key and r.get(y) is not None]
    if pts:
      ax.plot(*zip(*pts), marker="o", label=key)


def plot_compare(payload, stem, device):
  models, layer = payload["models"], payload["layer"]
  paths = []
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for ax, (key, title) in zip(axes, (("train_images_per_sec", "training (images/s)"),
                                     ("sample_images_per_sec", f"{payload['sampling_steps']}-step CFG sampling (images/s)"),
                                     ("train_memory_bytes", "training step memory (bytes)"))):
    _lines(ax, models, "resolution", key, "model")
    ax.set_xlabel("resolution (px)")
    ax.set_title(title)
    ax.set_yscale("log")
    ax.legend()
  fig.suptitle(f"{' vs '.join(sorted({r['model'] for r in models}))} on {device}")
  paths.append(save(fig, f"{stem}_models.png"))

  fig, ax = plt.subplots(figsize=(7, 4.5))
  for key in [k for k in layer[0] if k.endswith("_ms")]:
    pts = [(r["tokens"], r[key]) for r in layer if r.get(key) is not None]
    if pts:
      ax.plot(*zip(*pts), marker="o", label=key[:-3])
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("tokens (side^2)")
  ax.set_ylabel("ms")
  ax.set_title(f"one layer, {layer[0]['channels']} channels, on {device}")
  ax.legend()
  paths.append(save(fig, f"{stem}_layer.png"))
  return paths


def plot_equal_compute(summary, path, device):
  """Conditional accuracy and feature FID against training FLOPs: a colour per model, a
  line style per size (each model at its best lr, the mean over its seeds)."""
  colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(s["model"] for s in summary))}
  styles = {z: st for z, st in zip(dict.fromkeys(s["size"] for s in summary), ("-", "--", ":", "-."))}
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
  for ax, key, title in ((axes[0], "accuracy", "conditional accuracy"), (axes[1], "fid", "classifier-feature FID")):
    for s in summary:
      pts = [(p["train_flops"], p[key]) for p in s["curve"]]
      ax.plot(*zip(*pts), marker="o", color=colours[s["model"]], linestyle=styles[s["size"]],
              label=f"{s['size']} {s['model']} (lr {s['best_lr']:g})")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_title(title)
  axes[0].axhline(0.1, color="grey", linewidth=0.8, label="chance (10 classes)")
  axes[1].set_yscale("log")
  axes[0].legend(fontsize=7)
  fig.suptitle(f"GSPN vs DiT at equal training FLOPs on the digits ({device})")
  return save(fig, path)


def plot_stability(rows, path, device):
  """bench.stability's curves: a colour per (size, model, variant), a line style per lr; block
  statistics are the maximum over blocks (GSPN-only panels stay empty for DiT)."""
  runs = list(dict.fromkeys((r["size"], r["model"]) for r in rows))
  colours = {k: f"C{i}" for i, k in enumerate(runs)}
  styles = {lr: st for lr, st in zip(sorted({r["lr"] for r in rows}), ("-", "--", ":", "-."))}
  panels = (("loss", "training loss (10-step mean)"), ("grad_norm", "gradient norm (before clipping)"),
            ("update_ratio", "max update / parameter norm over groups"), ("residual", "residual stream rms"),
            ("pre_square", "GSPN: squared-ReLU input rms"), ("gate_logit", "GSPN: gate logit rms"),
            ("h", "GSPN: propagated state h rms"), ("core_gain", "GSPN: core output / input rms"))
  fig, axes = plt.subplots(2, 4, figsize=(20, 8))
  for ax, (key, title) in zip(axes.flat, panels):
    for r in rows:
      kw = dict(color=colours[(r["size"], r["model"])], linestyle=styles[r["lr"]], linewidth=1,
                label=f"{r['size']} {r['model']} lr {r['lr']:g}")
      if key == "loss":
        mean = [sum(r[key][i:i + 10]) / len(r[key][i:i + 10]) for i in range(0, len(r[key]), 10)]
        ax.plot(range(10, 10 * len(mean) + 1, 10), mean, **kw)
      elif key == "grad_norm":
        ax.plot(range(1, len(r[key]) + 1), r[key], **kw)
      elif key == "update_ratio":
        pts = [(p["step"], max(g["update_ratio"] for g in p["groups"].values())) for p in r["points"] if "groups" in p]
        ax.plot(*zip(*pts), **kw)
      elif key in r["points"][0]["blocks"][0]:
        ax.plot([p["step"] for p in r["points"]], [max(b[key] for b in p["blocks"]) for p in r["points"]], **kw)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title)
  axes[0, 0].legend(fontsize=6)
  fig.suptitle(f"training stability on the digits ({device})")
  return save(fig, path)
