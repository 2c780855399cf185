"""What the compiler makes of the GSPN kernels for a GPU, checked without one.

A JAX function that uses impl='triton' is lowered for CUDA on any machine
(`jax.jit(f).trace(...).lower(lowering_platforms=("cuda",))` under kernels.cuda_target),
which runs jax-triton's own lowering rule: the kernels are compiled exactly as the GPU
machine would (16-byte pointer alignment, the requested compute capability) and their
PTX is embedded, zlib-compressed, in each custom call. Here each call's PTX is taken
back out and assembled with Triton's ptxas (registers, spills, shared memory), its SASS
listed with cuobjdump (instructions per element and scan step, from the innermost loop),
and its TTGIR (the call's own TTIR compiled again with the same options) checked for
replicated warps: a data tile whose warps outnumber the slices it can give them, so
several warps hold copies of one line.

Needs jax-triton and the jax-cuda<N>-plugin matching jaxlib (its Triton module only;
installed without its CUDA libraries on CPU machines: the Makefile).
"""

import functools
import math
import os
import re
import subprocess
import tempfile
import zlib

def lower_for_cuda(jitted, *args, compute_capability=90):
  """The lowered module of jax.jit'ed `jitted` at `args` (arrays or ShapeDtypeStructs) for CUDA."""
  import kernels

  with kernels.cuda_target(compute_capability):
    return jitted.trace(*args).lower(lowering_platforms=("cuda",))


def _ops(op):
  for region in op.regions:
    for block in region.blocks:
      for o in block.operations:
        yield o
        yield from _ops(o.operation)


def _varint(b, i):
  n = shift = 0
  while True:
    c = b[i]
    i += 1
    n |= (c & 127) << shift
    shift += 7
    if c < 128:
      return n, i


def _fields(b):
  """(field number, value) of one protobuf message: varints and length-delimited bytes."""
  i, out = 0, []
  while i < len(b):
    key, i = _varint(b, i)
    kind = key & 7
    if kind == 0:
      v, i = _varint(b, i)
    elif kind == 2:
      n, i = _varint(b, i)
      v, i = b[i:i + n], i + n
    else:
      raise ValueError(f"unexpected protobuf wire type {kind}")
    out.append((key >> 3, v))
  return out


def triton_calls(lowered):
  """One dict per Triton custom call of a lowered module: kernel name, num_warps, shared
  memory, grid, the PTX and TTIR (jax-triton's TritonAnyKernelCall proto)."""
  from jax._src.lib.mlir import ir

  calls = []
  for o in _ops(lowered.compiler_ir("stablehlo").operation):
    if o.operation.name != "stablehlo.custom_call":
      continue
    if ir.StringAttr(o.attributes["call_target_name"]).value != "triton_kernel_call":
      continue
    call = dict(_fields(zlib.decompress(ir.StringAttr(o.attributes["backend_config"]).value_bytes)))[1]
    call = _fields(call)
    kernel = dict(_fields(dict(call)[1]))
    grid = [v for f, v in call if f in (2, 3, 4)]
    calls.append({"kernel": kernel[1].decode(), "num_warps": kernel[2], "shared_bytes": kernel.get(3, 0),
                  "ptx": kernel[4].decode(), "ttir": kernel[5].decode(), "compute_capability": kernel[6],
                  "grid": grid, "operand_shapes": [str(v.type) for v in o.operation.operands],
                  "result_shapes": [str(v.type) for v in o.operation.results]})
  return calls


# ops that materialise a rearranged copy of their operand
COPY_OPS = ("stablehlo.slice", "stablehlo.dynamic_slice", "stablehlo.transpose", "stablehlo.copy",
            "stablehlo.concatenate", "stablehlo.reverse", "stablehlo.gather", "stablehlo.pad")


