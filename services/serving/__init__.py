"""Serving: predicts over HTTP and on every feature vector with the current champion model.

The champion (until champion selection exists, the pipeline's first model) is loaded
from the registry at start and hot-swapped whenever training publishes a newer version.
"""
