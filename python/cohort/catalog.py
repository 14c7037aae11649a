"""Queries of the experiment catalog, answered by the same code as the ``cohort`` CLI: the
objects here carry exactly the fields of ``cohort exp list --json`` and ``cohort trials
--json``.
"""

from __future__ import annotations

import array
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from . import _native

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Experiment:
    """An experiment, as ``cohort exp list --json`` gives it."""

    name: str
    description: Optional[str]
    owner: str
    created: float
    searcher: Optional[str]
    trials: int

    def to_dict(self) -> Dict[str, Any]:
        """The experiment as the CLI's JSON object."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Trial:
    """A trial, as ``cohort trials --json`` gives it: its number, state, hyperparameters,
    a summary of each metric (``last``, ``min``, ``max``, ``count``, ...), and its times."""

    trial: int
    state: Optional[str]
    hparams: Dict[str, Any]
    metrics: Dict[str, Dict[str, Any]]
    created: float
    started: Optional[float]
    ended: Optional[float]
    exit_status: Optional[int]
    slurm_job: Optional[str]
    nodes: List[str] = field(default_factory=list)
    checkpoints: int = 0
    last_write: Optional[float] = None
    slurm_array: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """The trial as the CLI's JSON object."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Metric:
    """One metric's history: steps, values and wall times (Unix seconds), as numpy arrays
    when numpy is installed, else lists."""

    name: str
    steps: Any
    values: Any
    wall_times: Any

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class ModelVersion:
    """A version of a registered model, as ``cohort model show NAME@K --json`` gives it: the
    source trial (``source``: experiment, trial, state, command, Slurm job), the checkpoint
    (``checkpoint``: path, kind, size, sha256, step), the trial's hyperparameters, its metrics
    at the checkpoint's step (``{name: {"step", "value"}}``), who registered it and when, the
    aliases pointing at it now, and whether its checkpoint is still there."""

    model: str
    number: int
    source: Dict[str, Any]
    checkpoint: Dict[str, Any]
    hparams: Dict[str, Any]
    metrics: Dict[str, Dict[str, Any]]
    registered: float
    registered_by: Dict[str, Any]
    aliases: List[str] = field(default_factory=list)
    checkpoint_present: bool = True
    description: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        """The version as the CLI's JSON object."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Model:
    """A registered model, as ``cohort model show NAME --json`` gives it: its versions, where
    each alias points now, and every move of an alias (``alias_history``, oldest first)."""

    name: str
    created: float
    created_by: Dict[str, Any]
    aliases: Dict[str, int]
    versions: List[ModelVersion]
    alias_history: List[Dict[str, Any]] = field(default_factory=list)

    def version(self, which: Union[None, int, str] = None) -> ModelVersion:
        """Version ``which``: a number, an alias, or the latest when None. Raises
        ``KeyError`` naming the versions and aliases there are."""
        if which is None and self.versions:
            return self.versions[-1]
        number = self.aliases.get(which) if isinstance(which, str) else which
        for version in self.versions:
            if version.number == number:
                return version
        raise KeyError(
            f"model {self.name!r} has no version {which!r}: versions "
            f"{[v.number for v in self.versions]}, aliases {sorted(self.aliases)}"
        )


def _known(cls: Any, values: Dict[str, Any]) -> Dict[str, Any]:
    """The fields of ``values`` that ``cls`` has (a newer catalog may write more)."""
    names = set(cls.__dataclass_fields__)
    return {k: v for k, v in values.items() if k in names}


def _model(values: Dict[str, Any]) -> Model:
    values = _known(Model, values)
    values["versions"] = [ModelVersion(**_known(ModelVersion, v)) for v in values["versions"]]
    return Model(**values)


def _arrays(raw: bytes, kind: str) -> Any:
    try:
        import numpy

        return numpy.frombuffer(raw, dtype="<i8" if kind == "q" else "<f8").copy()
    except ImportError:
        values = array.array(kind)
        values.frombytes(raw)
        return values.tolist()


class Catalog:
    """An experiment catalog on a (shared) filesystem.

    ``path`` as the CLI's ``--catalog``; when None, ``COHORT_CATALOG``, else the cluster's
    configured catalog, else ``./cohort-catalog``. Raises ``cohort.CatalogError`` when there
    is no catalog there.
    """

    def __init__(self, path: Optional[PathLike] = None) -> None:
        self.path: str = os.fspath(
            _native.catalog_root(None if path is None else os.fspath(path))
        )

    def __repr__(self) -> str:
        return f"cohort.Catalog({self.path!r})"

    def experiments(self) -> List[Experiment]:
        """Every experiment, with its trial count."""
        return [Experiment(**e) for e in json.loads(_native.experiments_json(self.path))]

    def trials(
        self,
        experiment: str,
        sort: Optional[str] = None,
        desc: bool = False,
        where: Union[None, str, Sequence[str]] = None,
        limit: Optional[int] = None,
    ) -> List[Trial]:
        """The trials of ``experiment``, as ``cohort trials`` selects them.

        ``sort`` is a field (``val_loss`` for the last value, ``val_loss:min``, ``hparams.lr`` or just ``lr``,
        ``state``, ``id``); missing values sort last either way. ``where`` is a filter or a
        list of filters, all of which must hold (``"val_loss<0.5"``, ``"state=completed"``).
        ``limit`` keeps the first ones. The best trial: ``trials(exp, sort="val_loss:min",
        limit=1)``.
        """
        if isinstance(where, str):
            where = [where]
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit: {limit!r} is not a count of trials")
        text = _native.trials_json(
            self.path, experiment, sort, bool(desc), list(where or []), limit
        )
        return [Trial(**t) for t in json.loads(text)]

    def models(self) -> List[Model]:
        """Every registered model (``cohort model list``), with its versions and aliases."""
        return [_model(m) for m in json.loads(_native.models_json(self.path))]

    def model(self, name: str) -> Model:
        """The registered model ``name``. Raises ``cohort.CatalogError`` when there is none."""
        return _model(json.loads(_native.models_json(self.path, name))[0])

    def metrics(self, experiment: str, trial: int, name: str) -> Metric:
        """The history of metric ``name`` of trial ``trial``. Raises ``KeyError`` naming the
        metrics the trial has when it has no ``name``."""
        steps, values, walls = _native.metric_arrays(self.path, experiment, int(trial), name)
        return Metric(name, _arrays(steps, "q"), _arrays(values, "d"), _arrays(walls, "d"))

    def to_arrow(self, experiment: str) -> Any:
        """Every point of ``experiment`` as a ``pyarrow.Table`` with the columns of ``cohort
        export``: trial, metric, step, value, wall_time. Needs pyarrow."""
        import pyarrow.parquet

        data = _native.export_bytes(self.path, experiment, "parquet")
        return pyarrow.parquet.read_table(io.BytesIO(data))

    def to_pandas(self, experiment: str) -> Any:
        """Every point of ``experiment`` as a ``pandas.DataFrame`` with the columns of
        ``cohort export``: trial, metric, step, value, wall_time. Needs pandas (and uses
        pyarrow when it is installed)."""
        import pandas

        try:
            return self.to_arrow(experiment).to_pandas()
        except ImportError:
            data = _native.export_bytes(self.path, experiment, "csv")
            return pandas.read_csv(
                io.BytesIO(data),
                dtype={"trial": "int64", "metric": "string", "step": "int64"},
                keep_default_na=False,
                na_values={"value": ["NaN"]},
            )
