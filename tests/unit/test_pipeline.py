"""Pipeline files: the shipped ones load, and every kind of bad file names its field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from shared.pipeline import DataDriftSettings, PipelineConfig, PipelineConfigError, load_pipeline

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
name: shop
task: binary
features:
  numeric: [amount, age]
  categorical: [country]
  aggregates:
    - {field: amount, how: mean, window: 1h}
    - {field: amount, how: count, window: 90s, name: recent_orders}
models:
  - name: logreg
    params: {l2: 0.01}
  - name: arf
labels:
  ttl: 30m
"""

Write = Callable[[str], Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    def _write(text: str) -> Path:
        path = tmp_path / "pipeline.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return _write


def problems_of(path: Path) -> list[str]:
    with pytest.raises(PipelineConfigError) as caught:
        load_pipeline(path)
    assert caught.value.path == str(path)
    for problem in caught.value.problems:
        assert problem in str(caught.value)
    return caught.value.problems


@pytest.mark.parametrize("name", ["default.yaml", "weather.yaml"])
def test_the_shipped_pipelines_load(name: str) -> None:
    config = load_pipeline(ROOT / "pipelines" / name)
    assert config.task == "binary"
    assert config.features.numeric and not config.features.aggregates
    assert len(config.models) == 2


def test_the_default_pipeline_matches_the_agrawal_stream() -> None:
    from river.datasets import synth

    x, _ = next(iter(synth.Agrawal(seed=1)))
    config = load_pipeline(ROOT / "pipelines" / "default.yaml")
    assert list(config.features.numeric) == list(x)
    assert [m.name for m in config.models] == ["logreg", "hat"]
    assert config.labels.ttl == timedelta(hours=1)


def test_a_full_file_loads_with_durations_and_default_names(write: Write) -> None:
    config = load_pipeline(write(GOOD))
    assert config.name == "shop"
    mean, count = config.features.aggregates
    assert (mean.name, mean.window) == ("amount_mean_1h", timedelta(hours=1))
    assert (count.name, count.window) == ("recent_orders", timedelta(seconds=90))
    assert config.features.names() == [
        "amount",
        "age",
        "country",
        "amount_mean_1h",
        "recent_orders",
    ]
    assert config.models[0].params == {"l2": 0.01}
    assert config.models[1].params == {}
    assert config.labels.ttl == timedelta(minutes=30)


def test_optional_sections_have_defaults(write: Write) -> None:
    config = load_pipeline(
        write("name: n\ntask: regression\nfeatures: {numeric: [x]}\nmodels: [{name: linreg}]\n")
    )
    assert config.features.categorical == () and config.features.aggregates == ()
    assert config.labels.ttl == timedelta(hours=1)


def test_config_is_frozen(write: Write) -> None:
    config = load_pipeline(write(GOOD))
    with pytest.raises(ValueError, match="frozen"):
        config.name = "other"


def test_hashes_are_stable_and_normalised(write: Write) -> None:
    config = load_pipeline(write(GOOD))
    same = load_pipeline(
        write(GOOD.replace("window: 1h", "window: 60m").replace("ttl: 30m", "ttl: 1800s"))
    )
    assert config.config_hash() == same.config_hash()
    assert config.feature_set_version() == same.feature_set_version()
    assert len(config.config_hash()) == 16 and int(config.config_hash(), 16) >= 0
    assert PipelineConfig.model_validate(config.model_dump(mode="json")) == config


def test_feature_set_version_changes_only_with_the_features(write: Write) -> None:
    config = load_pipeline(write(GOOD))
    other_models = load_pipeline(write(GOOD.replace("  - name: arf\n", "  - name: hat\n")))
    other_ttl = load_pipeline(write(GOOD.replace("ttl: 30m", "ttl: 2h")))
    other_features = load_pipeline(write(GOOD.replace("[amount, age]", "[amount, age, tenure]")))
    assert other_models.feature_set_version() == config.feature_set_version()
    assert other_ttl.feature_set_version() == config.feature_set_version()
    assert other_features.feature_set_version() != config.feature_set_version()
    hashes = {c.config_hash() for c in (config, other_models, other_ttl, other_features)}
    assert len(hashes) == 4


def test_the_data_drift_section_changes_no_model_identity(write: Write) -> None:
    """DESIGN.md: drift thresholds leave a model's state alone, so the section is not
    in `config_hash` (what training's checkpoints and versions belong to)."""
    config = load_pipeline(write(GOOD))
    assert config.data_drift == DataDriftSettings()
    tuned = load_pipeline(write(GOOD + "data_drift:\n  psi_threshold: 0.1\n  every: 100\n"))
    assert (tuned.data_drift.psi_threshold, tuned.data_drift.every) == (0.1, 100)
    assert tuned.config_hash() == config.config_hash()
    assert tuned.feature_set_version() == config.feature_set_version()


def test_the_shipped_pipelines_keep_the_hash_they_had_before_data_drift() -> None:
    """The hashes of before the section existed: their checkpoints still resume."""
    hashes = {
        name: load_pipeline(ROOT / "pipelines" / name).config_hash()
        for name in ("default.yaml", "weather.yaml")
    }
    assert hashes == {"default.yaml": "c3aa5d5555d22457", "weather.yaml": "b89b8ca3c4de3b40"}


def test_bad_data_drift_settings_name_their_field(write: Write) -> None:
    text = GOOD + "data_drift:\n  js_threshold: 0\n  bins: 1\n  rearm: 1.5\n  typo: 3\n"
    assert problems_of(write(text)) == [
        "data_drift.bins: Input should be greater than or equal to 2",
        "data_drift.js_threshold: Input should be greater than 0",
        "data_drift.rearm: Input should be less than or equal to 1",
        "data_drift.typo: unknown key",
    ]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.yaml") == ["(file): not found"]


def test_a_yaml_syntax_error_gives_its_line(write: Write) -> None:
    (problem,) = problems_of(write("name: x\ntask: binary\nfeatures: [a\nmodels: []\n"))
    assert problem.startswith("(yaml): line 4")


def test_a_key_written_twice_is_refused(write: Write) -> None:
    (problem,) = problems_of(write(GOOD + "task: regression\n"))
    assert "duplicate key 'task'" in problem and "line 15" in problem


@pytest.mark.parametrize(
    ("text", "got"), [("", "an empty file"), ("- a\n- b\n", "list"), ("3\n", "int")]
)
def test_a_file_that_is_not_a_mapping_is_refused(write: Write, text: str, got: str) -> None:
    assert problems_of(write(text)) == [f"(root): expected a mapping of sections, got {got}"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("name: shop\n", "", "name: required"),
        ("name: shop", "name: 'a b'", "name: String should match pattern"),
        (
            "task: binary",
            "task: ranking",
            "task: Input should be 'binary', 'multiclass' or 'regression'",
        ),
        ("labels:", "colour: red\nlabels:", "colour: unknown key"),
        ("ttl: 30m", "ttl: 30", "labels.ttl: expected <number><unit>"),
        ("ttl: 30m", "ttl: -5m", "labels.ttl: expected <number><unit>"),
        ("ttl: 30m", "tll: 30m", "labels.tll: unknown key"),
        ("[amount, age]", "[amount, 7]", "features.numeric.1: Input should be a valid string"),
        ("window: 1h}", "window: 1w}", "features.aggregates.0.window: expected <number><unit>"),
        ("how: mean", "how: median", "features.aggregates.0.how: Input should be"),
        ("how: mean,", "how: mean, every: 2,", "features.aggregates.0.every: unknown key"),
        ("{field: amount, how: mean", "{how: mean", "features.aggregates.0.field: required"),
        (
            "{field: amount, how: mean",
            "{field: country, how: mean",
            "features: aggregate over categorical field 'country'",
        ),
        ("[amount, age]", "[amount, age, country]", "features: duplicate feature names 'country'"),
        ("name: recent_orders", "name: age", "features: duplicate feature names 'age'"),
        ("  - name: arf\n", "  - name: svm\n", "models.1.name: unknown model 'svm'"),
        ("  - name: arf\n", "  - name: logreg\n", "models: duplicate model names 'logreg'"),
        (
            "  - name: arf\n",
            "  - name: arf\n    parameters: {}\n",
            "models.1.parameters: unknown key",
        ),
        ("{l2: 0.01}", "{l3: 0.01}", "models.0.params: model 'logreg' has no parameter 'l3'"),
        (
            "task: binary",
            "task: regression",
            "models: model 'logreg' does not fit task 'regression'",
        ),
        (
            "task: binary",
            "task: multiclass",
            "models: model 'logreg' does not fit task 'multiclass'",
        ),
    ],
)
def test_each_kind_of_bad_file_names_its_field(
    write: Write, old: str, new: str, expected: str
) -> None:
    assert old in GOOD
    problems = problems_of(write(GOOD.replace(old, new, 1)))
    assert any(problem.startswith(expected) for problem in problems), problems


def test_at_least_one_model_and_one_feature(write: Write) -> None:
    text = "name: n\ntask: binary\nfeatures: {numeric: []}\nmodels: []\n"
    problems = problems_of(write(text))
    assert any(p.startswith("features: no features") for p in problems), problems
    assert any(p.startswith("models: no models") for p in problems), problems


def test_every_problem_is_reported_at_once(write: Write) -> None:
    text = "name: n\ntask: binary\nfeatures: {numeric: [x], extra: 1}\nmodels: [{name: svm}]\nlabels: {ttl: 0s}\n"
    problems = problems_of(write(text))
    assert [p.split(":")[0] for p in problems] == ["features.extra", "models.0.name", "labels.ttl"]
