"""Watermark: the event time every partition has reached (monitoring's clock); and
LearnerWatermark: how far the learner may advance given what each partition delivered."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

from services.training.learner import OnlineLearner
from shared.watermark import EPSILON, LearnerWatermark, Watermark
from tests.fakes import Recorder

T0 = datetime(2020, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


F0, F1, L0 = ("features", 0), ("features", 1), ("labels", 0)
P0 = ("predictions", 0)


# ---- Watermark: the common rules


def test_a_caught_up_partition_without_a_time_holds_nothing_back_at_once() -> None:
    w = Watermark(idle_s=5)
    w.assign([P0, L0], now=0)
    w.observe(P0, at(9), now=0)
    w.observe(L0, None, now=0)  # delivered, but untimed (or invalid)
    assert w.get(now=0) is None, "not caught up: its next item may be of any time"
    w.caught_up(L0, True)
    assert w.get(now=0) == at(9)
    assert w.get(now=0, topic="labels") is None, "no time on that topic yet"


def test_a_partitions_time_never_goes_back_but_a_learners_does() -> None:
    w, learner = Watermark(idle_s=5), LearnerWatermark(idle_s=5)
    for watermark in (w, learner):
        watermark.assign([P0], now=0)
        watermark.observe(P0, at(9), now=0)
        watermark.observe(P0, at(4), now=0)
    assert w.get(now=0) == at(9)
    assert learner.get(now=0) == at(4) - EPSILON


def test_each_topic_has_its_own_view_and_idle_ones_flush() -> None:
    w = Watermark(idle_s=5)
    w.assign([P0, L0], now=0)
    w.observe(P0, at(9), now=0)
    w.observe(L0, at(2), now=1)
    w.caught_up(L0, True)

    def views(now: float) -> tuple[datetime | None, ...]:  # all, predictions, labels
        return w.get(now), w.get(now, topic="predictions"), w.get(now, topic="labels")

    assert views(6) == (at(2), at(9), at(2)), "labels quiet for exactly idle_s: not longer"
    assert views(6.5) == (at(9), at(9), at(2)), "labels skipped; alone, their latest time"
    w.caught_up(P0, True)
    assert views(12) == (at(9), at(9), at(2)), "every partition skipped: the latest time"


# ---- LearnerWatermark: training's


def test_a_partition_that_delivered_nothing_yet_holds_everything_back() -> None:
    w = LearnerWatermark(idle_s=2, hold_s=10)
    w.assign([F0, L0], now=0)
    w.observe(F0, at(10), now=0)
    assert w.get(now=1) is None
    w.caught_up(L0, True)
    assert w.get(now=5) is None, "caught up and idle, but no label has come at all yet"
    assert w.get(now=10.5) == at(10) - EPSILON, "the labels stream waited for long enough"


def test_an_empty_partition_of_a_live_topic_is_skipped_once_idle() -> None:
    w = LearnerWatermark(idle_s=2)
    w.assign([F0, F1, L0], now=0)
    w.observe(F0, at(10), now=0)
    w.observe(L0, at(8), now=0)
    w.caught_up(F1, True)
    assert w.get(now=1) is None, "caught up but not idle for long enough yet"
    assert w.get(now=2.5) == at(8) - EPSILON, "nothing keyed to it: skipped"


def test_the_watermark_sits_just_below_the_slowest_partition() -> None:
    w = LearnerWatermark(idle_s=2)
    w.assign([F0, F1, L0], now=0)
    w.observe(F0, at(10), now=0)
    w.observe(F1, at(4), now=0)
    w.observe(L0, at(7), now=0)
    assert w.get(now=0) == at(4) - EPSILON
    w.observe(F1, at(12), now=1)
    assert w.get(now=1) == at(7) - EPSILON


def test_an_idle_partition_is_skipped_only_when_caught_up() -> None:
    w = LearnerWatermark(idle_s=2)
    w.assign([F0, F1], now=0)
    w.observe(F0, at(3), now=0)
    w.observe(F1, at(9), now=0)
    assert w.get(now=10) == at(3) - EPSILON, "idle but behind: its records are coming"
    w.caught_up(F0, True)
    assert w.get(now=10) == at(9) - EPSILON
    w.observe(F0, at(4), now=11)  # a new record: no longer caught up, no longer idle
    assert w.get(now=11) == at(4) - EPSILON


def test_labels_without_time_hold_nothing_back() -> None:
    w = LearnerWatermark(idle_s=2)
    w.assign([F0, L0], now=0)
    w.observe(F0, at(5), now=0)
    w.observe(L0, None, now=0)  # delivered, but untimed
    assert w.get(now=0) == at(5) - EPSILON
    w.observe(L0, at(2), now=1)
    assert w.get(now=1) == at(2) - EPSILON


def test_everything_caught_up_and_idle_flushes_to_the_latest_time() -> None:
    w = LearnerWatermark(idle_s=2)
    w.assign([F0, F1, L0], now=0)  # F1 never delivers anything
    w.observe(F0, at(5), now=0)
    w.observe(L0, at(8), now=0)
    for p in (F0, F1, L0):
        w.caught_up(p, True)
    assert w.get(now=1) is None
    assert w.get(now=3) == at(8)


def test_checkpointed_times_count_as_delivered_and_revoked_partitions_are_dropped() -> None:
    w = LearnerWatermark(idle_s=2)
    w.assign([F0, L0], now=0, last_times={F0: at(6), L0: at(4)})
    assert w.get(now=0) == at(4) - EPSILON
    w.revoke([L0])
    assert w.get(now=0) == at(6) - EPSILON
    assert w.last_times() == {F0: at(6)}


def test_restart_forgets_wall_clock_state() -> None:
    w = LearnerWatermark(idle_s=2)
    w.assign([F0, L0], now=0)
    w.observe(F0, at(5), now=0)
    w.observe(L0, at(9), now=0)
    w.caught_up(F0, True)
    assert w.get(now=5) == at(9) - EPSILON
    restored = pickle.loads(pickle.dumps(w))
    restored.restart(now=100)
    assert restored.get(now=100) == at(5) - EPSILON, "not known to be caught up any more"


def test_a_topic_owing_an_item_gets_hold_s_instead_of_idle_s() -> None:
    w = LearnerWatermark(idle_s=2, hold_s=10)
    w.assign([F0, L0], now=0)
    w.observe(F0, at(1), now=0)
    w.hold("e5", "features", now=0)  # label of e5 consumed, e5's features not yet
    w.observe(L0, at(5), now=0)
    w.caught_up(F0, True)
    w.caught_up(L0, True)
    assert w.get(now=3) == at(1) - EPSILON, "labels skipped, the features owing e5 not"
    assert w.holds == 1
    assert w.get(now=11) == at(5), "quiet for longer than hold_s: skipped after all"
    assert w.holds == 0, "e5's features may never come"

    # A features partition whose keys dried up is skipped after hold_s even while
    # fresh labels keep waiting for their features.
    w.observe(F0, at(6), now=20)
    w.observe(L0, at(9), now=20)
    w.caught_up(F0, True)
    w.caught_up(L0, True)
    assert w.get(now=25) == at(9), "nothing owed: idle_s"
    w.hold("e7", "features", now=29)
    assert w.get(now=29.5) == at(6) - EPSILON, "owed: hold_s"
    assert w.get(now=31) == at(9)
    assert w.holds == 1
    w.release("e7")
    assert w.holds == 0


# ---- with the learner: features lag behind labels


class Consumer:
    """Drives a learner and a watermark the way the training worker does."""

    def __init__(self, idle_s: float = 2, hold_s: float = 30) -> None:
        self.model = Recorder()
        self.learner = OnlineLearner({"rec": self.model})
        self.watermark = LearnerWatermark(idle_s=idle_s, hold_s=hold_s)
        self.watermark.assign([F0, L0], now=0)

    def features(self, event_id: str, seconds: float, now: float) -> None:
        self.learner.add_features(event_id, at(seconds), {"id": event_id})
        self.watermark.release(event_id)
        self.watermark.observe(F0, at(seconds), now)

    def label(self, event_id: str, y: int, seconds: float, now: float) -> None:
        self.learner.add_label(event_id, y, at(seconds))
        if not self.learner.has_features(event_id):
            self.watermark.hold(event_id, "features", now)
        self.watermark.observe(L0, at(seconds), now)

    def step(self, now: float, caught_up: bool = False, drained: bool = True) -> None:
        for p in (F0, L0):
            self.watermark.caught_up(p, caught_up)
        self.watermark.drained(F0, drained)
        watermark = self.watermark.get(now)
        if watermark is not None:
            self.learner.advance(watermark)


RIVER_ORDER = [
    ("predict", "e1"),
    ("learn", "e1", 1),
    ("predict", "e2"),
    ("learn", "e2", 0),
    ("predict", "e3"),
    ("learn", "e3", 1),
]


def test_labels_ahead_of_slow_features_wait_for_them() -> None:
    c = Consumer()
    c.features("e1", 1, now=0)
    for i, y in ((1, 1), (2, 0), (3, 1)):  # labels at their event's time, all read first
        c.label(f"e{i}", y, i, now=0)
    c.step(now=0.5)
    assert c.model.log == [], "e1's features are the last read, at 1: nothing is safe yet"
    c.features("e2", 2, now=1)
    c.step(now=1)
    assert c.model.log == RIVER_ORDER[:2], "up to just below 2: e2 itself may still have a label"
    c.features("e3", 3, now=1.5)
    c.step(now=3.6, caught_up=True)  # then everything is read and quiet: flush
    assert c.model.log == RIVER_ORDER
    assert c.learner.late == 0


def test_features_stalled_longer_than_idle_still_come_before_their_labels() -> None:
    """The features service falls behind by more than idle_s: the labels it owes hold."""
    c = Consumer(idle_s=2)
    c.features("e1", 1, now=0)
    for i, y in ((1, 1), (2, 0), (3, 1)):
        c.label(f"e{i}", y, i, now=0)
    c.step(now=5, caught_up=True)  # both partitions caught up and quiet for 5 s
    assert c.model.log == [], "features owed for e2 and e3: held below the last features"
    assert c.watermark.get(now=5) == at(1) - EPSILON
    c.features("e2", 2, now=6)
    c.features("e3", 3, now=6)
    c.step(now=6)
    c.step(now=9, caught_up=True)
    assert c.model.log == RIVER_ORDER
    assert c.learner.late == 0


def test_labels_wait_however_long_the_features_service_is_away() -> None:
    """The features service is down for an hour (hold_s is 30 s): the groups upstream
    say its partition still has records to come, so the labels wait and none expires."""
    c = Consumer(idle_s=2, hold_s=30)
    c.features("e1", 1, now=0)
    for i, y in ((1, 1), (2, 0), (3, 1)):
        c.label(f"e{i}", y, i, now=0)
    for now in (5, 60, 600, 3600):
        c.step(now=now, caught_up=True, drained=False)
        assert c.watermark.get(now=now) == at(1) - EPSILON
    assert c.model.log == [], "e1 may still have company at 1: nothing is safe yet"
    c.features("e2", 2, now=3601)  # back, and its backlog flows
    c.features("e3", 3, now=3601)
    c.step(now=3601, drained=False)
    c.step(now=3604, caught_up=True, drained=True)
    assert c.model.log == RIVER_ORDER
    assert c.learner.late == 0


def test_a_checkpoint_naming_the_former_training_watermark_still_loads() -> None:
    from services.training.checkpoint import _loads

    w = LearnerWatermark(idle_s=2, hold_s=7)
    w.assign([F0, L0], now=0)
    w.observe(F0, at(5), now=0)
    old = pickle.dumps(w, protocol=0).replace(
        b"cshared.watermark\nLearnerWatermark\n", b"cservices.training.watermark\nWatermark\n"
    )
    assert b"services.training.watermark" in old
    loaded = _loads(old)
    assert isinstance(loaded, LearnerWatermark)
    assert loaded.hold_s == 7 and loaded.partitions[F0].last_time == at(5)


# ---- a lone item far ahead


def test_a_lone_item_far_ahead_moves_no_clock_even_in_a_flush() -> None:
    for w in (Watermark(idle_s=1, max_jump=timedelta(minutes=10)), LearnerWatermark(idle_s=1)):
        w.max_jump = timedelta(minutes=10)
        w.assign([F0, L0], now=0)
        w.observe(L0, at(0), now=0)
        for second in (1, 2, 3 * 3600, 4):  # one event dated three hours ahead
            w.observe(F0, at(second), now=0)
        w.caught_up(F0, True)
        w.caught_up(L0, True)
        assert w.get(now=5) == at(4), type(w).__name__  # everything idle: a flush
        assert w.held_jumps == 1


def test_a_stream_that_resumes_after_a_gap_moves_the_clock_with_its_second_item() -> None:
    w = Watermark(idle_s=1, max_jump=timedelta(minutes=10))
    w.assign([F0], now=0)
    for second in (1, 2, 7200, 7201):  # two hours of silence, then the stream goes on
        w.observe(F0, at(second), now=0)
    assert w.get(now=0) == at(7201)
    w.observe(F0, at(7202), now=0)
    assert w.get(now=0) == at(7202)


def test_an_old_checkpoints_watermark_has_no_jump_limit_until_told() -> None:
    w = pickle.loads(pickle.dumps(LearnerWatermark(idle_s=1)))
    del w.__dict__["max_jump"]  # as pickled before the limit existed
    w.assign([F0], now=0)
    w.observe(F0, at(1), now=0)
    w.observe(F0, at(99_999), now=0)
    assert w.get(now=0) == at(99_999) - EPSILON


def test_daily_data_moves_in_steps_of_days_and_only_a_step_of_years_is_held() -> None:
    w = Watermark(idle_s=1, max_jump=timedelta(minutes=10))
    w.assign([F0], now=0)
    day = 86_400
    for d in range(10):
        w.observe(F0, at(d * day), now=0)
    assert w.get(now=0) == at(9 * day)
    assert w.held_jumps == 1, "the second day only, before a step was known"
    w.observe(F0, at(9 * day + 10 * 365 * day), now=0)  # ten years ahead
    w.observe(F0, at(10 * day), now=0)
    assert (w.get(now=0), w.held_jumps) == (at(10 * day), 2)


def test_a_silent_partition_waits_a_moment_after_its_topic_comes_alive() -> None:
    """A producer writes a batch's partitions a few ms apart: the first to deliver must
    not let its quiet sibling (assigned long ago) be skipped at once."""
    w = LearnerWatermark(idle_s=1)
    w.assign([F0, F1, L0], now=0)
    w.observe(L0, at(50), now=0)
    w.caught_up(F1, True)  # silent since its assignment
    w.observe(F0, at(10), now=100)  # features start long after the assignment
    assert w.get(now=100.2) is None, "features/1 may still deliver anything"
    w.observe(F0, at(11), now=100.25)
    assert w.get(now=100.3) == at(11) - EPSILON, "a moment after the topic came alive"
