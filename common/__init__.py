"""Shared plumbing above the contracts: storage, staged publishing, the model registry,
pseudonyms, features and the work directory. Imports ``schemas`` only; the Spark jobs, the
TensorFlow model, the evaluation and the CLI all build on it."""
