"""Rebuilding a published version from the topics, to check it is what it says it is.

A version's lineage names the input offsets it reflects (`features` and `labels`, the
next offset to read on each partition), the pipeline's config hash and the events
its model had learned. `reproduce` reads both topics from their beginning up to those
offsets into a fresh learner, processes the items in event-time order (the learner's
own order) until the model has learned as many events as the version, and compares:
the same bytes (the SHA-256 of the pickle, `Lineage.content_sha256`), else the same
predictions on the last vectors read. Bytes match for `logreg`; a Hoeffding tree's
Gaussian estimators each hold an unseeded random generator (used for sampling only),
so for trees the predictions are what can match.

It needs the topics to still hold everything from offset 0 (their retention: 72 h by
default, so a version older than that cannot be rebuilt) and the same pipeline file.
Items that came late or expired under the label TTL were processed in the live run as
the watermark allowed; a rebuild follows event time alone, so such items can make it
differ, and it says so.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from services.training.checkpoint import fresh_state
from services.training.feed import LearnerFeed
from shared.kafka import make_consumer
from shared.messages import FeatureVector
from shared.pipeline import PipelineConfig
from shared.registry import ModelRegistry
from shared.settings import CommonSettings
from shared.topics import Topics
from shared.validation import parse_message

__all__ = ["Cannot", "Rebuilt", "describe", "reproduce"]

COMPARED = 1000  # vectors the predictions are compared on when the bytes differ


class Cannot(Exception):
    """The version cannot be rebuilt (the reason, in one line)."""


@dataclass
class Rebuilt:
    """What a rebuild found."""

    model: str
    version: str
    n_learned: int
    records: int
    identical_bytes: bool
    compared: int = 0
    differing: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.identical_bytes or (self.compared > 0 and self.differing == 0)


async def reproduce(
    registry: ModelRegistry,
    pipeline: PipelineConfig,
    settings: CommonSettings,
    model: str,
    version: str,
) -> Rebuilt:
    """Rebuild `model` at `version` from the topics and compare it with the stored one."""
    try:
        published = await registry.get(model, version)
    except LookupError as error:
        raise Cannot(f"{model} version {version} is not in the registry") from error
    lineage = published.lineage
    if lineage.config_hash != pipeline.config_hash():
        raise Cannot(
            f"{model} version {version} was learned under pipeline {lineage.config_hash},"
            f" this file is {pipeline.config_hash()}: run it with that pipeline file"
        )
    if model not in {m.name for m in pipeline.models} or lineage.n_learned is None:
        raise Cannot(f"{model} version {version} does not say what it learned")
    state = fresh_state(pipeline, settings)
    topics = Topics(settings.topic_prefix)
    feed = LearnerFeed(state, features=topics.features, labels=topics.labels, task=pipeline.task)
    ends = {TopicPartition(o.topic, o.partition): o.offset for o in lineage.offsets}
    state.watermark.assign(list(ends), now=0.0)
    vectors = await _read(settings, feed, ends)
    learner = state.learner
    target = lineage.n_learned
    while learner.scores[model].n_learned < target:
        moment = learner.next_time()
        if moment is None:
            break
        learner.advance(moment)
    rebuilt = learner.models[model]
    got = learner.scores[model].n_learned
    report = Rebuilt(
        model,
        version,
        got,
        state.records,
        hashlib.sha256(pickle.dumps(rebuilt, pickle.HIGHEST_PROTOCOL)).hexdigest()
        == lineage.content_sha256,
    )
    if got != target:
        report.notes.append(f"the rebuild learned {got} events, the version {target}")
    if lineage.content_sha256 is None:
        report.notes.append("the version carries no content hash (published before it)")
    if learner.late or learner.expired_features or learner.expired_labels:
        report.notes.append(
            f"late items {learner.late}, expired {learner.expired_features} predictions and"
            f" {learner.expired_labels} labels: the live run may have met them otherwise"
        )
    if not report.identical_bytes:
        stored = await registry.load(published)
        _compare(report, stored, rebuilt, vectors)
    return report


async def _read(
    settings: CommonSettings, feed: LearnerFeed, ends: dict[TopicPartition, int]
) -> list[dict[str, Any]]:
    """Every record before `ends` into `feed`; the last `COMPARED` vectors' features."""
    consumer = make_consumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        client_id="driftline-reproduce",
        **settings.kafka(),  # the CLI's principal (operator: reads every topic)
    )
    await consumer.start()
    vectors: list[dict[str, Any]] = []
    try:
        partitions = [tp for tp, end in ends.items() if end > 0]
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        gone = {f"{tp.topic}/{tp.partition}": o for tp, o in starts.items() if o > 0}
        if gone:
            raise Cannot(
                f"the topics no longer hold the beginning (first offsets {gone}): their"
                " retention has passed; versions that old cannot be rebuilt"
            )
        await consumer.seek_to_beginning(*partitions)
        left = set(partitions)
        while left:
            batch = await consumer.getmany(*left, timeout_ms=1000, max_records=10_000)
            if not batch:
                raise Cannot(
                    f"nothing more to read on {sorted(map(str, left))} before the lineage's offsets"
                )
            kept = {}
            for tp, records in batch.items():
                records = [r for r in records if r.offset < ends[tp]]
                if records:
                    kept[tp] = records
                if not records or records[-1].offset >= ends[tp] - 1:
                    left.discard(tp)
                if tp.topic.endswith("features"):
                    for record in records:
                        parsed = parse_message(FeatureVector, record.value).message
                        if isinstance(parsed, FeatureVector):
                            x = {k: v for k, v in parsed.features.items() if v is not None}
                            vectors.append(x)
                    del vectors[:-COMPARED]
            feed.take(kept, now=0.0)
    finally:
        await consumer.stop()
    return vectors


def _compare(report: Rebuilt, stored: Any, rebuilt: Any, vectors: list[dict[str, Any]]) -> None:
    for x in vectors:
        report.compared += 1
        if _answer(stored, x) != _answer(rebuilt, x):
            report.differing += 1


def _answer(model: Any, x: dict[str, Any]) -> Any:
    try:
        if hasattr(model, "predict_proba_one"):
            return sorted(model.predict_proba_one(x).items(), key=str)
        return model.predict_one(x)
    except Exception as error:  # a model that raises raises alike on both
        return repr(error)


def describe(report: Rebuilt) -> str:
    """One line per finding, for the CLI."""
    head = f"{report.model} version {report.version}: rebuilt from {report.records} records"
    if report.identical_bytes:
        verdict = "identical (the same bytes: the content hash matches)"
    elif report.identical:
        verdict = f"identical predictions on the last {report.compared} vectors (bytes differ)"
    elif report.compared:
        verdict = f"DIFFERENT: {report.differing} of {report.compared} predictions differ"
    else:
        verdict = "DIFFERENT: the content hash does not match and no vector to compare on"
    return "\n".join([f"{head}, {report.n_learned} events learned: {verdict}", *report.notes])
