"""``python -m bench`` (``make bench``): Governor's speed figures.

Each section is a module of this package with ``TITLE`` and ``run(report)``;
add a module (e.g. ``bench/execution.py``) and it is picked up. Figures go to
``report.figure(key, value, unit, target=...)``; raw baselines measured in the
same run are figures too, keyed beside the figure they compare with
(``next_fire_us`` next to ``next_fire_us_croniter``). The run prints a table and
writes ``bench/results.json`` with one key per figure.
"""
