"""Model, optimizer and the jitted update step.

The train state is one pytree of plain dicts and arrays:
  {"params", "ema", "opt_state", "step", "rng"}
and the input iterator's position is checkpointed beside it. Parameters are fp32 pure
dicts (nnx.to_pure_dict); the module structure (graphdef) and fixed, non-trained
variables (DiT's positional embedding) are rebuilt from the config.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gspn_jax.models import create_model
from gspn_jax.validation import model_kwargs

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_model(config, rngs=None):
  """The configured model; sizes come from the data config (input size, channels, classes);
  options the model family does not take are left out (see validation.model_kwargs)."""
  extra = dict(input_size=config.data.image_size, in_channels=config.data.channels,
               num_classes=config.data.num_classes, dtype=DTYPES[config.compute_dtype], remat=config.remat)
  if config.get("objective", "ddpm") == "flow":
    extra["learn_sigma"] = False  # a flow model predicts one field: out channels = in channels
  name, kwargs, _ = model_kwargs(config.model, extra)
  return create_model(name, rngs=rngs or nnx.Rngs(config.seed), **kwargs)


def split_model(model):
  """(graphdef, params as a pure dict, the non-trained variables)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return graphdef, nnx.to_pure_dict(params), rest


def learning_rate_fn(config, steps_per_epoch):
  o = config.optim
  if o.schedule == "constant":
    warmup = int(o.warmup_epochs * steps_per_epoch)
    if warmup == 0:
      return optax.constant_schedule(o.lr)
    return optax.join_schedules([optax.linear_schedule(0.0, o.lr, warmup), optax.constant_schedule(o.lr)],
                                [warmup])
  # Linear warm-up, then a half cosine from lr down to min_lr at decay_epochs.
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=o.lr, warmup_steps=int(o.warmup_epochs * steps_per_epoch),
      decay_steps=max(int(o.decay_epochs * steps_per_epoch), 1), end_value=o.min_lr)


def make_optimizer(config, lr_fn):
  o = config.optim
  adamw = optax.adamw(lr_fn, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)
  return optax.chain(optax.clip_by_global_norm(o.grad_clip), adamw) if o.grad_clip > 0 else adamw


def init_state(params, tx, seed):
  """EMA starts as a copy of the parameters (DiT: update_ema(ema, model, decay=0))."""
  return {
      "params": params,
      "ema": jax.tree.map(jnp.copy, params),
      "opt_state": tx.init(params),
      "step": jnp.zeros((), jnp.int32),
      "rng": jax.random.key_data(jax.random.key(seed)),
  }


def accumulate_grads(loss_and_grads, params, batch, key, k):
  """(terms, grads) averaged over k micro-batches; micro-batch i holds the examples
  j with j % k == i (so each stays spread over every device) and draws its randomness
  from fold_in(key, i). Accumulated in fp32."""
  if k == 1:
    return loss_and_grads(params, batch, jax.random.fold_in(key, 0))
  micro = jax.tree.map(lambda a: jnp.swapaxes(a.reshape((a.shape[0] // k, k) + a.shape[1:]), 0, 1), batch)

  def step(carry, inputs):
    i, mb = inputs
    out = loss_and_grads(params, mb, jax.random.fold_in(key, i))
    return jax.tree.map(lambda c, o: c + o.astype(jnp.float32) / k, carry, out), None

  shapes = jax.eval_shape(loss_and_grads, params, jax.tree.map(lambda a: a[0], micro), key)
  init = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)
  return jax.lax.scan(step, init, (jnp.arange(k), micro))[0]


def make_loss_and_grads(graphdef, rest, diffusion):
  """loss_and_grads(params, batch, key) -> (batch-mean loss terms, grads): the training
  objective (timesteps, noise and the model's own randomness all drawn from key)."""

  def loss_and_grads(params, batch, key):
    k_t, k_noise, k_model = jax.random.split(key, 3)
    x, y = batch["image"], batch["label"]
    t = diffusion.sample_timesteps(k_t, x.shape[0])

    def loss_fn(params):
      model = nnx.merge(graphdef, params, rest)
      terms = diffusion.training_losses(lambda xt, tt: model(xt, tt, y, key=k_model), x, t, key=k_noise)
      return jnp.mean(terms["loss"]), {k: jnp.mean(v) for k, v in terms.items()}

    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return terms, grads

  return loss_and_grads


def make_train_step(graphdef, rest, diffusion, tx, lr_fn, ema_decay, grad_accum_steps=1):
  """train_step(state, batch) -> (state, metrics); batch = {"image": NHWC, "label": (B,)};
  diffusion: the objective (GaussianDiffusion or transport.Transport);
  grad_accum_steps micro-batches per optimizer update (see accumulate_grads)."""
  loss_and_grads = make_loss_and_grads(graphdef, rest, diffusion)

  def train_step(state, batch):
    key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    terms, grads = accumulate_grads(loss_and_grads, state["params"], batch, key, grad_accum_steps)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ema = jax.tree.map(lambda e, p: e * ema_decay + p * (1 - ema_decay), state["ema"], params)
    metrics = {
        **terms,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "update_norm": optax.tree.norm(updates),
        "lr": lr_fn(state["step"]),
    }
    new_state = {**state, "params": params, "ema": ema, "opt_state": opt_state, "step": state["step"] + 1}
    return new_state, metrics

  return train_step
