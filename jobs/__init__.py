"""Spark jobs. Each job file is ``main(argv)`` over pure DataFrame -> DataFrame transforms and
runs both as ``spark-submit jobs/<job>.py ...`` and through the ``metaprofile`` CLI."""
