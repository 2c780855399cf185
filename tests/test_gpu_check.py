"""bench.gpu_check's CPU-safe parts: its refusal without a GPU and its measured-vs-predicted table."""

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
