"""Metrics of worker processes: in-process counters (:mod:`~bananas.metrics.stats`), snapshots and their merge
across ``--processes N`` (:mod:`~bananas.metrics.snapshot`, :mod:`~bananas.metrics.multiprocess`), the Prometheus
exposition (:mod:`~bananas.metrics.exposition`), the HTTP endpoint (:mod:`~bananas.metrics.http`), the
``System metrics`` line (:mod:`~bananas.metrics.logline`) and the worker registry's record
(:mod:`~bananas.metrics.registry`). The worker's seam that runs them is :mod:`bananas.worker.metrics`.

This package imports nothing from :mod:`bananas.worker` (the worker imports it), and this ``__init__`` imports
nothing at all, so importing one part stays cheap.
"""
