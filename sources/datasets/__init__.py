"""Datasets: MovieLens readers, the synthetic generator, generated fields and title embeddings."""