def copied_operands(lowered):
  """[(kernel, operand index, op)] for every Triton custom-call operand produced by a
  copying op (COPY_OPS): a channel slice or transpose made only to feed a kernel."""
  from jax._src.lib.mlir import ir

  found = []
  for o in _ops(lowered.compiler_ir("stablehlo").operation):
    if o.operation.name != "stablehlo.custom_call":
      continue
    if ir.StringAttr(o.attributes["call_target_name"]).value != "triton_kernel_call":
      continue
    kernel = dict(_fields(dict(_fields(dict(_fields(zlib.decompress(
        ir.StringAttr(o.attributes["backend_config"]).value_bytes)))[1]))[1]))[1].decode()
    for i, v in enumerate(o.operation.operands):
      owner = v.owner
      name = getattr(owner, "name", None)  # a block argument has a Block as its owner
      if name in COPY_OPS:
        found.append((kernel, i, name))
  return found


def _nvidia_tool(name):
  from triton import knobs

  return getattr(knobs.nvidia, name).path  # the binaries shipped in Triton's wheel


@functools.cache  # a train step embeds the same kernel in many layers
def assemble(ptx, compute_capability):
  """ptxas -v of the PTX: registers, spill bytes, stack, shared memory; and the SASS."""
  arch = f"sm_{compute_capability}{'a' if compute_capability >= 90 else ''}"
  with tempfile.TemporaryDirectory() as d:
    src, cubin = os.path.join(d, "k.ptx"), os.path.join(d, "k.cubin")
    with open(src, "w") as f:
      f.write(ptx)
    out = subprocess.run([_nvidia_tool("ptxas"), "-v", f"--gpu-name={arch}", src, "-o", cubin],
                         capture_output=True, text=True, check=True).stderr
    sass = subprocess.run([_nvidia_tool("cuobjdump"), "-sass", cubin], capture_output=True, text=True,
                          check=True).stdout
  num = lambda pattern: int(m.group(1)) if (m := re.search(pattern, out)) else 0
  return {"registers": num(r"Used (\d+) registers"), "spill_store_bytes": num(r"(\d+) bytes spill stores"),
          "spill_load_bytes": num(r"(\d+) bytes spill loads"), "stack_bytes": num(r"(\d+) bytes stack frame"),
          "ptxas_shared_bytes": num(r"(\d+) bytes smem")}, sass


def innermost_loop(sass):
  """(instructions, barriers, shuffles) of the innermost loop: the shortest backward branch."""
  lines = re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)
  code = [(int(a, 16), text.strip()) for a, text in lines]
  best = None
  for addr, text in code:
    m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
    if m and int(m.group(1), 16) < addr and (best is None or addr - int(m.group(1), 16) < best[1] - best[0]):
      best = (int(m.group(1), 16), addr)
  if best is None:
    return None
  body = [t for a, t in code if best[0] <= a <= best[1]]
  return {"instructions": len(body), "barriers": sum("BAR" in t.split()[0] or " BAR." in t for t in body),
          "shuffles": sum("SHFL" in t for t in body)}


