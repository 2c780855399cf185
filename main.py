"""Train a class-conditional GSPN or DiT diffusion model.

  python main.py --config configs/gspn_xl2.py --workdir runs/gspn_xl2
  python main.py --config configs/digits.py --config.num_steps=500

Training resumes automatically from the newest checkpoint in --workdir. On a cluster JAX
recognises (SLURM, Open MPI, ...) every task joins the run by itself (one task per
host); elsewhere pass --coordinator_address, --num_processes and --process_id.
"""

import pathlib

from absl import app, flags, logging
from ml_collections import config_flags

from gspn_jax import distributed, train

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
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  workdir = FLAGS.workdir or str(pathlib.Path("runs") / pathlib.Path(config_flags.get_config_filename(FLAGS["config"])).stem)
  train.train_and_evaluate(FLAGS.config, workdir)


if __name__ == "__main__":
  app.run(main)
