"""Training: joins features with labels and runs River's test-then-train in event time."""
