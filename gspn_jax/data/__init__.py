"""Training input: deterministic, resumable iterators over the configured dataset."""

from gspn_jax.data.pipeline import ArrayIterator, create_train_iterator

__all__ = ["ArrayIterator", "create_train_iterator"]
