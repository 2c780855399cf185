"""The training loop: one linear function in banner-commented sections.

train_and_evaluate(config, workdir) trains (resuming automatically from the newest
checkpoint in workdir), writes metrics and EMA sample grids, and on the digits default
ends with the quality report.
"""

import pathlib
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from gspn_jax import config_lib, digits_eval, sampling
from gspn_jax.checkpoint import Checkpointer, save_config, write_json_atomic
from gspn_jax.data import create_train_iterator
from gspn_jax.diffusion import create_diffusion
from gspn_jax.metric_writer import MetricWriter
from gspn_jax.train_state import (build_model, init_state, learning_rate_fn, make_optimizer,
                                  make_train_step, split_model)


def train_and_evaluate(config, workdir):
  config_lib.validate(config)
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0

  # ---- Input -------------------------------------------------------------------------
  data = create_train_iterator(config.data, global_batch_size=config.batch_size, seed=config.seed,
                               process_index=jax.process_index(), process_count=jax.process_count())
  steps_per_epoch = data.steps_per_epoch

  # ---- Model, diffusion, optimizer ------------------------------------------------------
  graphdef, params, rest = split_model(build_model(config))
  diffusion = create_diffusion("", noise_schedule=config.diffusion.schedule,
                               diffusion_steps=config.diffusion.steps)
  lr_fn = learning_rate_fn(config, steps_per_epoch)
  tx = make_optimizer(config, lr_fn)
  state = init_state(params, tx, config.seed)

  # ---- Checkpoint: resume from the newest one in workdir -----------------------------------
  ckpt = Checkpointer(workdir, keep=config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state, data_state = ckpt.restore(jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
    data.set_state(data_state)
  elif is_main:
    save_config(workdir, config)
  step = int(state["step"])

  # ---- Update step ---------------------------------------------------------------------
  train_step = jax.jit(make_train_step(graphdef, rest, diffusion, tx, lr_fn, config.ema_decay),
                       donate_argnums=0)

  # ---- Loop ----------------------------------------------------------------------------
  writer = MetricWriter(workdir, total_steps=config.num_steps, initial_step=step, enabled=is_main)
  grid = _grid_sampler(config, graphdef, rest, writer)
  if step:
    writer.log(f"resumed from step {step} in {ckpt.directory}")
  writer.log(f"{config.model.name}: {sum(x.size for x in jax.tree.leaves(params)):,} parameters, "
             f"{steps_per_epoch} steps per epoch, global batch {config.batch_size}")
  pending, tick, tick_step = None, time.time(), step
  while step < config.num_steps:
    state, metrics = train_step(state, next(data))
    step += 1
    if pending is not None:  # checked one step late, so the host never stalls the device
      _check_finite(*pending, ckpt)
    pending = (step, metrics)
    writer.advance()
    if step % config.log_every == 0 or step == config.num_steps:
      elapsed = time.time() - tick
      rate = (step - tick_step) / elapsed
      writer.write(step, {**jax.device_get(metrics), "steps_per_sec": rate,
                          "images_per_sec": rate * config.batch_size, "epoch": step / steps_per_epoch})
      tick, tick_step = time.time(), step
    if step % config.ckpt_every == 0 or step == config.num_steps:
      _check_finite(*pending, ckpt)
      ckpt.save(step, state, data.get_state())
    if grid and config.sample_every and step % config.sample_every == 0:
      _write_grid(grid, state["ema"], config, workdir, step, writer)
  ckpt.wait()
  writer.end_progress()
  if grid and not (config.sample_every and step % config.sample_every == 0):
    _write_grid(grid, state["ema"], config, workdir, step, writer)  # the final state's grid

  # ---- Evaluation ----------------------------------------------------------------------
  report = None
  if config.eval.enabled and is_main:
    report = evaluate_digits(config, graphdef, rest, state["ema"])
    write_json_atomic(workdir / "eval.json", {"step": step, **report})
    writer.log(digits_eval.format_report(report, config.sample.cfg_scale))
  writer.close()
  ckpt.close()
  return state, report


def _check_finite(step, metrics, ckpt):
  loss = float(metrics["loss"])
  if not np.isfinite(loss):
    raise FloatingPointError(
        f"non-finite loss ({loss}) at step {step}: lower config.optim.lr, set config.optim.grad_clip, "
        f"or train in float32; the newest good checkpoint is step {ckpt.latest_step()}")


def _grid_sampler(config, graphdef, rest, writer):
  """(sampler, decoder) for the periodic EMA grid; None where samples cannot be decoded
  (a latent run whose VAE is not at hand: training goes on without grids)."""
  from gspn_jax.generate import decoder_for

  try:
    decode = decoder_for(config)
  except (FileNotFoundError, ImportError, OSError) as e:
    writer.log(f"no sample grids: {e}")
    return None
  return sampling.make_sampler(graphdef, rest, **sampler_kwargs(config)), decode


def sampler_kwargs(config):
  s = config.sample
  return dict(image_shape=(config.data.image_size, config.data.image_size, config.data.channels),
              num_classes=config.data.num_classes, num_sampling_steps=s.num_sampling_steps,
              sampler=s.sampler, cfg_scale=s.cfg_scale, cfg_channels=s.cfg_channels,
              diffusion_steps=config.diffusion.steps)


def _write_grid(grid, ema, config, workdir, step, writer):
  sample_fn, decode = grid
  labels = np.tile(np.asarray(config.sample.grid_classes), config.sample.grid_per_class)  # a class per column
  images = sampling.to_uint8(decode(sample_fn(ema, jax.numpy.asarray(labels), jax.random.key(config.seed))))
  if jax.process_index() == 0:
    image = sampling.make_grid(images, nrow=len(config.sample.grid_classes))
    sampling.save_png(image, workdir / "samples" / f"step_{step:08d}.png", upscale=8 if images.shape[1] < 64 else 1)
    writer.add_image("ema_samples", step, image)


def evaluate_digits(config, graphdef, rest, ema):
  """Class-conditional samples of every class, judged by the digit classifier."""
  sample_fn = sampling.make_sampler(graphdef, rest, **sampler_kwargs(config))
  labels = np.repeat(np.arange(config.data.num_classes), config.eval.samples_per_class)
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  samples = sampling.sample_in_batches(sample_fn, ema, labels, key, batch_size=500)
  return digits_eval.evaluate_samples(samples, labels)
