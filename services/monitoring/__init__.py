"""Monitoring: joins predictions with labels, live quality per model, drift alerts, dashboard.

Choices, in short (details in each module's docstring):

- **Join in event time** (`joiner`): a prediction waits for its label, a label for
  its predictions, at most the pipeline's `labels.ttl` of *event* time; what waited
  longer is counted as expired. Predictions are de-duplicated by (model, source,
  event_id): a caller-chosen `event_id` on `/predict` counts once however often it
  comes; labels by `event_id`.
- **Score in event-time order** (`monitor`): a join is scored once the watermark
  passes its label's time, so metrics, history and drift alerts do not depend on how
  partitions were interleaved.
- **One loop shape** (`consumer`, `handler`): each poll is decoded once (typed
  models), handed to the pure `BatchHandler`, which returns the alerts to publish
  with one `produce_all`; event time comes from `shared.watermark`'s `Watermark`,
  the one training uses too.
- **State is rebuilt from a snapshot** (`snapshot`, `consumer`): at start the
  service reads on from its last snapshot's offsets (or replays `predictions`,
  `labels` and `features` from the beginning); alert ids are deterministic and the
  alerts already on the topic are read first, so a restart publishes none twice.
- **Concept drift** (`drift`): ADWIN per (model, source) on the error stream,
  alerting only on a higher error, after a warm-up.
- **Data drift** (`data_drift`): per feature, a reference window against the latest
  vectors (PSI for numeric features, Jensen-Shannon distance for categorical ones),
  one alert per drift episode.
"""
