"""FID-50K on the ADM evaluator's terms: Inception features, metrics, reference batches."""
