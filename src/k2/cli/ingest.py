"""`k2 ingest`: Kafka → Iceberg, exactly once, for every dataset that has a topic (or the one chosen)."""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Annotated

import typer

from k2.cli.common import HomeOption, choice, writer_settings

if TYPE_CHECKING:
    from k2.ingest.consumer import IngestReport


def ingest(
    home: HomeOption = None,
    dataset: Annotated[str, typer.Option(
        help="all (every dataset whose topic exists) | trades | quotes | reference | corporate_actions"
    )] = "all",
    max_messages: Annotated[int | None, typer.Option(min=1, help="Stop after this many records.")] = None,
    idle_seconds: Annotated[float | None, typer.Option(help="Stop after this long with no new records.")] = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Never stop when idle: consume until Ctrl-C (the service mode, for live feeds)."
    )] = False,
    metrics_port: Annotated[int | None, typer.Option(
        help="Serve Prometheus /metrics on PORT (address: K2_METRICS_HOST, loopback by default)."
    )] = None,
    instance_id: Annotated[str | None, typer.Option(
        help="Static group membership id: a restart with the same id resumes at once (K2_CONSUMER_INSTANCE_ID)."
    )] = None,
    maintain_every: Annotated[float | None, typer.Option(
        min=1, help="Also run `k2 maintain` (compaction, expiry, orphans) every this many seconds while ingesting."
    )] = None,
) -> None:
    """Consume topics into their Iceberg tables (exactly once) until idle or --max-messages."""
    from k2.cli.progress import ingest_with_progress
    from k2.errors import InputError
    from k2.ingest.pipeline import datasets_with_topics
    from k2.kafka.broker import resolve_bootstrap
    from k2.runtime import tune_gc_for_streaming
    from k2.schemas import Dataset

    choice(dataset, ["all", *[d.value for d in Dataset]], "--dataset")
    if follow:
        if idle_seconds is not None:
            raise InputError("--follow and --idle-seconds contradict each other: choose one")
        idle_seconds = math.inf
    settings = writer_settings(home, consumer_instance_id=instance_id)
    bootstrap = resolve_bootstrap(settings)
    if dataset == "all":
        datasets = datasets_with_topics(settings, bootstrap)
        if not datasets:
            raise InputError(f"no K2 topics on the broker at {bootstrap} yet: load something first "
                             "(`k2 load FILE` or `k2 generate`)")
    else:
        datasets = [Dataset(dataset)]
    if metrics_port is not None:
        from prometheus_client import REGISTRY

        from k2.kafka.config import topic_for
        from k2.kafka.lag import LagCollector
        from k2.obs.metrics import declare_ingest, serve

        REGISTRY.register(LagCollector(settings, bootstrap, datasets))
        for chosen in datasets:
            declare_ingest(chosen.value, topic_for(settings, chosen))
        serve(metrics_port, settings.metrics_host)
    tune_gc_for_streaming()
    with contextlib.ExitStack() as stack:
        if maintain_every is not None:
            from k2.lake.maintenance import MaintenanceLoop

            stack.enter_context(MaintenanceLoop(settings, maintain_every, tuple(datasets)))
        reports = ingest_with_progress(settings, bootstrap, datasets, max_messages, idle_seconds)
    for chosen, report in reports.items():
        typer.echo(summary(chosen.value, report, settings.topic_dlq))


def summary(dataset: str, report: IngestReport, dlq_topic: str) -> str:
    return (
        f"{dataset}: read {report.messages:,} records, landed {report.rows_landed:,} rows in {report.commits} "
        f"commit(s); snapshot {report.snapshot_id}"
        + (f"; {report.duplicates:,} duplicates dropped" if report.duplicates else "")
        + (f"; {report.late:,} late rows landed" if report.late else "")
        + (f"; {report.commit_retries} commit(s) retried after another writer committed first"
           if report.commit_retries else "")
        + (f"; {report.dead_lettered:,} records sent to {dlq_topic} (see `k2 dlq list`)"
           if report.dead_lettered else "")
        + (f"; quality of {report.quality_recovered} batch(es) recovered after a crash"
           if report.quality_recovered else "")
    )
