"""Train a class-conditional GSPN or DiT diffusion model.

  python main.py --config configs/gspn_xl2.py --workdir runs/gspn_xl2
  python main.py --config configs/digits.py --config.num_steps=500

Training resumes automatically from the newest checkpoint in --workdir.
"""

import pathlib

from absl import app, flags, logging
from ml_collections import config_flags

from gspn_jax import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file, e.g. configs/gspn_xl2.py", lock_config=True)
flags.DEFINE_string("workdir", None, "checkpoints, metrics and samples go here (default: runs/<config name>)")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  workdir = FLAGS.workdir or str(pathlib.Path("runs") / pathlib.Path(config_flags.get_config_filename(FLAGS["config"])).stem)
  train.train_and_evaluate(FLAGS.config, workdir)


if __name__ == "__main__":
  app.run(main)
