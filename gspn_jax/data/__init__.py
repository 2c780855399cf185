"""Training input: deterministic, resumable grain pipelines over the configured dataset."""

from gspn_jax.data.pipeline import GlobalOrder, create_train_iterator, make_iterator

__all__ = ["GlobalOrder", "create_train_iterator", "make_iterator"]
