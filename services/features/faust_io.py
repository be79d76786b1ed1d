"""Where the features service reaches around faust-streaming: the one place.

Faust runs the service (consumer group, partition assignment, the changelogged
tables and their recovery, the web server, the agent). Some of its per-record paths
cost more than the features themselves at thousands of events per second, so:

- `FeaturesApp` gives faust a consumer (`EagerConsumer`) whose fetch loop hands a
  record to the agent's stream without starting tasks when the stream's buffer has
  room (faust 0.15 races four new tasks against a flow stop for every record). When
  the buffer is full it waits exactly as faust does, so a rebalance still interrupts.
  A full buffer takes its partitions out of faust's fetch, and the fetch then waited
  its whole 1 s timeout on what was left (faust's idle `__leader` topic), however soon
  the agent drained the buffer: a stall every ~17,000 events (10,000 -> 15,000
  events/s alone once the consumer waits for the drain instead). Its aiokafka
  consumer's broker-side fetch wait is 100 ms, not faust's fixed 1.5 s: a fetch of
  idle partitions alone (faust's `__leader`, sent while the events' records wait to
  be taken) holds the next fetch of the events for that long.
- `take_events(stream, max_, within)` yields what faust's `Stream.take_events` does
  (lists of at most `max_` events, each list once `max_` are in or `within` seconds
  after its first event; every event acknowledged after the agent is done with it),
  but takes the events already in the stream's queue in one go. Faust's own moves each
  event through the stream's iterator, a background drainer and a buffering processor,
  with an event-loop round per event, and only while it waits: at a few thousand
  events per second a batch was what that drainer managed in `within` (~200), so each
  batch's per-entity writes (Redis rows, state changelog) were shared by few events.
  Per event it keeps faust's stream rules (as faust's compiled iterator does them):
  an event of an earlier consumer generation, or taken while flow control is
  suspended (a rebalance), is dropped unacknowledged; the others are tracked as
  pending acks, passed to the sensors, and acknowledged with `Stream.ack`.
- `RawSchema` (the app's default `Schema`) decodes the records of a topic declared
  with the raw codec for key and value (and no key or value type) without faust's
  serializer registry: faust's decode looks the codec up, runs it and checks each
  payload for a model to rebuild, 3-8 us a record to return the bytes it was given.
  Bytes and None are passed through as they come (what that path returns for them);
  anything else takes faust's path.
- `FeaturesApp.create_event` reads the `Event` setting once rather than per record
  (each settings read goes through `SettingsRegistry.__getattribute__`), and the
  producer's buffer reports its size without reading the `producer_threaded` setting:
  faust's conductor asks it before delivering every record (`wait_until_ebb`).
- `kafka_producer(app)` is the aiokafka producer inside faust's, for sending a batch
  of vectors at once (`shared.kafka.produce_all`): faust's `Topic.send` costs a future,
  a buffer hop and a debug line per record.
- `handled_elsewhere(app, tp, first, last)`: offsets the service read itself (records
  faust's fetcher never handed over) count as acknowledged in faust's commits. Faust
  commits only up to its first unacknowledged offset, so without it the group's
  offset stayed at the gap for good: lag tools saw a backlog that was not there, and
  training, which waits for a quiet partition while the features group still lags on
  `events`, never learned the stream's last events (the fault suite's kill -9 test).
  Once a partition has had such a gap, `commit_handled` also commits, after each batch,
  the offsets the service itself keeps as handled: in CI faust's commits stayed at a
  gap even with the gap record.

The state table's changelog is written explicitly by the service (see
`services.features.app.TableStateStore`), since a batch mixes partitions. So that
faust still drops the keys of partitions a rebalance took away (its in-memory store
does that from its own key -> changelog partition map, filled only by recovery), the
service keeps that map up to date through `key_partitions(table)`, and reads it to
know where a recovered entity's tombstone goes when its state is forgotten.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Coroutine, MutableMapping
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.serializers import codecs
from faust.serializers.registry import Registry
from faust.serializers.schemas import DecodeFunction
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types import TP, AppT, ChannelT, EventT, K, Message, StreamT, TableT, TransportT, V
from faust.types.core import HeadersArg
from mode.services import WaitArgT

__all__ = [
    "EagerConsumer",
    "FeaturesApp",
    "RawSchema",
    "commit_handled",
    "handled_elsewhere",
    "kafka_producer",
    "take_events",
]

_EVENT_WAIT = asyncio.Event.wait.__code__
FETCH_MAX_WAIT_MS = 100  # the broker holds a fetch with no data for this long
IDLE_WAIT_S = 1.0  # how long take_events waits for a first event before looking again


class EagerConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, delivering a record without tasks when it can, and
    fetching again as soon as a full stream buffer drains to half."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffer_dropped = asyncio.Event()

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def on_buffer_drop(self, tp: TP) -> None:
        super().on_buffer_drop(tp)
        self._buffer_dropped.set()

    async def _wait_next_records(self, timeout: float) -> tuple[RecordMap | None, set[TP] | None]:
        # A full stream buffer takes its partitions out of the fetch, which then waits
        # its whole timeout (1 s) on the partitions left (faust's `__leader` topic),
        # however soon the buffer drains: wait for the drain instead.
        if self.flow_active and self._buffered_partitions:
            self._buffer_dropped.clear()
            await self.wait(self._buffer_dropped, timeout=timeout)  # type: ignore[arg-type]
        return await super()._wait_next_records(timeout)

    async def wait_first(self, *coros: WaitArgT, timeout: Any = None) -> Any:
        # faust's fetch loop: `wait_first(callback(message), self.suspend_flow.wait())`
        if timeout is None and len(coros) == 2 and self._is_flow_wait(coros[1]):
            delivery = cast(Coroutine[Any, Any, Any], coros[0])
            try:
                pending = delivery.send(None)
            except StopIteration:  # delivered without waiting: the usual case
                cast(Coroutine[Any, Any, Any], coros[1]).close()
                return None
            coros = (_finish(delivery, pending), coros[1])
        return await super().wait_first(*coros, timeout=timeout)

    def _is_flow_wait(self, coro: object) -> bool:
        code = getattr(coro, "cr_code", None)
        frame = getattr(coro, "cr_frame", None)
        return (
            code is _EVENT_WAIT
            and frame is not None
            and (frame.f_locals.get("self") is self.suspend_flow)
        )


async def _finish(coro: Coroutine[Any, Any, Any], pending: Any) -> None:
    """Drive `coro` to its end; it yielded `pending` (a future, or None) when first stepped."""
    while True:
        if pending is not None:
            pending._asyncio_future_blocking = False  # as a Task does with a yielded future
        try:
            await (pending if pending is not None else asyncio.sleep(0))
        except asyncio.CancelledError as cancel:
            step = _thrower(coro, cancel)
        except Exception:  # the coroutine reads the failure from its own future
            step = coro.send
        else:
            step = coro.send
        try:
            pending = step(None)
        except StopIteration:
            return


def _thrower(coro: Coroutine[Any, Any, Any], error: BaseException) -> Any:
    return lambda _: coro.throw(error)


class RawSchema(faust.Schema):
    """Faust's schema, decoding raw records without the serializer registry.

    Only when the schema is the raw codec's for key and value, with no key or value
    type, and the app's serializers and the `raw` codec are faust's own; otherwise it
    is `faust.Schema`. Decoding errors cannot happen on the short path (nothing is
    decoded), so the error callbacks are faust's path's alone.

    >>> schema = RawSchema(key_serializer="raw", value_serializer="raw")
    >>> (schema.key_serializer, schema.value_serializer)
    ('raw', 'raw')
    """

    def compile(
        self,
        app: AppT,
        *,
        on_key_decode_error: Any = None,
        on_value_decode_error: Any = None,
        default_propagate: bool = False,
    ) -> DecodeFunction:
        errors: dict[str, Any] = {}
        if on_key_decode_error is not None:
            errors["on_key_decode_error"] = on_key_decode_error
        if on_value_decode_error is not None:
            errors["on_value_decode_error"] = on_value_decode_error
        decode = super().compile(app, default_propagate=default_propagate, **errors)
        if not self.passes_bytes_through(app):
            return decode
        create_event = app.create_event

        async def decode_raw(message: Message, *, propagate: bool = default_propagate) -> Any:
            key, value = message.key, message.value
            if (key is None or key.__class__ is bytes) and (
                value is None or value.__class__ is bytes
            ):
                return create_event(key, value, message.headers, message)
            return await decode(message, propagate=propagate)

        return cast(DecodeFunction, decode_raw)

    def passes_bytes_through(self, app: AppT) -> bool:
        """Whether faust's decode returns a record's key and value bytes (or None) as they are."""
        raw = codecs.get_codec("raw")
        return (
            self.key_type is None
            and self.value_type is None
            and self.key_serializer == "raw"
            and self.value_serializer == "raw"
            and type(raw) is codecs.raw
            and len(raw.nodes) == 1
            and type(app.serializers) is Registry
        )


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, its aiokafka consumer's fetch wait shortened."""

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _ProducerBuffer(ProducerBuffer):
    """Faust's buffer of table writes, for an unthreaded producer (`producer_threaded` off)."""

    @property
    def size(self) -> int:
        return self.pending.qsize()


