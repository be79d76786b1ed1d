"""Features: computes each event's point-in-time features (faust-streaming), keeps them in Redis."""
