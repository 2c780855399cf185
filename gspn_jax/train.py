"""The training loop: one linear function in banner-commented sections.

train_and_evaluate(config, workdir) trains on a (data, fsdp) device mesh over every
host, resuming automatically from the newest checkpoint in workdir; writes metrics and
EMA sample grids from process 0; stops cleanly on SIGTERM with a checkpoint; and on the
digits default ends with the quality report.
"""

import contextlib
import pathlib
import time

import jax
import numpy as np
from flax import nnx

from gspn_jax import config_lib, digits_eval, sampling, sharding, validation
from gspn_jax.checkpoint import Checkpointer, save_config, warn, write_json_atomic
from gspn_jax.data import create_train_iterator
from gspn_jax.distributed import Preemption
from gspn_jax.errors import RunError, UsageError
from gspn_jax.metric_writer import MetricWriter
from gspn_jax.train_state import (build_model, init_state, learning_rate_fn, make_optimizer,
                                  make_train_step, split_model)
from gspn_jax.transport import create_objective
from gspn_jax.transport import sampling as objective_sampling


def train_and_evaluate(config, workdir):
  try:
    config_lib.validate(config)
  except ValueError as e:
    raise UsageError(str(e)) from e
  mesh = sharding.make_mesh(config.mesh)
  for message in validation.check_run(config, mesh.size):
    if jax.process_index() == 0:
      warn(message)
  ckpt = Checkpointer(workdir, keep=config.keep_checkpoints)
  # An exception waits for the save in flight (it would be lost half-written), then propagates.
  with jax.set_mesh(mesh), ckpt.finishing():  # activations' sharding constraints resolve against the mesh
    return _train_and_evaluate(config, pathlib.Path(workdir), mesh, ckpt)


def _train_and_evaluate(config, workdir, mesh, ckpt):
  is_main = jax.process_index() == 0

  # ---- Input -------------------------------------------------------------------------
  data = create_train_iterator(config.data, global_batch_size=config.batch_size, seed=config.seed,
                               process_index=jax.process_index(), process_count=jax.process_count())
  steps_per_epoch = data.steps_per_epoch

  # ---- Model, objective (DDPM diffusion or flow transport), optimizer -----------------------
  diffusion = create_objective(config)
  lr_fn = learning_rate_fn(config, steps_per_epoch)
  tx = make_optimizer(config, lr_fn)

  # ---- Sharding: shapes from eval_shape, parameters/EMA/optimizer state sharded alike ------
  graphdef, state, rest, state_sharding, abstract_state = init_sharded(config, mesh, tx)

  # ---- Checkpoint: resume from the newest good one in workdir (any device count) -------------
  if ckpt.steps():
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract_state, state_sharding)
    state, data_state, _ = ckpt.restore(target, move_damaged=True)
    data.set_state(data_state)
  step = int(state["step"])
  if is_main:
    save_config(workdir, config, step)

  # ---- Update step ---------------------------------------------------------------------
  train_step = jit_train_step(config, mesh, graphdef, rest, diffusion, tx, lr_fn, state_sharding)

  # ---- Loop ----------------------------------------------------------------------------
  writer = MetricWriter(workdir, total_steps=config.num_steps, initial_step=step, enabled=is_main)
  grid = _grid_sampler(config, graphdef, rest, writer)
  if step:
    writer.log(f"resumed from step {step} in {ckpt.directory}")
  num_params = sum(x.size for x in jax.tree.leaves(abstract_state["params"]))
  writer.log(f"{config.model.name}: {num_params:,} parameters, {steps_per_epoch} steps per epoch, global batch "
             f"{config.batch_size} on {jax.process_count()} process(es), mesh {dict(mesh.shape)}")
  pending, tick, tick_step = None, time.time(), step
  with Preemption() as preemption:
    while step < config.num_steps:
      state, metrics = train_step(state, sharding.global_batch(next(data), mesh))
      step += 1
      if pending is not None:  # checked one step late, so the host never stalls the device
        _check_finite(*pending, ckpt)
      pending = (step, metrics)
      writer.advance()
      if step % config.log_every == 0 or step == config.num_steps:
        rate = (step - tick_step) / (time.time() - tick)
        writer.write(step, {**jax.device_get(metrics), "steps_per_sec": rate,
                            "images_per_sec": rate * config.batch_size, "epoch": step / steps_per_epoch})
        tick, tick_step = time.time(), step
      stop = preemption.should_stop()
      if stop or step % config.ckpt_every == 0 or step == config.num_steps:
        _check_finite(*pending, ckpt)
        ckpt.save(step, state, data.get_state())
      if stop:
        ckpt.wait()
        writer.log(f"stopped by a signal after step {step}; checkpoint saved, rerun the same command to resume")
        writer.close()
        return state, None
      if grid and config.sample_every and step % config.sample_every == 0:
        _write_grid(grid, state["ema"], config, workdir, step, writer)
  ckpt.wait()
  writer.end_progress()
  if grid and config.sample_every and step % config.sample_every:
    _write_grid(grid, state["ema"], config, workdir, step, writer)  # the final state's grid

  # ---- Evaluation ----------------------------------------------------------------------
  report = None
  if config.eval.enabled:
    report = evaluate_digits(config, graphdef, rest, state["ema"])
    if is_main:
      write_json_atomic(workdir / "eval.json", {"step": step, **report})
      writer.log(digits_eval.format_report(report, config.sample.cfg_scale))
      writer.log(f"wrote {workdir / 'eval.json'}")
  if is_main:
    writer.log(f"done: {step} steps in {workdir} (checkpoint {ckpt.directory / str(ckpt.latest_step())}, "
               f"metrics.jsonl{', samples/' if grid and config.sample_every else ''}"
               f"{', eval.json' if report else ''})")
  writer.close()
  return state, report


