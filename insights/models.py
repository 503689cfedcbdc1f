"""The Insights cache: what the nightly (or on-demand) computation found, so pages only read.

``InsightCache`` is one computed result per tenant, kind and horizon (``computed_at``, ``params``,
``data`` as JSON); ``ForecastSeries`` holds the 15-minute concurrency series of a capacity
forecast, one row per pool, environment and team (and one per pool and environment with
``team`` empty: the sum), so a page loads only the rows it shows and the rows its reader may see.
"""

from __future__ import annotations

from array import array

import zstandard
from django.db import models

from governance.models import Environment, Team, Tenant


class InsightCache(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32, help_text="capacity, herds, ... (one computation of one page).")
    horizon_days = models.PositiveSmallIntegerField(default=0)
    params = models.JSONField(default=dict, blank=True, help_text="What the computation was asked.")
    computed_at = models.DateTimeField()
    compute_ms = models.FloatField(default=0)
    data = models.JSONField(default=dict, blank=True)

    ACCESS_FIELDS = ("tenant_id", None, None)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "kind", "horizon_days"], name="insights_cache_one_per_kind")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.horizon_days}d of tenant {self.tenant_id} at {self.computed_at:%Y-%m-%d %H:%M}"


class ForecastSeries(models.Model):
    cache = models.ForeignKey(InsightCache, on_delete=models.CASCADE, related_name="series")
    pool = models.CharField(max_length=100, blank=True, help_text="'' for jobs without a pool.")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    peak_p50 = models.FloatField(default=0)
    peak_p90 = models.FloatField(default=0)
    # zstd of array('d'): the p50 series then the p90 series, one value per 15-minute bucket.
    values = models.BinaryField()

    ACCESS_FIELDS = ("cache__tenant_id", "team_id", "environment_id")

    class Meta:
        indexes = [models.Index(fields=["cache", "pool", "environment"], name="insights_series_lookup")]

    def __str__(self) -> str:
        return f"{self.pool or '(no pool)'} in environment {self.environment_id}, team {self.team_id}"

    @staticmethod
    def pack(p50: list[float], p90: list[float]) -> bytes:
        return zstandard.ZstdCompressor(level=3).compress(array("d", p50 + p90).tobytes())

    def unpack(self) -> tuple[list[float], list[float]]:
        numbers = array("d")
        numbers.frombytes(zstandard.ZstdDecompressor().decompress(bytes(self.values)))
        half = len(numbers) // 2
        return numbers[:half].tolist(), numbers[half:].tolist()
