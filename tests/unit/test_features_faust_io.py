"""The features service's eager record delivery and batch taking (services.features.faust_io)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast

import faust
import pytest
from faust.exceptions import ValueDecodeError
from faust.transport.producer import ProducerBuffer
from faust.types.tuples import TP, ConsumerMessage

from services.features.faust_io import FeaturesApp, RawSchema, _finish, take_events


async def _waits_then_returns(log: list[str]) -> int:
    task = asyncio.ensure_future(asyncio.sleep(0.01, result=5))
    await asyncio.wait([task])  # yields a future that is not done yet
    await asyncio.sleep(0)  # a bare yield
    failing = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(failing.set_exception, ValueError("boom"))
    try:
        await failing
    except ValueError:
        log.append("failure seen")
    return task.result()


def test_a_delivery_that_had_to_wait_is_driven_to_its_end() -> None:
    async def main() -> list[str]:
        log: list[str] = []
        coro = _waits_then_returns(log)
        pending = coro.send(None)  # what EagerConsumer tries first
        await _finish(coro, pending)
        assert coro.cr_frame is None  # type: ignore[attr-defined]  # finished
        return log

    assert asyncio.run(main()) == ["failure seen"]


def test_cancelling_the_rest_of_a_delivery_cancels_the_delivery() -> None:
    async def main() -> None:
        coro = asyncio.sleep(10)
        pending = coro.send(None)
        rest = asyncio.ensure_future(_finish(coro, pending))
        await asyncio.sleep(0.01)
        rest.cancel()
        with pytest.raises(asyncio.CancelledError):
            await rest
        assert coro.cr_frame is None  # type: ignore[attr-defined]

    asyncio.run(main())


class _Message:
    def __init__(self, offset: int, generation_id: int = 1) -> None:
        self.topic, self.tp, self.offset = "events", ("events", 0), offset
        self.generation_id = generation_id
        self.tracked = False


class _Event:
    def __init__(self, offset: int, generation_id: int = 1) -> None:
        self.message = _Message(offset, generation_id)


class _Stream:
    """What `take_events` uses of a faust stream and its app, in memory."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[_Event] = asyncio.Queue()
        self.channel = SimpleNamespace(queue=self.queue)
        self.acked: list[int] = []
        self.tracked: list[int] = []
        self.active = True
        self.should_stop = False
        self.events_total = 0
        self.app = SimpleNamespace(
            consumer=SimpleNamespace(track_message=lambda m: self.tracked.append(m.offset)),
            topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
            flow_control=SimpleNamespace(is_active=lambda: self.active),
            sensors=SimpleNamespace(on_stream_event_in=lambda *args: None),
            consumer_generation_id=1,
        )

    async def maybe_start(self) -> bool:
        return False

    async def ack(self, event: _Event) -> bool:
        self.acked.append(event.message.offset)
        return True


def _offsets(events: list[Any]) -> list[int]:
    return [e.message.offset for e in events]


def test_take_events_takes_what_is_queued_at_most_max_at_a_time_acking_after_each() -> None:
    async def main() -> None:
        stream = _Stream()
        for offset in range(5):
            stream.queue.put_nowait(_Event(offset))
        batches = take_events(cast(Any, stream), 2, 0.05)
        assert _offsets(await anext(batches)) == [0, 1]
        assert stream.acked == []  # not before the agent is done with them
        assert _offsets(await anext(batches)) == [2, 3]
        assert stream.acked == [0, 1]
        started = time.monotonic()
        assert _offsets(await anext(batches)) == [4]  # not full: after `within`
        assert time.monotonic() - started >= 0.04
        await batches.aclose()
        assert stream.acked == [0, 1, 2, 3, 4]
        assert stream.tracked == [0, 1, 2, 3, 4]
        assert stream.events_total == 5

    asyncio.run(main())


def test_take_events_waits_within_for_more_and_drops_events_of_a_past_generation() -> None:
    async def main() -> None:
        stream = _Stream()
        stream.queue.put_nowait(_Event(0, generation_id=0))  # fetched before a rebalance
        stream.queue.put_nowait(_Event(1))
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, stream.queue.put_nowait, _Event(2))
        batches = take_events(cast(Any, stream), 10, 0.1)
        assert _offsets(await anext(batches)) == [1, 2]
        stream.active = False  # flow control suspended: a rebalance
        stream.queue.put_nowait(_Event(3))
        loop.call_later(0.01, setattr, stream, "active", True)
        loop.call_later(0.02, stream.queue.put_nowait, _Event(4))
        assert _offsets(await anext(batches)) == [4]
        await batches.aclose()
        assert stream.acked == [1, 2, 4]
        assert stream.tracked == [1, 2, 4]

    asyncio.run(main())


