"""The one base config every experiment file starts from (configs/*.py).

Each field is documented here once; experiment files change only what differs.
"""

import ml_collections

SCHEDULES = ("constant", "cosine")
DTYPES = ("float32", "bfloat16")


def base_config():
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"          # "digits" (embedded) or "imagenet_latents"
  c.data.path = ""                # dataset location, for datasets that live on disk
  c.data.vae = "stabilityai/sd-vae-ft-ema"  # latent datasets: the encoder they were made with
  c.data.image_size = 8           # spatial size of the model input (latent size for latents)
  c.data.channels = 1
  c.data.num_classes = 10

  c.model = ml_collections.ConfigDict()
  c.model.name = "GSPN"           # a registry name ("GSPN-XL/2", "DiT-XL/2") or "GSPN" / "DiT"
  c.model.kwargs = ml_collections.ConfigDict()  # sizes for bare names, and model options
  c.compute_dtype = "float32"     # "bfloat16": bf16 compute, fp32 parameters and optimizer
  c.remat = False                 # rematerialise each block in the backward pass

  c.objective = "ddpm"            # "ddpm" (DiT's diffusion) or "flow" (SiT's transport, c.transport)
  c.transport = ml_collections.ConfigDict()
  c.transport.path_type = "Linear"   # "Linear" (alpha_t = t, sigma_t = 1 - t) or "GVP"
  c.transport.prediction = "velocity"  # "velocity", "noise", "score" or "data"
  c.transport.loss_weight = ""       # noise/score: "" (none), "velocity" or "likelihood"
  c.transport.train_eps = -1.0       # t kept this far from the ends; < 0: SiT's default for the prediction
  c.transport.sample_eps = -1.0
  c.transport.time_sampling = "uniform"  # or "logit_normal": t = sigmoid(N(logit_mean, logit_std^2))
  c.transport.logit_mean = 0.0
  c.transport.logit_std = 1.0
  c.transport.cosine_weight = 0.0    # > 0: adds this times the velocity-direction term 1 - cos(v, u)

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.steps = 1000
  c.diffusion.schedule = "linear"

  c.batch_size = 256              # global batch, over all devices and hosts
  c.grad_accum_steps = 1          # micro-batches per step: the batch fits any device count
  c.num_steps = 1000

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                # data-parallel replicas; -1 = all remaining devices
  c.mesh.fsdp = 1                 # > 1: parameters and optimizer state sharded (FSDP)
  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-4
  c.optim.weight_decay = 0.0
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.schedule = "constant"   # "constant", or "cosine" (half cycle after warm-up)
  c.optim.warmup_epochs = 0.0
  c.optim.decay_epochs = 0.0      # cosine: length of warm-up + decay, in epochs
  c.optim.min_lr = 0.0            # cosine: final learning rate
  c.optim.grad_clip = 0.0         # global-norm clip; 0 = none
  c.ema_decay = 0.9999

  c.log_every = 100
  c.ckpt_every = 5000
  c.keep_checkpoints = 3
  c.sample_every = 10000          # EMA sample grid as PNG; 0 = never

  c.sample = ml_collections.ConfigDict()
  c.sample.num_sampling_steps = "250"
  c.sample.sampler = "ddpm"       # ddpm objective: "ddpm" (ancestral), "ddim" (eta = 0), "dpm++" (DPM-Solver++ 2M),
                                  # "sde-dpm++" (its SDE form);
                                  # flow: "euler", "heun", "dopri5" (adaptive) or "sde" (Euler-Maruyama)
  c.sample.flow = ml_collections.ConfigDict()  # flow samplers' options (SiT's defaults)
  c.sample.flow.atol = 1e-6       # dopri5 tolerances
  c.sample.flow.rtol = 1e-3
  c.sample.flow.diffusion_form = "sigma"  # sde: w_t ("sigma", "SBDM", "constant", "linear", ...)
  c.sample.flow.diffusion_norm = 1.0
  c.sample.flow.last_step = "Mean"  # sde: "Mean", "Tweedie", "Euler" or "" (none)
  c.sample.flow.last_step_size = 0.04
  c.sample.flow.guidance_interval = (0.0, 1.0)  # guidance only for t in [lo, hi] (t = 1 is data)
  c.sample.cfg_scale = 1.5
  c.sample.cfg_channels = 3       # DiT's rule: guide the first 3 latent channels
  c.sample.vae = "stabilityai/sd-vae-ft-ema"  # latent configs: decoder folder or hub id
  c.sample.grid_classes = (207, 360, 387, 974, 88, 979, 417, 279)
  c.sample.grid_per_class = 2

  c.eval = ml_collections.ConfigDict()
  c.eval.enabled = False          # the digits quality report at the end of training
  c.eval.samples_per_class = 100
  return c


def validate(c):
  """One-line errors for settings that would otherwise fail deep inside a run."""
  if c.optim.schedule not in SCHEDULES:
    raise ValueError(f"config.optim.schedule={c.optim.schedule!r}; use one of {SCHEDULES}")
  if c.compute_dtype not in DTYPES:
    raise ValueError(f"config.compute_dtype={c.compute_dtype!r}; use one of {DTYPES}")
  from gspn_jax.transport.sampling import check_sampler, objective_kwargs

  check_sampler(c.objective, c.sample.sampler, flag="config.sample.sampler=")
  objective_kwargs(c)  # a flow config's transport and sampler options, checked by building them
  if not 0 < c.sample.cfg_channels <= c.data.channels:
    raise ValueError(f"config.sample.cfg_channels={c.sample.cfg_channels} must be in 1..{c.data.channels} "
                     "(the model's epsilon channels)")
  if c.num_steps < 1 or c.batch_size < 1:
    raise ValueError(f"config.num_steps={c.num_steps}, config.batch_size={c.batch_size}: both must be at least 1")
  if c.grad_accum_steps < 1 or c.batch_size % c.grad_accum_steps:
    raise ValueError(f"config.grad_accum_steps={c.grad_accum_steps} must divide config.batch_size={c.batch_size}")
  if c.optim.schedule == "cosine" and c.optim.decay_epochs <= c.optim.warmup_epochs:
    raise ValueError(f"config.optim.decay_epochs={c.optim.decay_epochs} must exceed warmup_epochs="
                     f"{c.optim.warmup_epochs} (the cosine runs from the end of warm-up to decay_epochs)")
  for name in ("log_every", "ckpt_every"):
    if c[name] < 1:
      raise ValueError(f"config.{name} must be >= 1")
