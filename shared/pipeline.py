"""The pipeline file (`PIPELINE_CONFIG`): what to learn, from which features, with which models.

`load_pipeline` reads and checks a YAML file; every problem found is reported at
once as `<dotted.field>: <reason>` in a `PipelineConfigError`.

>>> config = PipelineConfig.model_validate({
...     "name": "demo",
...     "task": "binary",
...     "features": {
...         "numeric": ["x"],
...         "aggregates": [{"field": "x", "how": "mean", "window": "60m"}],
...     },
...     "models": [{"name": "logreg"}],
... })
>>> config.features.aggregates[0].name, config.labels.ttl
('x_mean_1h', datetime.timedelta(seconds=3600))
>>> len(config.config_hash()), len(config.feature_set_version())
(16, 16)
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.catalogue import Task, check_task, get_spec
from shared.durations import format_duration, parse_duration

__all__ = [
    "Aggregate",
    "DataDriftSettings",
    "Features",
    "Labels",
    "ModelRef",
    "PipelineConfig",
    "PipelineConfigError",
    "load_pipeline",
]


def _to_timedelta(value: object) -> timedelta:
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise ValueError(f"duration must be positive; got {value!r}")
        return value
    return parse_duration(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(_to_timedelta),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
Name = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Aggregate(_Section):
    """A per-entity rolling window over one event field, e.g. the mean `amount` over 1h."""

    field: Name
    how: Literal["count", "sum", "mean", "min", "max", "std"]
    window: Duration
    name: Name = ""  # defaults to f"{field}_{how}_{window}"

    @model_validator(mode="after")
    def _default_name(self) -> Aggregate:
        if not self.name:
            name = f"{self.field}_{self.how}_{format_duration(self.window)}"
            object.__setattr__(self, "name", name)
        return self


class Features(_Section):
    """The model's inputs: raw numeric and categorical fields and rolling aggregates."""

    numeric: tuple[Name, ...] = ()
    categorical: tuple[Name, ...] = ()
    aggregates: tuple[Aggregate, ...] = ()

    def names(self) -> list[str]:
        """Every feature name, in file order: numeric, categorical, then aggregates."""
        return [*self.numeric, *self.categorical, *(a.name for a in self.aggregates)]

    @model_validator(mode="after")
    def _consistent(self) -> Features:
        problems = []
        if not self.names():
            problems.append("no features: list at least one numeric, categorical or aggregate")
        twice = sorted(name for name, n in Counter(self.names()).items() if n > 1)
        if twice:
            problems.append(f"duplicate feature names {', '.join(map(repr, twice))}")
        clash = sorted({a.field for a in self.aggregates} & set(self.categorical))
        if clash:
            problems.append(
                f"aggregate over categorical field {', '.join(map(repr, clash))}"
                " (aggregates need a numeric field)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ModelRef(_Section):
    """A catalogue model by name, with optional parameters for its estimator."""

    name: Name
    params: dict[Name, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _in_catalogue(cls, name: str) -> str:
        get_spec(name)  # a CatalogueError is a ValueError: pydantic reports it at the field
        return name

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" in info.data:
            get_spec(info.data["name"]).check_params(params)
        return params


class Labels(_Section):
    """How labels join predictions: `ttl` is how long a prediction waits for its label."""

    ttl: Duration = timedelta(hours=1)


class DataDriftSettings(_Section):
    """Monitoring's data drift per feature (`services.monitoring.data_drift`).

    The first `reference_size` feature vectors are the reference, the latest
    `window_size` the current window; every `every` vectors both are compared, per
    feature. Thresholds: PSI 0.2 for numeric features and aggregates (credit-scoring
    practice reads PSI < 0.1 as stable, 0.1-0.25 as a moderate and > 0.25 as a major
    shift; 0.2 is the usual single cut-off), Jensen-Shannon distance 0.1 (natural
    log) for categorical ones (Evidently's default for it). A feature alerts once,
    then again only after its statistic fell below `rearm` x threshold.
    """

    reference_size: int = Field(default=5000, ge=10)
    window_size: int = Field(default=5000, ge=10)
    every: int = Field(default=500, ge=1)
    bins: int = Field(default=10, ge=2, le=100)  # numeric: quantile bins of the reference
    max_categories: int = Field(default=20, ge=1, le=250)  # categorical: the rest is "other"
    psi_threshold: float = Field(default=0.2, gt=0)
    js_threshold: float = Field(default=0.1, gt=0, le=1)
    rearm: float = Field(default=0.8, gt=0, le=1)


class ChampionSettings(_Section):
    """How training picks the model serving answers with (`services.training.champion`).

    `auto`: a challenger replaces the champion when it was right more often and a
    test on their paired predictions says so at `confidence`: McNemar's on the last
    `window` events, or a sequential test on every event since the champion was
    chosen (each test at half of 1 - `confidence`). `manual`:
    the champion is `initial` until an operator pins another. `initial`: the first
    model listed if unset.
    """

    policy: Literal["auto", "manual"] = "auto"
    initial: Name | None = None
    window: int = Field(default=1000, ge=30)
    confidence: float = Field(default=0.9999, gt=0.5, lt=1)
    # on the champion's concept drift (ADWIN on its errors, in training): judge the
    # models at once on what comes after (`promote_best`), and also refit the batch
    # challengers (`retrain_batch`) or start a fresh copy of the champion as a
    # challenger (`reset`), or only say so (`none`)
    on_drift: Literal["promote_best", "retrain_batch", "reset", "none"] = "promote_best"


class PipelineConfig(_Section):
    """A whole pipeline file, checked: see DESIGN.md, "Pipeline config"."""

    name: Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    task: Task
    features: Features
    models: tuple[ModelRef, ...]
    labels: Labels = Labels()
    data_drift: DataDriftSettings = DataDriftSettings()
    champion: ChampionSettings = ChampionSettings()

    @field_validator("models")
    @classmethod
    def _models_fit(
        cls, models: tuple[ModelRef, ...], info: ValidationInfo
    ) -> tuple[ModelRef, ...]:
        if not models:
            raise ValueError("no models: list at least one from the model catalogue")
        twice = sorted(name for name, n in Counter(m.name for m in models).items() if n > 1)
        if twice:
            raise ValueError(f"duplicate model names {', '.join(map(repr, twice))}")
        if "task" in info.data:
            for model in models:
                check_task(model.name, info.data["task"])
        return models

    @model_validator(mode="after")
    def _champion_listed(self) -> PipelineConfig:
        initial = self.champion.initial
        if initial is not None and initial not in {m.name for m in self.models}:
            raise ValueError(f"champion.initial {initial!r} is not one of the pipeline's models")
        return self

    def config_hash(self) -> str:
        """A stable 16-hex-digit fingerprint of the (normalised) config: what models
        learn. Monitoring's `data_drift` section and the champion policy are left out
        (DESIGN.md: they leave a model's state alone)."""
        return _fingerprint(self.model_dump(mode="json", exclude={"data_drift", "champion"}))

    def initial_champion(self) -> str:
        """The champion before any change: `champion.initial`, or the first model listed."""
        return self.champion.initial or self.models[0].name

    def feature_set_version(self) -> str:
        """A fingerprint of the `features` section only: same features, same version."""
        return _fingerprint(self.features.model_dump(mode="json"))


def _fingerprint(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class PipelineConfigError(ValueError):
    """A pipeline file that cannot be used; `problems` are `<dotted.field>: <reason>`."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid pipeline config {self.path}:\n{lines}")


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(root)"
        reason = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            reason = "unknown key"
        elif item["type"] == "missing":
            reason = "required"
        problems.append(f"{where}: {reason}")
    return problems


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and check the pipeline file at `path`, or raise `PipelineConfigError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineConfigError(path, ["(file): not found"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise PipelineConfigError(path, [f"(file): cannot read: {error}"]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = getattr(error, "problem", None) or str(error)
        raise PipelineConfigError(path, [f"(yaml): {where}{reason}"]) from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise PipelineConfigError(path, [f"(root): expected a mapping of sections, got {got}"])
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as error:
        raise PipelineConfigError(path, _problems(error)) from None