def test_take_events_counts_within_from_the_first_event_not_from_an_idle_wait() -> None:
    async def main() -> None:
        stream = _Stream()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, stream.queue.put_nowait, _Event(0))  # after `within` of idling
        loop.call_later(0.06, stream.queue.put_nowait, _Event(1))  # `within` of the first
        batches = take_events(cast(Any, stream), 10, 0.03)
        assert _offsets(await anext(batches)) == [0, 1]
        await batches.aclose()

    asyncio.run(main())


def _message(key: Any, value: Any, headers: Any = ()) -> ConsumerMessage:
    tp = TP("events", 0)
    return ConsumerMessage("events", 0, 7, 1.5, 0, headers, key, value, None, 1, 1, tp)


def _app() -> FeaturesApp:
    return FeaturesApp("test-features-faust-io", broker="kafka://localhost:1", autodiscover=False)


@pytest.mark.parametrize(
    ("key", "value", "headers"),
    [
        (b"entity-1", b'{"a": 1}', [("trace", b"x")]),
        (None, b"v", ()),
        (b"k", None, None),
        (None, None, {"h": b"1"}),
        (b"", b"", ()),
        ("a str key", "a str value", ()),  # not from Kafka: faust's own path
        (b"k", '{"__faust": {"ns": "nope"}}', ()),
    ],
)
def test_raw_schema_decodes_as_faust_does(key: Any, value: Any, headers: Any) -> None:
    app = _app()
    raw = app.topic("events", key_serializer="raw", value_serializer="raw")
    assert isinstance(raw.schema, RawSchema) and raw.schema.passes_bytes_through(app)
    faust_schema: faust.Schema[Any, Any] = faust.Schema(
        key_serializer="raw", value_serializer="raw"
    )

    async def main() -> None:
        ours = await raw.decode(_message(key, value, headers), propagate=True)
        theirs = await faust_schema.compile(app)(_message(key, value, headers), propagate=True)
        assert type(ours) is type(theirs) is faust.Event
        assert (ours.key, ours.value, ours.headers) == (theirs.key, theirs.value, theirs.headers)
        assert type(ours.key) is type(theirs.key) and type(ours.value) is type(theirs.value)
        assert ours.app is app and ours.message.offset == 7 and not ours.acked

    asyncio.run(main())


def test_raw_schema_is_faust_schema_for_any_other_topic() -> None:
    app = _app()
    topics = [
        app.topic("t1"),  # json, faust's default
        app.topic("t2", value_serializer="raw"),
        app.topic("t3", key_type=bytes, key_serializer="raw", value_serializer="raw"),
    ]
    for topic in topics:
        assert not cast(RawSchema, topic.schema).passes_bytes_through(app)
    json_topic = app.topic("t4", key_serializer="raw", value_serializer="json")

    async def main() -> None:
        event = await json_topic.decode(_message(b"k", b'{"a": [1, 2]}'), propagate=True)
        assert (event.key, event.value) == (b"k", {"a": [1, 2]})
        with pytest.raises(ValueDecodeError):
            await json_topic.decode(_message(b"k", b"{not json"), propagate=True)

    asyncio.run(main())


def test_events_are_of_the_configured_event_type() -> None:
    class MyEvent(faust.Event):
        pass

    app = FeaturesApp("test-features-event", broker="kafka://localhost:1", Event=MyEvent)
    event = app.create_event(b"k", b"v", [("h", b"1")], _message(b"k", b"v"))
    assert type(event) is MyEvent and event.headers == {"h": b"1"}
    assert type(_app().create_event(None, None, None, _message(None, None))) is faust.Event


def test_the_producer_buffer_reports_the_writes_waiting() -> None:
    async def main() -> None:
        app = _app()
        buffer = app.producer.buffer
        assert isinstance(buffer, ProducerBuffer) and buffer.app is app
        assert buffer.size == 0
        for n in range(3):
            buffer.pending.put_nowait(cast(Any, n))
        assert buffer.size == 3
        buffer.max_messages = 2
        buffer.pending.get_nowait()
        buffer.pending.get_nowait()
        await asyncio.wait_for(buffer.wait_until_ebb(), 1)  # 1 waiting: at most 2, no wait
        assert [n.data for n in app.producer.beacon.children] == [buffer]

    asyncio.run(main())
