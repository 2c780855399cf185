"""Class-conditional sampling of flow models, and the one sampler dispatch for every objective.

A run's config names its objective ("ddpm" or "flow", absent = "ddpm"); each sampler
belongs to one objective and `check_sampler` refuses the others in one line before any
work. Guidance follows DiT's forward_with_cfg (the batch [z; z] with labels [y; null],
guidance on the first cfg_channels output channels), optionally only for t inside a
guidance interval (Kynkaanniemi et al. 2024), here in SiT's time (t = 1 is data).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from gspn_jax.errors import UsageError
from gspn_jax.transport.integrators import dopri5, euler_maruyama, ode_fixed
from gspn_jax.transport.path import expand_t_like_x
from gspn_jax.transport.transport import Transport

FLOW_SAMPLERS = ("euler", "heun", "dopri5", "sde")
DDPM_SAMPLERS = ("ddpm", "ddim", "dpm++", "sde-dpm++")
DPM_SAMPLERS = {"dpm++": "dpmsolver++", "sde-dpm++": "sde-dpmsolver++"}  # sampler -> DPM-Solver++ algorithm
OBJECTIVES = {"ddpm": DDPM_SAMPLERS, "flow": FLOW_SAMPLERS}
LAST_STEPS = (None, "Mean", "Tweedie", "Euler")


def objective_of(config):
  """A run's objective; runs stored before flow existed are DDPM runs."""
  return config.get("objective", "ddpm")


def check_sampler(objective, sampler, flag="--sampler"):
  if objective not in OBJECTIVES:
    raise ValueError(f"objective {objective!r}; use one of {sorted(OBJECTIVES)}")
  if sampler not in OBJECTIVES[objective]:
    raise UsageError(f"sampler {sampler!r} cannot sample a model trained with objective {objective!r}; "
                     f"use {flag} {'|'.join(OBJECTIVES[objective])}")


def create_transport(config):
  """The Transport of a run's config (config.transport)."""
  t = config.transport
  eps = lambda v: None if v < 0 else v  # negative: SiT's default for the prediction
  return Transport(path_type=t.path_type, prediction=t.prediction, loss_weight=t.loss_weight or None,
                   train_eps=eps(t.train_eps), sample_eps=eps(t.sample_eps), time_sampling=t.time_sampling,
                   logit_mean=t.logit_mean, logit_std=t.logit_std, cosine_weight=t.cosine_weight)


def guided_model(model, labels, *, num_classes, cfg_scale, cfg_channels, interval=None):
  """model(x, t) for a batch x of len(labels); guided when cfg_scale > 1, within the interval."""
  if cfg_scale <= 1.0:
    return lambda x, t: model(x, t, labels)
  y = jnp.concatenate([labels, jnp.full_like(labels, num_classes)])

  def fn(x, t):
    cond, uncond = jnp.split(model(jnp.concatenate([x, x]), jnp.concatenate([t, t]), y), 2)
    c = cfg_channels
    guided = jnp.concatenate([uncond[..., :c] + cfg_scale * (cond[..., :c] - uncond[..., :c]), cond[..., c:]], -1)
    if interval is None:
      return guided
    inside = (t >= interval[0]) & (t <= interval[1])
    return jnp.where(expand_t_like_x(inside, x), guided, cond)

  return fn


def flow_sample(transport, model_fn, x, key, *, sampler, num_steps, atol=1e-6, rtol=1e-3, diffusion_form="sigma",
                diffusion_norm=1.0, last_step="Mean", last_step_size=0.04):
  """Integrates noise x (t = 0) to data (t = 1). num_steps: steps for euler/heun (Heun
  evaluates twice a step), evaluations for sde (SiT's count, last step included);
  ignored by dopri5. Returns (samples, model evaluations)."""
  velocity = lambda x, t: transport.velocity(model_fn(x, t), x, t)
  if sampler in ("euler", "heun", "dopri5"):
    t0, t1 = transport.interval(eval=True)
    if sampler == "dopri5":
      return dopri5(velocity, x, t0, t1, atol=atol, rtol=rtol)
    return ode_fixed(velocity, x, t0, t1, num_steps, sampler)
  if sampler != "sde":
    raise ValueError(f"flow sampler {sampler!r}; use one of {FLOW_SAMPLERS}")
  if last_step not in LAST_STEPS:
    raise ValueError(f"last_step={last_step!r}; use one of {LAST_STEPS}")
  last_step_size = 0.0 if last_step is None else last_step_size
  t0, t1 = transport.interval(sde=True, eval=True, diffusion_form=diffusion_form, last_step_size=last_step_size)
  x, nfe = euler_maruyama(*sde_terms(transport, model_fn, diffusion_form, diffusion_norm), x, key, t0, t1, num_steps)
  return last_step_fn(transport, model_fn, last_step, last_step_size, diffusion_form, diffusion_norm)(x, t1), nfe + (
      last_step is not None)


