"""``segment-worker bench``: the benchmark against the baselines (docs/PERFORMANCE.md).

Modules: ``workload`` and ``segments`` (the seeded workload, pure), ``seed`` (initial load),
``servers`` (embedded or given servers, the bench's own databases), ``session`` and ``procs``
(workers under test as child processes), ``kafkaio`` (input stream, output watcher), ``phases``
(the measurements on our worker), ``baselines`` and ``evaluator``/``faust_app`` (what we compare
with), ``results``, ``report``, ``chart``, ``profile`` (reporting), ``runner`` (the order of it
all) and ``command`` (the click command). Heavy imports stay inside ``command`` so the CLI starts
quickly.
"""
