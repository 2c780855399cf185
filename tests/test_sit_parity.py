"""Parity with SiT's released transport (github.com/willisma/SiT, transport/), run from a local copy.

  SIT_PATH=/path/to/SiT python -m pytest tests/test_sit_parity.py -s

Same inputs through both: the interpolant, the per-example training loss of every prediction
type and loss weight, one Euler and one Heun ODE step, dopri5 at tight tolerances, and the
Euler-Maruyama SDE (one step, then SiT's "Mean" last step) with the same Gaussian increments.
SiT's code is imported from SIT_PATH (nothing of it lives here); its transport imports
torchdiffeq, so that must be installed beside torch.
"""

import importlib.util
import os
import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from gspn_jax.transport import Transport
from gspn_jax.transport.integrators import dopri5, em_step, ode_fixed
from gspn_jax.transport.sampling import last_step_fn, sde_terms

th = pytest.importorskip("torch", reason="the parity test runs SiT's PyTorch transport")
pytest.importorskip("torchdiffeq", reason="SiT's transport imports torchdiffeq (pip install torchdiffeq)")
SIT_PATH = os.environ.get("SIT_PATH")
if not SIT_PATH or not (pathlib.Path(SIT_PATH) / "transport" / "__init__.py").exists():
  pytest.skip("set SIT_PATH to a checkout of github.com/willisma/SiT to compare with its transport",
              allow_module_level=True)

TOL = 1e-5
SHAPE = (6, 4, 4, 3)
WORST = {}


@pytest.fixture(scope="module")
def sit():
  """SiT's transport package, loaded from SIT_PATH under a name of its own."""
  root = pathlib.Path(SIT_PATH) / "transport"
  spec = importlib.util.spec_from_file_location("sit_transport", root / "__init__.py",
                                                submodule_search_locations=[str(root)])
  module = importlib.util.module_from_spec(spec)
  sys.modules["sit_transport"] = module  # its modules import each other relatively
  spec.loader.exec_module(module)
  yield module
  print("\nmax relative error vs SiT:", {k: f"{v:.1e}" for k, v in sorted(WORST.items())})


def _model_torch(x, t, **_):
  t = t.view(-1, *([1] * (x.ndim - 1)))
  return th.sin(2 * x) * (1 + t) + 0.3 * x * t - 0.2


def _model_jax(x, t):
  t = t.reshape((-1,) + (1,) * (x.ndim - 1))
  return jnp.sin(2 * x) * (1 + t) + 0.3 * x * t - 0.2


def _check(name, ours, theirs):
  theirs = theirs.detach().numpy() if isinstance(theirs, th.Tensor) else np.asarray(theirs)
  rel = float(np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max())
  WORST[name] = max(WORST.get(name, 0.0), rel)
  assert rel <= TOL, f"{name}: relative error {rel:.2e}"


def _inputs(seed=0):
  g = np.random.default_rng(seed)
  return g.standard_normal(SHAPE).astype(np.float32), g.standard_normal(SHAPE).astype(np.float32)


@pytest.mark.parametrize("path_type", ["Linear", "GVP"])
def test_interpolant(sit, path_type):
  x0, x1 = _inputs()
  t = np.linspace(0.05, 0.95, SHAPE[0]).astype(np.float32)
  _, xt_ref, ut_ref = sit.create_transport(path_type).path_sampler.plan(th.tensor(t), th.tensor(x0), th.tensor(x1))
  xt, ut = Transport(path_type=path_type).path.plan(jnp.asarray(t), x0, x1)
  _check("interpolant x_t", xt, xt_ref)
  _check("interpolant u_t", ut, ut_ref)


CASES = [("velocity", None), ("noise", None), ("noise", "velocity"), ("noise", "likelihood"),
         ("score", None), ("score", "velocity"), ("score", "likelihood")]


