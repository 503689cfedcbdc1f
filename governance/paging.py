"""Pages of long lists (runs, audit events, jobs) that cost about the same on page 1 as deep down.

``BoundedPaginator`` counts at most ``CAP`` rows (a page says "more than 10,000" beyond that),
numbers pages only up to ``CAP`` rows (a larger page number shows the last numbered page), and
fetches a page's primary keys first, then the rows of those keys: the list's joins and annotations
(a job's last run, its strip) are computed for the rows shown, never for the rows skipped.

``time_page`` adds keyset ("seek") pages to a list ordered newest first by a time and the primary
key: past the numbered pages, and whenever ``before`` or ``after`` is given, a page is the rows
just older (``before``) or just newer (``after``) than a cursor ``<ISO time>~<pk>``; the index on the
time finds them without skipping rows. The lists' ``since``/``until`` filters jump to a date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime
from django.utils.functional import cached_property
from rest_framework.pagination import PageNumberPagination

CAP = 10_000
PER_PAGE = 50
# From this many rows skipped on, a page loads its keys first (one more query).
KEYS_FIRST_FROM = 500
CURSOR_ERROR = "Not a list position: follow the list's Older and Newer links."


class KeysFirstPaginator(Paginator):
    """A paginator whose deep pages of a queryset load their keys first, then those rows (the API's).

    ``keys_first_from``: from how many skipped rows on (0: every page, for a list whose rows carry
    costly annotations that the database would otherwise compute for every row it sorts)."""

    keys_first_from = KEYS_FIRST_FROM

    def page(self, number: Any) -> Page:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        if bottom < self.keys_first_from or not isinstance(self.object_list, QuerySet):
            # Near the top the rows skipped are few: one query, as any page.
            return super().page(number)
        ids = list(self.object_list.values_list("pk", flat=True)[bottom : bottom + self.per_page])
        return Page(rows_in_order(self.object_list, ids), number, self)


class BoundedPaginator(KeysFirstPaginator):
    """A paginator whose count stops at ``cap`` + 1 rows and whose pages load their keys first."""

    def __init__(
        self, object_list: QuerySet, per_page: int, cap: int | None = None, keys_first_from: int | None = None
    ) -> None:
        super().__init__(object_list, per_page)
        self.cap = CAP if cap is None else cap
        if keys_first_from is not None:
            self.keys_first_from = keys_first_from

    @cached_property
    def count(self) -> int:
        # COUNT(*) over at most cap + 1 keys: the same small cost on a table of a million rows.
        queryset: QuerySet = self.object_list  # type: ignore[assignment]  # built from a queryset
        return queryset.order_by().values("pk")[: self.cap + 1].count()

    @property
    def capped(self) -> bool:
        """More rows than ``cap``: the count and the page numbers stop there."""
        return self.count > self.cap

    @property
    def cap_label(self) -> str:
        return f"{self.cap:,}"

    @cached_property
    def num_pages(self) -> int:
        if self.capped:
            return max(1, self.cap // self.per_page)
        return super().num_pages


class ApiPagination(PageNumberPagination):
    """The API's ``{"count", "next", "previous", "results"}`` pages (``?page=N``), keys first deep down."""

    django_paginator_class = KeysFirstPaginator


class KeysFirstAlways(KeysFirstPaginator):
    keys_first_from = 0


class LongListPagination(ApiPagination):
    """For the long lists (runs, audit events): keys first on every page (one query more): the key
    query reads the listed table's index alone, where the query joining the serializer's relations
    lets SQLite's planner start from the wrong table and read every row."""

    django_paginator_class = KeysFirstAlways


def rows_in_order(queryset: QuerySet, ids: list) -> list:
    """The rows of ``queryset`` with these keys, in the keys' order (one query, none for no keys)."""
    if not ids:
        return []
    by_id = {row.pk: row for row in queryset.filter(pk__in=ids).order_by()}
    return [by_id[pk] for pk in ids if pk in by_id]


# --- keyset pages of lists ordered newest first -----------------------------------------------


def cursor_of(row: Any, time_field: str) -> str:
    """The position of ``row`` in a list ordered by (time_field, pk), newest first."""
    at: datetime = getattr(row, time_field)
    return f"{at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}~{row.pk}"


def parse_cursor(raw: str) -> tuple[datetime, int]:
    """``<ISO time>~<pk>`` -> (time, pk); ValueError for anything else."""
    at_raw, sep, pk_raw = raw.strip().rpartition("~")
    at = parse_datetime(at_raw.replace("Z", "+00:00")) if sep else None
    if at is None or not pk_raw.isdigit() or len(pk_raw) > 19:
        raise ValueError(raw)
    return (at if at.tzinfo else at.replace(tzinfo=UTC)), int(pk_raw)


@dataclass
class TimePage:
    """One page of a list ordered newest first, by number (``paginator``) or by position (cursors).

    ``older`` and ``newer`` are the cursors of the Older and Newer links of a keyset page
    (``None``: nothing that way); a numbered page offers ``older`` on its last numbered page."""

    object_list: list
    paginator: BoundedPaginator
    number: int | None = None
    older: str | None = None
    newer: str | None = None
    keyset: bool = False
    page: Page | None = field(default=None, repr=False)

    def __iter__(self):
        return iter(self.object_list)

    def __len__(self) -> int:
        return len(self.object_list)

    def has_previous(self) -> bool:
        return self.page.has_previous() if self.page is not None else self.newer is not None

    def has_next(self) -> bool:
        return self.page.has_next() if self.page is not None else self.older is not None

    def previous_page_number(self) -> int:
        assert self.page is not None
        return self.page.previous_page_number()

    def next_page_number(self) -> int:
        assert self.page is not None
        return self.page.next_page_number()


def time_page(queryset: QuerySet, params, time_field: str, per_page: int | None = None) -> TimePage:
    """The page of ``queryset`` (ordered by ``-time_field, -pk``) that ``params`` ask for:
    ``before``/``after`` (a cursor) or ``page`` (a number). Raises ValueError for a bad cursor."""
    # Keys first on every page: the key query reads the time index of the listed table alone, where
    # a query joining the rows' relations lets SQLite's planner start from the wrong table.
    per_page = per_page or PER_PAGE
    paginator = BoundedPaginator(queryset, per_page, keys_first_from=0)
    before, after = params.get("before", "").strip(), params.get("after", "").strip()
    if not before and not after:
        page = paginator.get_page(params.get("page"))
        rows = list(page.object_list)
        older = None
        if not page.has_next() and paginator.capped and rows:
            # The last numbered page of a long list: older rows are reached by position.
            older = cursor_of(rows[-1], time_field)
        return TimePage(rows, paginator, number=page.number, older=older, page=page)
    at, pk = parse_cursor(before or after)
    if before:
        ids = list(
            queryset.filter(**{f"{time_field}__lte": at})
            .exclude(**{time_field: at, "pk__gte": pk})
            .order_by(f"-{time_field}", "-pk")
            .values_list("pk", flat=True)[: per_page + 1]
        )
        rows = rows_in_order(queryset, ids)
        more = len(rows) > per_page
        rows = rows[:per_page]
        return TimePage(
            rows,
            paginator,
            older=cursor_of(rows[-1], time_field) if more else None,
            # The cursor's own row is newer than this page.
            newer=cursor_of(rows[0], time_field) if rows else None,
            keyset=True,
        )
    ids = list(
        queryset.filter(**{f"{time_field}__gte": at})
        .exclude(**{time_field: at, "pk__lte": pk})
        .order_by(time_field, "pk")
        .values_list("pk", flat=True)[: per_page + 1]
    )
    rows = rows_in_order(queryset, ids)
    more = len(rows) > per_page
    rows = rows[:per_page][::-1]
    return TimePage(
        rows,
        paginator,
        older=cursor_of(rows[-1], time_field) if rows else None,
        newer=cursor_of(rows[0], time_field) if more else None,
        keyset=True,
    )
