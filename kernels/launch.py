"""One Triton kernel launch from JAX: through jax-triton (GPU, or lowering for CUDA on
any machine), or through the Triton interpreter on CPU inside `kernels.interpreted()`
(a host callback that runs the same @triton.jit kernel on torch CPU tensors; tests only,
TRITON_INTERPRET=1 must be set before kernels/ is imported).

jax-triton 0.3.1 (jax 0.11, triton 3.6: the GPU machines) and 0.4.x both work: only
arrays are passed positionally (inputs, then outputs through out_shape), everything else
as constexpr keywords. compute_capability (e.g. 90) compiles for that GPU instead of
querying device 0, so the op also lowers for CUDA on a machine without one.
"""

import jax

from kernels import layout


def launch(kernels, inputs, out_shape, state_rows, meta, grid, num_warps, *, interpret, compute_capability,
           **constexprs):
  """Runs kernels[meta["KERNEL"]] on `inputs`; returns the outputs described by out_shape
  (the rows layout's fp32 state rows, `state_rows` per program, are an extra output XLA
  allocates and nobody reads back)."""
  meta = dict(meta)
  which = meta.pop("KERNEL")
  meta.update(constexprs)
  state = []
  if which == "rows":
    state = [jax.ShapeDtypeStruct((layout.state_size(meta, grid, state_rows),), "float32")]
  run = _interpreted if interpret else _jax_triton
  outs = run(kernels[which], inputs, [*out_shape, *state], grid, num_warps, compute_capability, meta)
  return list(outs[:len(out_shape)])


def _jax_triton(kernel, inputs, out_shape, grid, num_warps, compute_capability, meta):
  import jax_triton as jt

  return jt.triton_call(*inputs, kernel=kernel, out_shape=out_shape, grid=grid, num_warps=num_warps,
                        num_stages=layout.NUM_STAGES, compute_capability=compute_capability, **meta)


def _interpreted(kernel, inputs, out_shape, grid, num_warps, compute_capability, meta):
  import numpy as np
  import torch

  def host(*arrays):
    # bf16 crosses as float32 (numpy has no bf16) and is cast back in torch
    t = [torch.from_numpy(np.array(a, np.float32)).to(_torch_dtype(a.dtype)) for a in arrays]
    outs = [torch.full(o.shape, float("nan"), dtype=_torch_dtype(o.dtype)) for o in out_shape]
    kernel[grid](*t, *outs, num_warps=num_warps, **meta)
    return [np.asarray(o.float().numpy()).astype(s.dtype) for o, s in zip(outs, out_shape)]

  return jax.pure_callback(host, out_shape, *inputs)


def _torch_dtype(dtype):
  import torch

  return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[str(dtype)]
