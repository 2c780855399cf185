"""Train a class-conditional GSPN or DiT diffusion model.

  python main.py --config configs/gspn_xl2.py --workdir runs/gspn_xl2
  python main.py --config configs/digits.py --config.num_steps=500

Training resumes automatically from the newest checkpoint in --workdir. A bad setting is
one line on stderr and exit code 2 (--verbosity=1 shows the traceback). On a cluster JAX
recognises (SLURM, Open MPI, ...) every task joins the run by itself (one task per
host); elsewhere pass --coordinator_address, --num_processes and --process_id.
"""

import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gspn_jax import distributed, train
from gspn_jax.errors import UsageError, one_line_errors

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file, e.g. configs/gspn_xl2.py", lock_config=True)
flags.DEFINE_string("workdir", None, "checkpoints, metrics and samples go here (default: runs/<config name>)")
flags.DEFINE_string("coordinator_address", None, "multi-host without cluster auto-detection: host:port of process 0")
flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
flags.DEFINE_integer("process_id", None, "multi-host: this process's index")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  with one_line_errors(verbose=FLAGS.verbosity >= 1):
    config = load_config()
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    workdir = FLAGS.workdir or str(pathlib.Path("runs") / pathlib.Path(
        config_flags.get_config_filename(FLAGS["config"])).stem)
    train.train_and_evaluate(config, workdir)


def load_config():
  """The config with its overrides applied; a missing file is a UsageError."""
  path = pathlib.Path(config_flags.get_config_filename(FLAGS["config"]))
  if not path.is_file():
    raise UsageError(f"--config {path}: no such file; the configs are "
                     f"{', '.join(sorted(str(p) for p in pathlib.Path('configs').glob('*.py')))}")
  return FLAGS.config


def parse_flags(argv):
  """absl's parsing, with an override naming no field (or of the wrong type) as one line."""
  try:
    return FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    if any(a.startswith("--verbosity") for a in argv):
      raise
    text = " ".join(str(e).encode().decode("unicode_escape").replace("'", "").split())
    if isinstance(e, (AttributeError, KeyError)):  # ml_collections: "<field> Did you mean ...?"
      field = text.split()[0].strip('"')
      flag = next((a.split("=")[0] for a in argv if a.startswith("--config.") and f".{field}" in a), field)
      text = f"{flag} names no field of the config{text[len(text.split()[0]):].replace(' Did', '; did')}"
    print(f"error: {text}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