def expected_instructions(sass):
  """Instructions a thread executes on average in a loop-free kernel whose conditional
  branches are uniform per program and each taken by half the programs (the stencil's
  first- or second-step branch per group): reach probabilities along the branches."""
  code = [(int(a, 16), text.strip()) for a, text in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
  index = {a: i for i, (a, _) in enumerate(code)}
  reach = [1.0] + [0.0] * len(code)
  for i, (_, text) in enumerate(code):
    p, m = reach[i], re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
    if p and m:
      if index[int(m.group(1), 16)] <= i:
        raise ValueError("a loop: use innermost_loop")
      taken = p / 2 if text.startswith("@") else p
      reach[index[int(m.group(1), 16)]] += taken
      p -= taken
    elif "EXIT" in text.split() and not text.startswith("@"):
      p = 0.0
    reach[i + 1] += p
  return sum(reach[:len(code)])


def _tensors(ir_text):
  return [(tuple(int(d) for d in dims.split("x")), layout)
          for dims, layout in re.findall(r"tensor<((?:\d+x)+)(?:f32|bf16|f16)(?:, (#[\w]+))?>", ir_text)
          for dims in [dims.rstrip("x")]]


def replicated_warps(ttgir):
  """The data tiles (the largest 2-D float tensors, in a blocked layout) whose warps
  outnumber the distinct slices of the tile, i.e. some warps hold copies of the same
  elements: [(shape, layout), ...]. Broadcast helpers ([BLOCK_L, 1] masks) are left out."""
  tile = max((math.prod(shape) for shape, _ in _tensors(ttgir) if len(shape) == 2), default=0)
  layouts = {}
  for name, spt, tpw, wpc in re.findall(
      r"(#blocked\d*) = #ttg\.blocked<\{sizePerThread = \[([\d, ]+)\], threadsPerWarp = \[([\d, ]+)\], "
      r"warpsPerCTA = \[([\d, ]+)\]", ttgir):
    layouts[name] = [[int(v) for v in s.split(",")] for s in (spt, tpw, wpc)]
  bad = set()
  for shape, name in _tensors(ttgir):
    if len(shape) != 2 or name not in layouts or math.prod(shape) < tile:
      continue
    spt, tpw, wpc = layouts[name]
    needed = math.prod(min(w, math.ceil(n / (s * t))) for n, s, t, w in zip(shape, spt, tpw, wpc))
    if needed < math.prod(wpc):
      bad.add((shape, name))
  return sorted(bad)


def compile_ttir(call):
  """The call's TTIR through Triton's CUDA stages exactly as jax-triton runs them: (TTGIR, PTX)."""
  from triton._C.libtriton import ir
  from triton.backends.compiler import GPUTarget
  from triton.backends.nvidia.compiler import CUDABackend

  from kernels.layout import NUM_STAGES

  cc = call["compute_capability"]
  backend = CUDABackend(GPUTarget("cuda", cc, 32))
  options = backend.parse_options({"num_warps": call["num_warps"], "num_stages": NUM_STAGES, "num_ctas": 1,
                                   "optimize_epilogue": False, "debug": False, "enable_fp_fusion": True})
  context = ir.context()
  ir.load_dialects(context)
  backend.load_dialects(context)
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "k.ttir")
    with open(path, "w") as f:
      f.write(call["ttir"])
    module = ir.parse_mlir_module(path, context)
  module.context = context
  metadata = {}
  ttgir = backend.make_ttgir(backend.make_ttir(module, metadata, options, cc), metadata, options, cc)
  text = str(ttgir)  # before make_llir, which rewrites the module in place
  return text, backend.make_ptx(backend.make_llir(ttgir, metadata, options, cc), metadata, options, cc)


def _body(ptx):
  """PTX without comments and debug sections (file paths, line tables)."""
  return re.sub(r"//.*|\.file.*|\.loc.*|\.section\s+\.debug[\s\S]*", "", ptx)


def tile_elements(ttir):
  """Elements of the kernel's data tile: the largest float tensor in its TTIR."""
  return max((math.prod(s) for s, _ in _tensors(ttir)), default=1)


def audit(call):
  """The compiler's figures for one custom call (a dict from triton_calls)."""
  stats, sass = assemble(call["ptx"], call["compute_capability"])
  loop = innermost_loop(sass)
  per_thread = tile_elements(call["ttir"]) / (32 * call["num_warps"])
  ttgir, ptx = compile_ttir(call)
  if _body(ptx) != _body(call["ptx"]):
    raise AssertionError(f"{call['kernel']}: recompiling its TTIR gave different PTX; the TTGIR would not be its own")
  row = {k: v for k, v in call.items() if k not in ("ptx", "ttir")}
  # a loop-free kernel (the stencil: one step per pixel) is charged what a thread executes
  steps = loop["instructions"] if loop else expected_instructions(sass)
  row.update(stats, tile_elements=tile_elements(call["ttir"]), loop=loop,
             sass_per_element_step=round(steps / per_thread, 1),
             replicated_warps=[f"{s} {n}" for s, n in replicated_warps(ttgir)])
  return row
