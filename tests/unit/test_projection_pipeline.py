"""The pipelined write path: a batch planned on the states the batch before it leaves
behind (before that one is written) gives the same tables as applying every batch in
its own synchronous transaction; a plan whose checkpoints moved is refused whole; the
bulk statements store exactly what SQLAlchemy's own insert stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from projections import apply as apply_module
from projections import db, migrate
from projections import tables as t
from projections.apply import Applier, Plan, StalePlan, apply_batch
from projections.checkpoints import read_checkpoints
from projections.fold_runtime import TERMINAL
from projections.pipeline import Pipeline
from projections.run_cache import RunCache
from projections.synthetic import stream
from tests.bulk_rows import write_both
from tests.unit.test_projection_db import apply, dump, incoming


def _engine(path: Path) -> Engine:
    eng = db.engine(f"sqlite:///{path}")
    migrate.upgrade(eng)
    return eng


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    clean, piped = _engine(tmp_path / "clean.db"), _engine(tmp_path / "piped.db")
    yield clean, piped
    clean.dispose()
    piped.dispose()


@pytest.mark.parametrize("batch", [1, 7, 40, 1000])
def test_planned_batches_give_the_tables_of_synchronous_ones(
    engines: tuple[Engine, Engine], batch: int
) -> None:
    clean, piped = engines
    records = incoming(list(stream(runs=25, seed=5, audits=12, definitions=4)))
    apply(clean, records, batch=len(records))

    applier = Applier()
    nexts: dict[tuple[str, int], int] = {}
    inflight: Plan | None = None
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        # planned while the batch before it is still unwritten, as the projector does
        plan = applier.plan(piped, chunk, nexts, inflight)
        if inflight is not None:
            with piped.begin() as conn:
                applier.write(conn, inflight)
            applier.written(inflight)
            nexts.update(inflight.result.next_offsets)
        inflight = plan
    assert inflight is not None
    with piped.begin() as conn:
        applier.write(conn, inflight)
    applier.written(inflight)

    assert dump(piped) == dump(clean)
    with piped.connect() as a, clean.connect() as b:
        assert read_checkpoints(a) == read_checkpoints(b)


def test_a_plan_whose_checkpoints_moved_writes_nothing(engines: tuple[Engine, Engine]) -> None:
    _, shared = engines
    records = incoming(list(stream(runs=4, seed=9)), partitions=1)
    half = len(records) // 2
    applier = Applier()
    plan = applier.plan(shared, records, {(records[0].at.topic, 0): 0})
    with shared.begin() as conn:  # another instance got there first
        apply_batch(conn, records[:half])
    before = dump(shared)
    with pytest.raises(StalePlan) as refused, shared.begin() as conn:
        applier.write(conn, plan)
    assert refused.value.moved == {(records[0].at.topic, 0): half}
    assert dump(shared) == before


def through(pipeline: Pipeline, records: list[Any]) -> None:
    """Submit `records` 40 at a time, wait until all are written, close the pipeline."""
    try:
        for start in range(0, len(records), 40):
            pipeline.submit(records[start : start + 40])
        assert pipeline.drain()
    finally:
        pipeline.close()


def _raw(engine: Engine, table: str) -> list[tuple[Any, ...]]:
    # what the file holds, without the column types' result processing
    with engine.connect() as conn:
        return list(conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY run_id"))


def test_bulk_statements_store_what_sqlalchemy_stores(engines: tuple[Engine, Engine]) -> None:
    reference, bulk = engines
    _columns, full = write_both(reference, bulk)
    assert _raw(bulk, "workflow_runs") == _raw(reference, "workflow_runs")
    with bulk.connect() as conn:
        back = {r.run_id: r for r in conn.execute(select(t.workflow_runs))}
    assert back["c"].input == full[2]["input"]
    assert back["a"].source_offset == 2**40


def test_the_pipeline_driver_gives_the_tables_of_synchronous_batches(
    engines: tuple[Engine, Engine],
) -> None:
    clean, piped = engines
    records = incoming(list(stream(runs=25, seed=5, audits=12, definitions=4)))
    apply(clean, records, batch=len(records))
    counted: list[int] = []
    pipeline = Pipeline(
        piped, Applier(), retry_timeout_s=5, on_batch=lambda _r, n: counted.append(n)
    )
    through(pipeline, records)
    assert sum(counted) == len(records)
    assert dump(piped) == dump(clean)
    with piped.connect() as a:
        assert pipeline.positions == read_checkpoints(a)


def overtaken(
    clean: Engine, shared: Engine, applier: Applier, between: Callable[[], None] = lambda: None
) -> tuple[Pipeline, list[Any]]:
    """Six runs through `applier` into `shared`, where another writer applies the middle
    third while the pipeline lags, so the rest is planned at a stale checkpoint
    (`between` runs once the first third is in). `clean` gets them all in one batch."""
    records = incoming(list(stream(runs=6, seed=17)), partitions=1)
    apply(clean, records, batch=len(records))
    third = len(records) // 3
    pipeline = Pipeline(shared, applier, retry_timeout_s=5)
    try:
        pipeline.submit(records[:third])
        assert pipeline.drain()
        between()
        with shared.begin() as conn:  # another instance, while this one lagged
            apply_batch(conn, records[third : 2 * third])
        pipeline.submit(records[third:])  # planned at the old checkpoint: stale
        assert not pipeline.drain()
    finally:
        pipeline.close()
    return pipeline, records


def test_the_pipeline_applies_afresh_a_batch_whose_checkpoints_moved(
    engines: tuple[Engine, Engine],
) -> None:
    clean, shared = engines
    pipeline, records = overtaken(clean, shared, Applier())
    assert dump(shared) == dump(clean)
    assert pipeline.positions == {(records[0].at.topic, 0): len(records)}


def test_a_complete_cache_gives_the_same_tables_without_looking_runs_up(
    engines: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    clean, rebuilt = engines
    records = incoming(list(stream(runs=25, seed=5, audits=12, definitions=4)))
    apply(clean, records, batch=len(records))
    looked_up: list[str] = []
    real = apply_module.load_runs

    def counting(conn: Any, run_ids: Any) -> Any:
        looked_up.extend(run_ids)
        return real(conn, run_ids)

    monkeypatch.setattr(apply_module, "load_runs", counting)
    pipeline = Pipeline(rebuilt, Applier(cache=RunCache(complete=True)), retry_timeout_s=5)
    through(pipeline, records)
    assert dump(rebuilt) == dump(clean)
    # Only the runs the cache let go at their end (a late copy is read back) are read.
    with rebuilt.connect() as conn:
        ended = {
            r.run_id
            for r in conn.execute(select(t.workflow_runs.c.run_id, t.workflow_runs.c.status))
            if r.status in TERMINAL
        }
    assert set(looked_up) <= ended


def test_a_complete_cache_stops_trusting_itself_when_a_checkpoint_moves(
    engines: tuple[Engine, Engine],
) -> None:
    clean, shared = engines
    cache = RunCache(complete=True)

    def written() -> None:
        assert cache.written

    overtaken(clean, shared, Applier(cache=cache), between=written)
    assert cache.written is None
    assert dump(shared) == dump(clean)