def sde_terms(transport, model_fn, diffusion_form="sigma", diffusion_norm=1.0):
  """(drift, w): the reverse SDE dx = [v + w_t score] dt + sqrt(2 w_t) dW, from one model call."""
  diffusion = lambda x, t: transport.path.diffusion(x, t, diffusion_form, diffusion_norm)

  def drift(x, t):
    out = model_fn(x, t)
    return transport.velocity(out, x, t) + diffusion(x, t) * transport.score(out, x, t)

  return drift, diffusion


def last_step_fn(transport, model_fn, last_step, size, diffusion_form="sigma", diffusion_norm=1.0):
  """SiT's last SDE step at t1: "Mean" (the drift without noise), "Tweedie", "Euler" (ODE) or none."""
  drift, _ = sde_terms(transport, model_fn, diffusion_form, diffusion_norm)

  def step(x, t1):
    t = jnp.full((x.shape[0],), t1, x.dtype)
    if last_step is None:
      return x
    if last_step == "Mean":
      return x + drift(x, t) * size
    out = model_fn(x, t)
    if last_step == "Euler":
      return x + transport.velocity(out, x, t) * size
    alpha, sigma = transport.path.alpha(t1)[0], transport.path.sigma(t1)[0]
    return x / alpha + sigma ** 2 / alpha * transport.score(out, x, t)

  return step


def make_flow_sampler(graphdef, rest, *, transport, image_shape, num_classes, sampler="euler", num_sampling_steps=50,
                      cfg_scale=1.5, cfg_channels=3, guidance_interval=None, return_nfe=False, **solver_kwargs):
  """A jitted sample(params, labels, key) -> (N, H, W, C) samples (and the evaluations)."""
  if not str(num_sampling_steps).isdigit() or int(num_sampling_steps) < 2:
    raise UsageError(f"--num-sampling-steps {num_sampling_steps!r}: flow samplers take a number of steps >= 2")

  def sample(params, labels, key):
    model = nnx.merge(graphdef, params, rest)
    k_noise, k_loop = jax.random.split(key)
    z = jax.random.normal(k_noise, (labels.shape[0],) + tuple(image_shape))
    fn = guided_model(model, labels, num_classes=num_classes, cfg_scale=cfg_scale, cfg_channels=cfg_channels,
                      interval=guidance_interval)
    x, nfe = flow_sample(transport, fn, z, k_loop, sampler=sampler, num_steps=int(num_sampling_steps),
                         **solver_kwargs)
    return (x, nfe) if return_nfe else x

  return jax.jit(sample)


def add_dpm_flags(parser):
  """DPM-Solver++'s options as command-line flags (sample.py, fid.generate)."""
  from gspn_jax.diffusion import dpm_solver

  g = parser.add_argument_group("DPM-Solver++ (--sampler dpm++|sde-dpm++)")
  g.add_argument("--dpm-spacing", choices=dpm_solver.SPACINGS, default=None,
                 help="where the steps fall: uniform in logSNR (default), in t, or in sqrt(t)")
  g.add_argument("--dpm-thresholding", choices=dpm_solver.THRESHOLDINGS, default=None,
                 help="x0 clipped to [-1, 1] (static) or by its 0.995-quantile (dynamic); default none")


def dpm_options(sampler, spacing=None, thresholding=None):
  """make_sampler's DPM-Solver++ options from the flags; refuses them for another sampler."""
  given = {k: v for k, v in (("dpm_spacing", spacing), ("dpm_thresholding", thresholding)) if v is not None}
  if given and sampler not in DPM_SAMPLERS:
    flags = ", ".join("--" + k.replace("_", "-") for k in given)
    raise UsageError(f"{flags}: options of DPM-Solver++, not of sampler {sampler or 'ddpm'!r}; add --sampler dpm++ "
                     "or sde-dpm++")
  return given