def init_sharded(config, mesh, tx):
  """(graphdef, state, fixed variables, state sharding, abstract state): the train state
  initialised under jit straight into its shards (nothing is built whole on one device)."""
  table = sharding.rules(fsdp=mesh.shape["fsdp"] > 1)

  def init_fn():
    _, params, rest = split_model(build_model(config))
    return init_state(params, tx, config.seed), rest

  graphdef = split_model(nnx.eval_shape(lambda: build_model(config)))[0]
  abstract_state, abstract_rest = jax.eval_shape(init_fn)
  state_sharding = state_shardings(abstract_state, mesh, table)
  rest_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), abstract_rest)
  state, rest = jax.jit(init_fn, out_shardings=(state_sharding, rest_sharding))()
  return graphdef, state, rest, state_sharding, abstract_state


def jit_train_step(config, mesh, graphdef, rest, diffusion, tx, lr_fn, state_sharding):
  """The update step jitted with the state's and the batch's shardings, state donated."""
  batch_sharding = {"image": sharding.batch_sharding(mesh, 4), "label": sharding.batch_sharding(mesh, 1)}
  step = make_train_step(graphdef, rest, diffusion, tx, lr_fn, config.ema_decay, config.grad_accum_steps)
  return jax.jit(step, in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=0)


def state_shardings(abstract_state, mesh, table):
  """Parameters, EMA and optimizer state by the rules table; step and PRNG key replicated."""
  sh = {k: sharding.tree_shardings(abstract_state[k], mesh, table) for k in ("params", "ema", "opt_state")}
  return {**sh, "step": sharding.replicated(mesh), "rng": sharding.replicated(mesh)}


def _check_finite(step, metrics, ckpt):
  loss = float(metrics["loss"])
  if not np.isfinite(loss):
    ckpt.wait()  # the message names a checkpoint that is on disk, complete
    good = ckpt.latest_step()
    where = f"the run resumes from {ckpt.directory / str(good)}" if good is not None else "no checkpoint yet"
    raise RunError(f"non-finite loss ({loss}) at step {step}: lower config.optim.lr, set config.optim.grad_clip, "
                   f"or train in float32; {where}")


def _grid_sampler(config, graphdef, rest, writer):
  """(sampler, decoder) for the periodic EMA grid; None where samples cannot be decoded
  (a latent run whose VAE is not at hand: training goes on without grids)."""
  from gspn_jax.generate import decoder_for

  try:
    decode = decoder_for(config)
  except (FileNotFoundError, ImportError, OSError) as e:
    writer.log(f"no sample grids: {e}")
    return None
  return objective_sampling.make_sampler(graphdef, rest, **sampler_kwargs(config)), decode


def sampler_kwargs(config):
  s = config.sample
  return dict(image_shape=(config.data.image_size, config.data.image_size, config.data.channels),
              num_classes=config.data.num_classes, num_sampling_steps=s.num_sampling_steps,
              sampler=s.sampler, cfg_scale=s.cfg_scale, cfg_channels=s.cfg_channels,
              diffusion_steps=config.diffusion.steps, **objective_sampling.objective_kwargs(config))


def _write_grid(grid, ema, config, workdir, step, writer):
  """Sampled on every process (the parameters span them all), written by process 0."""
  sample_fn, decode = grid
  labels = np.tile(np.asarray(config.sample.grid_classes), config.sample.grid_per_class)  # a class per column
  # DDPM/DDIM samplers report their steps; the flow and DPM-Solver++ loops have no bar
  with (sample_fn.reporting(f"sample grid at step {step}") if isinstance(sample_fn, sampling.Sampler)
        else contextlib.nullcontext()):
    samples = sampling.to_host(sample_fn(ema, jax.numpy.asarray(labels), jax.random.key(config.seed)))
  images = sampling.to_uint8(decode(samples))
  if jax.process_index() == 0:
    image = sampling.make_grid(images, nrow=len(config.sample.grid_classes))
    path = workdir / "samples" / f"step_{step:08d}.png"
    sampling.save_png(image, path, upscale=8 if images.shape[1] < 64 else 1)
    writer.log(f"wrote {path}")
    writer.add_image("ema_samples", step, image)


def evaluate_digits(config, graphdef, rest, ema):
  """Class-conditional samples of every class, judged by the digit classifier."""
  sample_fn = objective_sampling.make_sampler(graphdef, rest, **sampler_kwargs(config))
  labels = np.repeat(np.arange(config.data.num_classes), config.eval.samples_per_class)
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  samples = sampling.sample_in_batches(sample_fn, ema, labels, key, batch_size=500, desc="evaluation samples")
  return {**digits_eval.evaluate_samples(samples, labels), "objective": objective_sampling.objective_of(config),
          "sampler": config.sample.sampler, "sampling_steps": str(config.sample.num_sampling_steps)}
