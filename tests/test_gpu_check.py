"""bench.gpu_check's CPU-safe parts: its refusal without a GPU and its measured-vs-predicted table."""

import pathlib

import pytest

from bench import gpu_check


def test_gpu_check_refuses_a_machine_without_a_gpu_in_one_line():
  with pytest.raises(SystemExit, match=r"needs a CUDA GPU with jax-triton .*--smoke runs on a CPU"):
    gpu_check.main([])


def test_measured_beside_predicted():
  measured = [{"case": "a", "dtype": "bfloat16", "triton_fwd_ms": 2.0, "triton_fwd_bwd_ms": 9.0},
              {"case": "b", "dtype": "bfloat16", "triton_fwd_ms": 1.0},  # not predicted: left out
              {"case": "a", "dtype": "float32", "triton_fwd_bwd_error": "OOM"}]
  predicted = [{"case": "a", "dtype": "bfloat16", "predicted_fwd_ms": 1.0, "predicted_fwd_bwd_ms": 3.0},
               {"case": "a", "dtype": "float32", "predicted_fwd_ms": 2.0, "predicted_fwd_bwd_ms": 6.0}]
  table = gpu_check.measured_vs_predicted(measured, predicted)
  assert [(r["case"], r["dtype"]) for r in table] == [("a", "bfloat16"), ("a", "float32")]
  assert table[0]["measured_over_predicted_fwd"] == 2.0 and table[0]["measured_over_predicted_fwd_bwd"] == 3.0
  assert table[1]["measured_fwd_ms"] is None and table[1]["measured_over_predicted_fwd"] is None


def test_quick_mode_names_real_cases_and_refuses_mixed_modes(capsys):
  from bench import kernel

  assert set(gpu_check.QUICK_CASES) <= {name for name, _, _ in kernel.FULL}
  assert sum(gpu_check.QUICK_LIMITS_S.values()) <= 600  # a 15-minute device budget, its start-up included
  with pytest.raises(SystemExit) as exit_:
    gpu_check.main(["--smoke", "--quick"])
  assert exit_.value.code == 2 and "--smoke or --quick, not both" in capsys.readouterr().err
  committed = pathlib.Path("bench/results/kernel_predicted_h100.json")
  before = committed.read_bytes()
  with pytest.raises(SystemExit) as exit_:  # a subset would overwrite the committed full prediction
    kernel.main(["--predict", "--cases", "xl2_256px_local"])
  assert exit_.value.code == 2 and "with --predict give --out" in capsys.readouterr().err
  assert committed.read_bytes() == before  # refused before any work: the full table is intact
  for argv, message in ((["--cases", "xl2_2k_local"], "invalid choice: 'xl2_2k_local'"),
                        (["--smoke", "--cases", "xl2_256px_local"], "--cases: not with --smoke")):
    with pytest.raises(SystemExit) as exit_:
      kernel.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