def make_dpm_sampler(graphdef, rest, *, image_shape, num_classes, num_sampling_steps=20, cfg_scale=1.5,
                     cfg_channels=3, diffusion_steps=1000, sampler="dpm++", dpm_spacing="logSNR",
                     dpm_thresholding="none"):
  """A jitted sample(params, labels, key) with DPM-Solver++(2M) ("dpm++") or SDE-DPM-Solver++(2M)
  ("sde-dpm++") for a DDPM (epsilon) model."""
  from gspn_jax.diffusion import create_diffusion
  from gspn_jax.diffusion import dpm_solver

  alphas_cumprod = create_diffusion("", diffusion_steps=diffusion_steps).alphas_cumprod
  if not str(num_sampling_steps).isdigit():
    raise UsageError(f"--num-sampling-steps {num_sampling_steps!r}: DPM-Solver++ takes a number of steps, e.g. 20")
  if dpm_spacing not in dpm_solver.SPACINGS:
    raise UsageError(f"--dpm-spacing {dpm_spacing!r}; use one of {'|'.join(dpm_solver.SPACINGS)}")
  if dpm_thresholding not in dpm_solver.THRESHOLDINGS:
    raise UsageError(f"--dpm-thresholding {dpm_thresholding!r}; use one of {'|'.join(dpm_solver.THRESHOLDINGS)}")

  def sample(params, labels, key):
    model = nnx.merge(graphdef, params, rest)
    k_noise, k_loop = jax.random.split(key)
    z = jax.random.normal(k_noise, (labels.shape[0],) + tuple(image_shape))
    fn = guided_model(model, labels, num_classes=num_classes, cfg_scale=cfg_scale, cfg_channels=cfg_channels)
    return dpm_solver.dpm_solver_pp_2m(fn, alphas_cumprod, z, int(num_sampling_steps), spacing=dpm_spacing,
                                       algorithm=DPM_SAMPLERS[sampler], thresholding=dpm_thresholding, key=k_loop)

  return jax.jit(sample)


def make_sampler(graphdef, rest, *, sampler, objective="ddpm", transport=None, flow=None, diffusion_steps=1000,
                 **kwargs):
  """Any sampler for a model of either objective: ddpm|ddim (gspn_jax.sampling), dpm++|sde-dpm++, or a
  flow sampler with the solver options `flow` (config.sample.flow)."""
  from gspn_jax import sampling

  check_sampler(objective, sampler)
  if sampler in ("ddpm", "ddim"):
    return sampling.make_sampler(graphdef, rest, sampler=sampler, diffusion_steps=diffusion_steps, **kwargs)
  if sampler in DPM_SAMPLERS:
    return make_dpm_sampler(graphdef, rest, sampler=sampler, diffusion_steps=diffusion_steps, **kwargs)
  return make_flow_sampler(graphdef, rest, transport=transport, sampler=sampler, **flow_solver_kwargs(flow), **kwargs)


def flow_solver_kwargs(flow):
  """config.sample.flow -> flow_sample's options (config strings: "" = none)."""
  if flow is None:
    return {}
  interval = tuple(flow.guidance_interval)
  if len(interval) != 2 or not 0 <= interval[0] <= interval[1] <= 1:
    raise ValueError(f"config.sample.flow.guidance_interval={interval}: give (lo, hi) with 0 <= lo <= hi <= 1")
  if flow.last_step not in ("", *LAST_STEPS[1:]):
    raise ValueError(f"config.sample.flow.last_step={flow.last_step!r}; use one of {LAST_STEPS[1:]} or ''")
  return dict(atol=flow.atol, rtol=flow.rtol, diffusion_form=flow.diffusion_form, diffusion_norm=flow.diffusion_norm,
              last_step=flow.last_step or None, last_step_size=flow.last_step_size,
              guidance_interval=None if interval == (0.0, 1.0) else interval)


def run_objective(workdir=None, ckpt=None):
  """{"objective", "default_sampler", "kwargs" (make_sampler's)} of a training run, from its stored
  config alone (no weights loaded); an official DiT checkpoint (no workdir) is a DDPM model."""
  if workdir is None and ckpt is None:
    return {"objective": "ddpm", "default_sampler": "ddpm", "kwargs": {"objective": "ddpm"}}
  from gspn_jax.checkpoint import load_config
  from gspn_jax.generate import resolve_checkpoint

  config = load_config(resolve_checkpoint(workdir, ckpt)[0])
  flow = objective_of(config) == "flow"
  return {"objective": objective_of(config), "default_sampler": config.sample.sampler if flow else "ddpm",
          "kwargs": objective_kwargs(config)}


def objective_kwargs(config):
  """make_sampler's objective arguments for a run's config."""
  if objective_of(config) == "ddpm":
    return {"objective": "ddpm"}
  flow_solver_kwargs(config.sample.flow)
  return {"objective": "flow", "transport": create_transport(config), "flow": config.sample.flow}


