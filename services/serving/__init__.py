"""Serving: predicts over HTTP and on every feature vector with the current champion model.

`python -m services.serving` is one supervisor process (`processes`) with children:

- `WORKERS` HTTP worker processes (default 2) sharing port 8000, each a uvicorn
  server with the app of `app` (`/predict` on the fast path in `api`);
- one stream scorer process (`stream_process`, `stream`), consuming `features` in
  the `driftline-serving` group and producing `stream` predictions in batches.

Every child reads the `models` topic itself (no group) and hot-swaps the champion
(until champion selection exists, the pipeline's first model) as training
publishes newer versions (`watcher`, `models`). A child that exits is restarted;
`/healthz` answers 503 while the scorer misses its polling deadline. `/metrics`
merges every process's metrics. Handlers (`handlers`) are pure: no Kafka, no HTTP.
"""
