"""Pages of long lists (runs, audit events, jobs) that cost about the same on page 1 as deep down.

``BoundedPaginator`` counts at most ``CAP`` rows (a page says "more than 10,000" beyond that),
numbers pages only up to ``CAP`` rows (a larger page number shows the last numbered page), and
fetches a page's primary keys first, then the rows of those keys: the list's joins and annotations
(a job's last run, its strip) are computed for the rows shown, never for the rows skipped.

``time_page`` adds keyset ("seek") pages to a list ordered newest first by a time and the primary
key: past the numbered pages, and whenever ``before`` or ``after`` is given, a page is the rows
just older (``before``) or just newer (``after``) than a cursor ``<ISO time>~<pk>``; the index on the
time finds them without skipping rows. The lists' ``since``/``until`` filters jump to a date.

``LongListPagination`` does the same for the API's long lists (runs, audit events): ``count`` stops
at ``CAP`` (with ``count_capped``), ``?page=N`` stops at the page holding row ``CAP`` (404 beyond),
and ``?before=``/``?after=`` cursors page on from there, through the same ``keyset_rows``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.core.paginator import InvalidPage, Page, Paginator
from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime
from django.utils.functional import cached_property
from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

CAP = 10_000
PER_PAGE = 50
# From this many rows skipped on, a page loads its keys first (one more query).
KEYS_FIRST_FROM = 500
CURSOR_ERROR = "Not a list position: follow the list's Older and Newer links."
API_CURSOR_ERROR = "Not a list position: use the cursor (<ISO time>~<id>) of a next or previous link."


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


class LongListPaginator(BoundedPaginator):
    keys_first_from = 0


class LongListPagination(ApiPagination):
    """The long lists (runs, audit events): numbered pages over the first ``CAP`` rows, keyset pages
    beyond (``?before=``/``?after=`` a cursor, as ``time_page``), a count that stops at ``CAP``.

    Every page loads its keys first (one query more): the key query reads the listed table's index
    alone, where the query joining the serializer's relations lets SQLite's planner start from the
    wrong table and read every row. The view names the time its default order starts with
    (``cursor_field``); positions exist only in that order (newest first, then by id)."""

    cursor_params = ("before", "after")

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.keyset: Keyset | None = None
        self.time_field: str = view.cursor_field  # every long list names it
        self.default_order = in_default_order(queryset, self.time_field)
        page_size = self.get_page_size(request)
        self.paginator = paginator = LongListPaginator(queryset, page_size)
        params = request.query_params
        given = {name: params[name].strip() for name in self.cursor_params if params.get(name, "").strip()}
        if not given:
            return self._numbered(paginator, request)
        errors = {}
        if len(given) > 1:
            errors = {name: ["Give either before or after, not both."] for name in given}
        elif params.get(self.page_query_param):
            errors = {self.page_query_param: ["Give either a page number or a position (before/after), not both."]}
        name, raw = next(iter(given.items()))
        if not errors and not self.default_order:
            errors = {
                name: [
                    f"Positions (before/after) exist in the default order only (newest first by {self.time_field}): "
                    "drop ordering to page by position."
                ]
            }
        if errors:
            raise exceptions.ValidationError(errors)
        try:
            position = parse_cursor(raw)
        except ValueError:
            raise exceptions.ValidationError({name: [API_CURSOR_ERROR]}) from None
        self.keyset = keyset_rows(queryset, self.time_field, page_size, position, older=name == "before")
        # The browsable API shows Previous and Next (no page numbers).
        self.display_page_controls = self.template is not None
        return self.keyset.rows

    def _numbered(self, paginator: BoundedPaginator, request) -> list:
        number = self.get_page_number(request, paginator)
        try:
            self.page = paginator.page(number)
        except InvalidPage as exc:
            if paginator.capped and str(number).isdigit() and int(number) > paginator.num_pages:
                raise exceptions.NotFound(self._past_the_numbered_pages(int(number), paginator)) from None
            raise exceptions.NotFound(self.invalid_page_message.format(page_number=number, message=exc)) from None
        if paginator.num_pages > 1 and self.template is not None:
            # The browsable API shows the page controls.
            self.display_page_controls = True
        return list(self.page)

    def _past_the_numbered_pages(self, number: int, paginator: BoundedPaginator) -> str:
        last = paginator.num_pages
        stop = f"Page {number} is past the numbered pages: they stop at {paginator.cap_label} rows (page {last})."
        if not self.default_order:
            return (
                f"{stop} Further rows are reached by position, in the default order only (newest first): "
                f"drop ordering and follow next from page {last}, or narrow the list with filters."
            )
        return (
            f"{stop} Further rows are reached by position: follow next from page {last}, "
            "or ask ?before=<cursor> with the cursor (<ISO time>~<id>) of the last row you have."
        )

    def get_paginated_response(self, data):
        return Response(
            {
                "count": min(self.paginator.count, self.paginator.cap),
                "count_capped": self.paginator.capped,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_next_link(self):
        if self.keyset is not None:
            return self._position_link("before", self.keyset.older)
        if self.page.has_next():
            return super().get_next_link()
        rows = self.page.object_list
        if self.paginator.capped and self.default_order and rows:
            # The last numbered page of a capped list: older rows are reached by position.
            return self._position_link("before", cursor_of(rows[-1], self.time_field))
        return None

    def get_previous_link(self):
        if self.keyset is not None:
            return self._position_link("after", self.keyset.newer)
        return super().get_previous_link()

    def _position_link(self, name: str, cursor: str | None) -> str | None:
        if cursor is None:
            return None
        assert self.request is not None
        url = self.request.build_absolute_uri()
        for other in (self.page_query_param, *self.cursor_params):
            url = remove_query_param(url, other)
        return replace_query_param(url, name, cursor)

    def get_html_context(self):
        if self.keyset is not None:
            return {"previous_url": self.get_previous_link(), "next_url": self.get_next_link(), "page_links": []}
        return super().get_html_context()

    def get_paginated_response_schema(self, schema):
        response = super().get_paginated_response_schema(schema)
        cap = f"{CAP:,}"
        response["required"] = ["count", "count_capped", "results"]
        response["properties"]["count"]["description"] = (
            f"How many rows match, exact up to {cap}; beyond, {cap} and count_capped is true."
        )
        response["properties"] = {
            "count": response["properties"]["count"],
            "count_capped": {
                "type": "boolean",
                "example": False,
                "description": f"More than {cap} rows match: count stops at {cap}, and so do the page numbers; "
                "the last numbered page's next link goes on by position (?before=).",
            },
            **{key: value for key, value in response["properties"].items() if key != "count"},
        }
        response["properties"]["next"]["example"] = (
            "http://api.example.org/runs/?before=2026-12-01T10:00:00.000000Z~4012"
        )
        response["properties"]["previous"]["example"] = (
            "http://api.example.org/runs/?after=2026-12-01T10:20:00.000000Z~4061"
        )
        return response

    def get_schema_operation_parameters(self, view):
        cap = f"{CAP:,}"
        parameters = super().get_schema_operation_parameters(view)
        parameters[0]["description"] = f"A page number, up to the page holding row {cap} (past it: 404)."
        for name, way in (("before", "older"), ("after", "newer")):
            parameters.append(
                {
                    "name": name,
                    "required": False,
                    "in": "query",
                    "description": f"A position (<ISO time>~<id>, as the next and previous links carry): the page of "
                    f"rows just {way} than it, in the default order only.",
                    "schema": {"type": "string"},
                }
            )
        return parameters


def in_default_order(queryset: QuerySet, time_field: str) -> bool:
    """Whether ``queryset`` is ordered newest first by ``time_field``, then by id (positions' order)."""
    query = queryset.query
    order = tuple(query.order_by) or (tuple(queryset.model._meta.ordering) if query.default_ordering else ())
    return order in {(f"-{time_field}", "-id"), (f"-{time_field}", "-pk")}


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
    position = parse_cursor(before or after)
    found = keyset_rows(queryset, time_field, per_page, position, older=bool(before))
    return TimePage(found.rows, paginator, older=found.older, newer=found.newer, keyset=True)


@dataclass
class Keyset:
    """The rows of a keyset page, newest first, and the cursors of the pages either side of it
    (``None``: nothing that way)."""

    rows: list
    older: str | None
    newer: str | None


def keyset_rows(
    queryset: QuerySet,
    time_field: str,
    per_page: int,
    position: tuple[datetime, int],
    *,
    older: bool,
) -> Keyset:
    """The ``per_page`` rows of ``queryset`` just older (``older``) or just newer than ``position``
    (a parsed cursor), in the order (``-time_field``, ``-pk``): keys first (one query on the time
    index, one row more than shown to know whether there are more), then those rows.
    The UI's Older/Newer pages and the API's ``before``/``after`` pages both read them here."""
    at, pk = position
    if older:
        ids = list(
            queryset.filter(**{f"{time_field}__lte": at})
            .exclude(**{time_field: at, "pk__gte": pk})
            .order_by(f"-{time_field}", "-pk")
            .values_list("pk", flat=True)[: per_page + 1]
        )
        rows = rows_in_order(queryset, ids[:per_page])
        return Keyset(
            rows,
            older=cursor_of(rows[-1], time_field) if len(ids) > per_page and rows else None,
            # The cursor's own row is newer than this page.
            newer=cursor_of(rows[0], time_field) if rows else None,
        )
    ids = list(
        queryset.filter(**{f"{time_field}__gte": at})
        .exclude(**{time_field: at, "pk__lte": pk})
        .order_by(time_field, "pk")
        .values_list("pk", flat=True)[: per_page + 1]
    )
    rows = rows_in_order(queryset, ids[:per_page][::-1])
    return Keyset(
        rows,
        older=cursor_of(rows[-1], time_field) if rows else None,
        newer=cursor_of(rows[0], time_field) if len(ids) > per_page and rows else None,
    )
