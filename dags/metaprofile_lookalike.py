"""
# MetaProfile nightly lookalike

Encodes one new landing day, assembles the window ending there, embeds every user once with
the published model, scores every active campaign from those embeddings, and exports the
segments.

| task | runs |
|---|---|
| `encode` | `spark-submit jobs/encode.py --config C --ds D`: landing date `ds`, then the snapshot of the window ending at `ds`, in one Spark session (a second task would start a second JVM, most of a cold nightly encode) |
| `embed` | `spark-submit jobs/embed.py --config C --ds D`: all users, with the published model |
| `active_campaigns` | `metaprofile campaigns --config C --ds D --active`; XCom: the campaign ids |
| `campaign_arguments` | one `spark-submit` argument list per campaign id |
| `support` | mapped, one task per campaign: `spark-submit jobs/campaigns.py --config C --ds D --campaign ID`: the campaign's checks and its support-set embedding |
| `score` | `spark-submit jobs/score.py --config C --ds D`: every user against every campaign whose support passed, in one pass over the embeddings |
| `export` | `spark-submit jobs/export.py --config C --ds D`: the segments of the scored campaigns |
| `failed_campaigns` | runs only when a `support` failed, and fails the run so that it is noticed |

**A failing campaign fails only its own mapped `support` task.** `score` and `export` still
run for the others (trigger rule `all_done_min_one_success` on `score`); the run is then
marked failed by `failed_campaigns`, after the other segments are out. Scoring is one task
on purpose: it reads the embedding table once for all campaigns, so a campaign adds only the
relation module's cost, not another pass over every user.

**Schedule.** Daily at 02:00 UTC, for `ds` = the day before (the landing date that just
completed). The published model is the asset `metaprofile_published_model`, which the
training DAG updates. This DAG lists it as an inlet of `embed` and keeps a time schedule
rather than being scheduled on the asset: in Airflow 3 an asset-triggered run has no logical
date, so it would have no `ds`, and a new model is picked up by the next nightly run anyway.
Run a date by hand: `airflow dags test metaprofile_lookalike 2026-06-30`.

**Parameters.** `config`, `project_root`, `job_venv`: see `dags/README.md`.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

from airflow.sdk import CronTriggerTimetable, TriggerRule, dag, task
from airflow.sdk.exceptions import AirflowFailException
from metaprofile_common import (
    DEFAULT_ARGS,
    LIGHT_TIMEOUT,
    PUBLISHED_MODEL,
    mapped_spark_job,
    metaprofile_cli,
    pipeline_params,
    printing_last_stdout_line,
    spark_job,
)

# A support task's map index label is its campaign id: as it is when JSON would not change
# it and it is short, else JSON-quoted and cut, so that an id that breaks the identifier rule
# (the job fails that task with the reason) cannot put a newline or kilobytes into the UI.
CAMPAIGN_LABEL = ("{% set c = task.application_args[-1] %}"
                  "{{ c if c | length <= 100 and c | tojson == '\"' ~ c ~ '\"' "
                  "else c[:60] | tojson }}")
# spark-submits of one run that may check campaigns at the same time (each is a driver).
SCORE_PARALLELISM = int(os.environ.get("METAPROFILE_SCORE_PARALLELISM") or 2)


@dag(
    dag_id="metaprofile_lookalike",
    doc_md=__doc__,
    # ds is the day before the run fires: the data interval is the previous day.
    schedule=CronTriggerTimetable("0 2 * * *", timezone="UTC", interval=timedelta(days=1)),
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=pipeline_params(),
    tags=["metaprofile", "nightly", "lookalike"],
)
def metaprofile_lookalike():
    encode = spark_job("encode")  # the landing date, then the snapshot, in one session
    embed = spark_job("embed", inlets=[PUBLISHED_MODEL])

    @task.bash(cwd="{{ params.project_root }}", execution_timeout=LIGHT_TIMEOUT,
               output_processor=json.loads)
    def active_campaigns(params=None, ds=None) -> str:
        """The active campaign ids, as one JSON line (the XCom is the parsed list)."""
        listing = metaprofile_cli(params, "campaigns", "--config", params["config"],
                                  "--ds", ds, "--active")
        return printing_last_stdout_line(listing)

    @task(execution_timeout=LIGHT_TIMEOUT)
    def campaign_arguments(campaign_ids: list, params=None, ds=None) -> list[list[str]]:
        """One ``jobs/campaigns.py`` argument list per campaign id.

        Built here, with the run's values filled in, because values that reach a mapped
        task through XCom are not rendered as templates.
        """
        if not isinstance(campaign_ids, list) or not all(
                isinstance(c, (str, int)) and not isinstance(c, bool) for c in campaign_ids):
            raise ValueError(f"`metaprofile campaigns` must print a JSON list of campaign ids, "
                             f"got {campaign_ids!r}")
        return [["--config", params["config"], "--ds", ds, "--campaign", str(c)]
                for c in campaign_ids]

    support = mapped_spark_job(
        "campaigns", task_id="support",
        max_active_tis_per_dagrun=SCORE_PARALLELISM,
        map_index_template=CAMPAIGN_LABEL,
    ).expand(application_args=campaign_arguments(active_campaigns()))

    score = spark_job("score", trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS)
    export = spark_job("export")

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0, execution_timeout=LIGHT_TIMEOUT)
    def failed_campaigns(ds=None):
        """Fail the run when a campaign failed its checks (the others have been exported)."""
        raise AirflowFailException(f"one or more campaigns failed their checks for {ds}: see "
                                   "the failed or upstream-failed map indexes of `support`")

    encode >> embed >> support >> score >> export
    support >> failed_campaigns()


metaprofile_lookalike()
