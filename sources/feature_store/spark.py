"""The one Spark session of a process, for the spark offline engine (export, retrieval, materialization).

``spark_conf`` is what every Spark job of Marquee runs with: the master, UTC as the session
time zone (event times are UTC instants; a local zone would shift day partitions and string
renderings), no web UI, few shuffle partitions (the default 200 costs seconds per query on
small data; raise it with ``MARQUEE_SPARK_CONF`` on a cluster), and Arrow for pandas
transfers. Feast's Spark offline store and compute engine get the same settings through
``feature_store`` configuration, and reuse the session when one is active.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from sources.errors import MarqueeError
from sources.settings import OfflineTarget

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "4",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.driver.memory": "4g",
    "spark.driver.maxResultSize": "2g",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}


class SparkUnavailable(MarqueeError):
    """The spark engine was chosen but pyspark (the ``spark`` extra) or Java is missing."""


def spark_conf(target: OfflineTarget) -> dict[str, str]:
    """Marquee's Spark settings: the defaults above, the master, this interpreter for Python
    workers (Feast's materialization runs Python UDFs that import feast), then ``MARQUEE_SPARK_CONF``."""
    python = {"spark.pyspark.python": sys.executable, "spark.pyspark.driver.python": sys.executable}
    return {**DEFAULTS, **python, "spark.master": target.spark_master, **dict(target.spark_conf)}


def spark_session(target: OfflineTarget) -> SparkSession:
    """The process's Spark session (started on first use with ``spark_conf``, reused after)."""
    try:
        from pyspark import SparkConf
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkUnavailable(
            "MARQUEE_OFFLINE_ENGINE=spark needs pyspark: pip install 'marquee[spark]' (and Java 17)"
        ) from exc
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    conf = SparkConf().setAll(list(spark_conf(target).items()))
    # PySpark starts its local Python workers with PYSPARK_PYTHON (the conf key alone is not read there)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        session = SparkSession.builder.config(conf=conf).appName("marquee").getOrCreate()
    except Exception as exc:  # no Java, a master that does not answer
        raise SparkUnavailable(f"Spark did not start ({spark_conf(target)['spark.master']}): {exc}") from exc
    session.sparkContext.setLogLevel("ERROR")
    return session
