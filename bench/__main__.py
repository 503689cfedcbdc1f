"""Run every bench section: against a throwaway SQLite database under var/bench/, except the sections
that bring their own (``execution``: its own SQLite; ``production``: its own PostgreSQL and Redis)."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"report"}


def setup_django() -> None:
    bench_dir = ROOT / "var" / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    db = bench_dir / "bench.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    os.environ.setdefault("DATABASE_URL", os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{db}"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governor.settings")
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    import logging

    # One log line per enqueued task would measure the terminal, not the scheduler.
    logging.getLogger("django-q").setLevel(logging.WARNING)
    logging.getLogger("jobs").setLevel(logging.WARNING)
    call_command("migrate", verbosity=0)


def main(argv: list[str]) -> int:
    wanted = set(argv)
    setup_django()
    from bench.report import Report

    report = Report()
    import bench

    started = time.perf_counter()
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if info.name in SKIP or info.name.startswith("_") or (wanted and info.name not in wanted):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        if not hasattr(module, "run"):
            continue
        report.section = info.name
        print(f"== {getattr(module, 'TITLE', info.name)}", flush=True)
        module.run(report)
    print()
    print(report.table())
    out = ROOT / "bench" / "results.json"
    report.write(out)
    print(f"\nwrote {out.relative_to(ROOT)} ({len(report.figures)} figures) in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