@pytest.mark.parametrize("path_type", ["Linear", "GVP"])
@pytest.mark.parametrize("prediction,weight", CASES)
def test_training_loss_per_example(sit, path_type, prediction, weight):
  ref = sit.create_transport(path_type, prediction, weight)
  x1 = th.tensor(_inputs(1)[1])
  th.manual_seed(0)
  loss_ref = ref.training_losses(_model_torch, x1)["loss"]
  th.manual_seed(0)  # SiT's sample(): x0 = randn_like(x1), then t = rand(B) on [t0, t1]
  x0 = th.randn_like(x1)
  t0, t1 = ref.check_interval(ref.train_eps, ref.sample_eps)
  t = th.rand((x1.shape[0],)) * (t1 - t0) + t0
  ours = Transport(path_type=path_type, prediction=prediction, loss_weight=weight)
  assert ours.interval() == (t0, t1)
  loss = ours.training_losses(_model_jax, x1.numpy(), jnp.asarray(t.numpy()), noise=x0.numpy())["loss"]
  _check(f"loss {prediction}/{weight}", loss, loss_ref)


@pytest.mark.parametrize("path_type", ["Linear", "GVP"])
@pytest.mark.parametrize("prediction", ["velocity", "noise", "score"])
def test_one_ode_step_and_dopri5(sit, path_type, prediction):
  ref = sit.Sampler(sit.create_transport(path_type, prediction))
  ours = Transport(path_type=path_type, prediction=prediction)
  t0, t1 = ours.interval(eval=True)
  x = _inputs(2)[0] * 0.5
  velocity = lambda x, t: ours.velocity(_model_jax(x, t), x, t)
  for method, sit_method in (("euler", "euler"), ("heun", "heun2")):
    out_ref = ref.sample_ode(sampling_method=sit_method, num_steps=2)(th.tensor(x), _model_torch)[-1]
    _check(f"ODE {method} step", ode_fixed(velocity, x, t0, t1, 1, method)[0], out_ref)
  if prediction != "velocity":  # the toy model is no noise/score predictor: its drift blows up near t1
    return
  tight = dict(atol=1e-7, rtol=1e-6)  # both adaptive solvers then land on the same solution
  out_ref = ref.sample_ode(sampling_method="dopri5", num_steps=2, **tight)(th.tensor(x), _model_torch)[-1]
  _check("ODE dopri5 solve", dopri5(velocity, x, t0, t1, **tight)[0], out_ref)


@pytest.mark.parametrize("path_type", ["Linear", "GVP"])
@pytest.mark.parametrize("prediction,form", [("velocity", "sigma"), ("noise", "sigma"), ("score", "SBDM"),
                                             ("velocity", "linear")])
def test_sde_step_and_last_step(sit, path_type, prediction, form):
  ref = sit.Sampler(sit.create_transport(path_type, prediction))
  x = _inputs(3)[0]
  th.manual_seed(1)
  xs = ref.sample_sde(diffusion_form=form, num_steps=3, last_step="Mean", last_step_size=0.04)(
      th.tensor(x), _model_torch)  # two Euler-Maruyama steps, then the last step
  th.manual_seed(1)
  w = [th.randn(SHAPE).numpy() for _ in range(2)]  # the increments SiT drew, in order
  ours = Transport(path_type=path_type, prediction=prediction)
  t0, t1 = ours.interval(sde=True, eval=True, diffusion_form=form, last_step_size=0.04)
  dt = (t1 - t0) / 2
  drift, diffusion = sde_terms(ours, _model_jax, form)
  full = lambda t: jnp.full((SHAPE[0],), t, jnp.float32)
  y = em_step(drift, diffusion, x, full(t0), dt, w[0])
  _check("SDE Euler-Maruyama step", y, xs[0])
  y = em_step(drift, diffusion, y, full(t0 + dt), dt, w[1])
  _check("SDE last step (Mean)", last_step_fn(ours, _model_jax, "Mean", 0.04, form)(y, t1), xs[-1])
