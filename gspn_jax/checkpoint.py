"""Checkpoints in the workdir: Orbax for the train state, JSON for the run's config.

Orbax writes each step into a temporary directory and renames it when complete, so
an interrupted save never leaves a half-written checkpoint behind; the newest complete
step is restored automatically. The input iterator's position is saved in the same
step, so a resumed run continues exactly where the interrupted one stopped.
"""

import json
import os
import pathlib
import tempfile

import orbax.checkpoint as ocp

CONFIG_FILE = "config.json"


class Checkpointer:
  def __init__(self, workdir, keep=3):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step, state, data_state):
    """The train state (arrays) and the input iterator's state (a JSON-able dict)."""
    self.manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         data=ocp.args.JsonSave(data_state)))

  def restore(self, abstract_state, step=None):
    """(state, data_state) at step (default: newest), shaped and sharded like abstract_state."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                  data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def write_json_atomic(path, obj):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
  with os.fdopen(fd, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def save_config(workdir, config):
  write_json_atomic(pathlib.Path(workdir) / CONFIG_FILE, json.loads(config.to_json_best_effort()))


def load_config(workdir):
  """The config a run was trained with, as stored in its workdir."""
  import ml_collections

  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: is {workdir} the --workdir of a training run?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))
