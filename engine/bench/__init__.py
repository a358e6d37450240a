"""Benchmark: data sets with ground truth, the geodesic error protocol, the ``engine.bench`` command.

- :mod:`engine.bench.datasets`  pairs, meshes and ground truth of ../shared/data
- :mod:`engine.bench.geodesics` cached all-pairs heat-method geodesics
- :mod:`engine.bench.metrics`   map errors and their summary
- :mod:`engine.bench.runner`    variants (table rows) and per-pair subprocess runs
- :mod:`engine.bench.report`    table, results.md, pairs.csv, cumulative error plot
"""
