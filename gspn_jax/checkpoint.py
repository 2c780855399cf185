"""Checkpoints in the workdir: Orbax for the train state, JSON for the run's config.

Orbax writes each step into a temporary directory and renames it when complete, so an
interrupted save (a crash, kill -9) leaves only `<step>.orbax-checkpoint-tmp`, which the
next run removes with a warning. Restoring takes the newest step that reads back whole;
steps that do not (an empty directory, a truncated file) are skipped with a one-line
warning, and the training run moves them aside as `<step>.damaged` so nothing is
overwritten. The input iterator's position is saved in the same step, so a resumed run
continues exactly where the interrupted one stopped.
"""

import contextlib
import json
import os
import pathlib
import sys
import tempfile

import jax
import orbax.checkpoint as ocp

from gspn_jax.errors import RunError, UsageError

CONFIG_FILE = "config.json"
TMP_SUFFIX = ".orbax-checkpoint-tmp"
METADATA = "_CHECKPOINT_METADATA"  # in every step Orbax completed (the rename into place comes last)


def warn(message):
  print(f"warning: {message}", file=sys.stderr, flush=True)


class Checkpointer:
  def __init__(self, workdir, keep=3, read_only=False):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    if not read_only and jax.process_index() == 0:
      for tmp in sorted(self.directory.glob(f"*{TMP_SUFFIX}*")):
        warn(f"{tmp} is a save that never completed (the run was killed during it); removed")
    self.manager = ocp.CheckpointManager(
        self.directory, item_handlers={"state": ocp.StandardCheckpointHandler(),
                                       "data": ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                             cleanup_tmp_directories=not read_only))

  def steps(self):
    """Every step directory, complete or not, newest first."""
    return step_dirs(self.directory)

  def latest_step(self):
    """The newest step whose save completed."""
    return latest_complete_step(self.directory)

  def save(self, step, state, data_state):
    """The train state (arrays) and the input iterator's state (a JSON-able dict)."""
    self.manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         data=ocp.args.JsonSave(data_state)))

  def restore(self, abstract_state, step=None, move_damaged=False):
    """(state, data_state, step) at step, or at the newest step that reads back whole;
    shaped and sharded like abstract_state. move_damaged: rename the skipped steps
    (training, which would otherwise save over them)."""
    candidates = [step] if step is not None else self.steps()
    if not candidates:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    damaged = []
    for s in candidates:
      problem = self._problem(s, abstract_state)
      if problem is None:
        try:
          restored = self.manager.restore(s, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        except Exception as e:  # a truncated or corrupted file: Orbax/TensorStore say which
          problem = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
      if problem is not None:
        if step is not None:
          raise RunError(f"checkpoint {self.directory / str(s)} is damaged ({problem}); pick an older step, "
                         f"one of {self.steps()}")
        warn(f"checkpoint {self.directory / str(s)} is incomplete or damaged ({problem}); skipped"
             + (f", moved to {s}.damaged" if move_damaged else ""))
        damaged.append(s)
        continue
      if move_damaged and damaged:
        self._move_aside(damaged)
      return restored["state"], restored["data"], s
    raise RunError(f"no usable checkpoint in {self.directory}: steps {damaged} are all damaged; "
                   "move the directory away to start afresh")

  def _problem(self, step, abstract_state):
    """Why step cannot be restored (None if it looks whole); a config whose shapes differ
    from the checkpoint's is the user's error, not damage."""
    path = self.directory / str(step)
    if not (path / METADATA).exists():
      return "no metadata, the save did not complete" if path.exists() else "no such step"
    try:
      stored = self.manager.item_metadata(step)["state"]
    except Exception as e:
      return f"unreadable metadata: {type(e).__name__}"
    if stored is None:
      return "no train state"
    stored, wanted = _by_name(stored), _by_name(abstract_state)
    for name, leaf in sorted(wanted.items(), key=lambda kv: not kv[0].startswith("params/")):  # params first
      if name not in stored:
        raise UsageError(f"checkpoint {path} has no parameter {name}: the config differs from the run's "
                         f"({path.parent.parent / CONFIG_FILE}); resume with that config or use a new --workdir")
      if tuple(stored[name].shape) != tuple(leaf.shape):
        raise UsageError(f"checkpoint {path}: {name} has shape {tuple(stored[name].shape)}, the model "
                         f"{tuple(leaf.shape)}: the config differs from the run's "
                         f"({path.parent.parent / CONFIG_FILE}); resume with that config or use a new --workdir")
    extra = sorted(set(stored) - set(wanted))
    if extra:
      raise UsageError(f"checkpoint {path} has parameter {extra[0]} the model lacks: the config differs from the "
                       f"run's ({path.parent.parent / CONFIG_FILE}); resume with that config or use a new --workdir")
    return None

  def _move_aside(self, steps):
    if jax.process_index() == 0:
      for s in steps:
        src = self.directory / str(s)
        if src.exists():
          src.rename(src.with_name(f"{s}.damaged"))
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices("checkpoint: damaged steps moved")
    self.manager.reload()

  def wait(self):
    self.manager.wait_until_finished()

  @contextlib.contextmanager
  def finishing(self):
    """A block after which the manager is closed; an exception in it first waits for the
    save in flight to complete (a killed background save leaves only a temporary directory)."""
    try:
      yield self
    except BaseException:
      self.wait()
      raise
    finally:
      self.close()

  def close(self):
    self.manager.close()


def step_dirs(directory):
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  return sorted((int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir()), reverse=True)


def latest_complete_step(directory):
  """The newest step directory with its metadata (Orbax renames a step into place complete)."""
  return next((s for s in step_dirs(directory) if (pathlib.Path(directory) / str(s) / METADATA).exists()), None)


def _by_name(tree):
  """{"params/blocks/0/kernel": leaf}: names that match whether a list index was stored as a string."""
  def name(path):
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)
  return {name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def write_json_atomic(path, obj):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
  with os.fdopen(fd, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide results from the rest of the group
  os.replace(tmp, path)


def save_config(workdir, config, step=0):
  """config.json is the latest launch's config (sample.py takes its defaults from it);
  config.<step>.json keeps each launch's, by the step it started from."""
  obj = json.loads(config.to_json_best_effort())
  write_json_atomic(pathlib.Path(workdir) / f"config.{int(step)}.json", obj)
  write_json_atomic(pathlib.Path(workdir) / CONFIG_FILE, obj)


def load_config(workdir):
  """The config a run was trained with, as stored in its workdir."""
  import ml_collections

  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise UsageError(f"{path} not found: is {workdir} the --workdir of a training run?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))