class _Producer(faust_aiokafka.Producer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.app.conf.producer_threaded:  # else faust's buffer, reading the queue it uses
            unused = self.buffer
            self.buffer = _ProducerBuffer(loop=self.loop, beacon=self.beacon)
            self.buffer.app = self.app
            self.beacon.discard(unused.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = EagerConsumer
    Producer = _Producer


class FeaturesApp(faust.App):
    """A faust app whose consumer is `EagerConsumer`, its producer's buffer sized cheaply,
    its topics' default schema `RawSchema`, and its events created without a settings read.
    """

    _event_type: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("Schema", RawSchema)
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)

    def create_event(self, key: K, value: V, headers: HeadersArg, message: Message) -> EventT:
        event_type = self._event_type
        if event_type is None:
            event_type = self._event_type = self.conf.Event
        return cast(EventT, event_type(self, key, value, headers, message))


def kafka_producer(app: faust.App) -> AIOKafkaProducer:
    """The aiokafka producer inside the app's (started with the app)."""
    return cast(AIOKafkaProducer, cast(Any, app.producer)._ensure_producer())


async def handled_elsewhere(
    app: faust.App, topic: str, partition: int, first: int, last: int
) -> None:
    """Offsets `first`..`last` of `topic`/`partition` were handled outside faust's
    stream: let faust's commits pass them (its consumer's gap record, which it keeps
    for offsets no record has, as on a compacted topic)."""
    consumer = cast(Any, app.consumer)
    await consumer._add_gap(TP(topic, partition), first, last)


async def commit_handled(app: faust.App, topic: str, next_offsets: dict[int, int]) -> None:
    """Commit the group's offsets at `next_offsets` (partition -> the offset after the
    last handled) through faust's consumer: for partitions whose faust commits had
    stopped at a gap (seen in CI despite the gap record), the service's own record of
    what it handled is what the group shows. Faust never commits below it later: it
    commits only past offsets it acknowledged, all of them later records."""
    consumer = cast(Any, app.consumer)
    await consumer._commit({TP(topic, p): offset for p, offset in next_offsets.items()})


async def take_events(
    stream: StreamT[Any], max_: int, within: float
) -> AsyncGenerator[list[EventT], None]:
    """Lists of at most `max_` events of `stream`, as `stream.take_events(max_, within)`.

    A list is yielded once it holds `max_` events, or `within` seconds after its first
    event was taken (faust's counts from the start of the wait, so an idle stream
    wakes every `within`); its events are acknowledged when the consumer asks for the
    next list (or closes the generator), exactly as faust's `take_events` does.
    """
    app = stream.app
    consumer = app.consumer
    topics = app.topics
    flow_control = app.flow_control
    sensors = app.sensors
    queue = cast(ChannelT[Any], stream.channel).queue
    loop = asyncio.get_running_loop()
    await stream.maybe_start()
    while not stream.should_stop:
        events: list[EventT] = []
        deadline = None  # `within` after the first event taken
        while len(events) < max_:
            if queue.empty():
                if deadline is None:  # none yet: wait, looking at should_stop each second
                    remaining = IDLE_WAIT_S
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
                except StopAsyncIteration:  # faust closed the stream (a stop): end here
                    return
            else:
                item = queue.get_nowait()
            event = cast(EventT, item)
            message = event.message
            if not flow_control.is_active() or (
                message.generation_id != app.consumer_generation_id
            ):
                continue  # fetched before a rebalance: faust's iterator drops it, unacked
            if topics.acks_enabled_for(message.topic) and not message.tracked:
                message.tracked = True
                consumer.track_message(message)
            sensors.on_stream_event_in(message.tp, message.offset, stream, event)
            events.append(event)
            if deadline is None:
                deadline = loop.time() + within
        if not events:
            continue
        cast(faust.Stream[Any], stream).events_total += len(events)
        try:
            yield events
        finally:
            for event in events:
                await stream.ack(event)


def key_partitions(table: TableT[Any, Any]) -> MutableMapping[Any, int]:
    """Faust's in-memory store's map of each key to its changelog partition.

    Faust fills it while it recovers a table and uses it after a rebalance to drop
    the keys of partitions this worker no longer owns; keys written to the store
    directly must be added by the writer (and removed when deleted).
    """
    partitions: MutableMapping[Any, int] = table.data._key_partition  # type: ignore[attr-defined]
    return partitions
