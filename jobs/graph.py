"""The dependency graph around one job, laid out for an inline SVG drawn on the server."""

from __future__ import annotations

from django.db.models import Q

from governance.access import restrict

from .models import HAS_DEPENDENCIES, Job, JobStatus

COLUMN = 260
ROW = 70
NODE_W = 200
NODE_H = 36
MARGIN = 20


def edge_label(edge: dict) -> str:
    condition = edge.get("condition", "success")
    if condition == "exit_code":
        return "exit ∈ {" + ", ".join(str(c) for c in edge.get("exit_codes") or []) + "}"
    if condition == "output_schema":
        return "output matches schema"
    return condition


def dependency_graph(job: Job, user) -> dict | None:
    """Every upstream and downstream job (transitively) the user may see, in columns by depth.

    One query (two for a graph deeper than one step upstream), whatever the number of edges, and the
    graph is walked in memory (edges name their upstream job by name): the environment's live jobs
    that have dependencies (every edge is on one of them; the partial index job_downstream_lookup
    finds them) and those the job's own edges name; then, only if their edges name jobs without
    dependencies not read yet, those. Reading every live job of the environment instead took 13 ms
    of the job page with 3,000 jobs in it.
    """
    live = (
        restrict(Job.objects.filter(tenant_id=job.tenant_id, environment_id=job.environment_id), user)
        .exclude(status=JobStatus.DELETED)
        .exclude(pk=job.pk)
    )
    fields = ("id", "name", "status", "dependencies")

    def upstream_names(dependencies) -> set[str]:
        return {
            edge["upstream"]
            for edge in dependencies or []
            if isinstance(edge, dict) and isinstance(edge.get("upstream"), str)
        }

    own = upstream_names(job.dependencies) - {job.name}
    rows = list(live.filter(HAS_DEPENDENCIES | Q(name__in=sorted(own))).values(*fields))
    named = set().union(*(upstream_names(row["dependencies"]) for row in rows))
    named -= {row["name"] for row in rows} | {job.name}
    if named:
        rows += list(live.filter(name__in=sorted(named)).values(*fields))
    nodes = {row["name"]: row for row in rows}
    nodes[job.name] = {"id": job.pk, "name": job.name, "status": job.status, "dependencies": job.dependencies or []}
    upstreams = {
        name: [e for e in row["dependencies"] or [] if isinstance(e, dict) and e.get("upstream") in nodes]
        for name, row in nodes.items()
    }
    downstreams: dict[str, list[str]] = {name: [] for name in nodes}
    for name, edges in upstreams.items():
        for edge in edges:
            downstreams[edge["upstream"]].append(name)

    def reach(start: str, step) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in step(stack.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    ancestors = reach(job.name, lambda n: [e["upstream"] for e in upstreams[n]])
    descendants = reach(job.name, lambda n: downstreams[n])
    members = ancestors | descendants | {job.name}
    if len(members) == 1:
        return None

    depth: dict[str, int] = {}

    def level(name: str, trail: frozenset = frozenset()) -> int:
        if name not in depth:
            parents = [
                e["upstream"] for e in upstreams[name] if e["upstream"] in members and e["upstream"] not in trail
            ]
            depth[name] = 1 + max((level(p, trail | {name}) for p in parents), default=-1)
        return depth[name]

    columns: dict[int, list[str]] = {}
    for name in sorted(members):
        columns.setdefault(level(name), []).append(name)
    position = {}
    for col, names in columns.items():
        for row, name in enumerate(names):
            position[name] = (MARGIN + col * COLUMN, MARGIN + row * ROW)
    node_list = [
        {
            "id": nodes[name]["id"],
            "name": name,
            "status": nodes[name]["status"],
            "x": x,
            "y": y,
            "text_x": x + 10,
            "text_y": y + NODE_H // 2 + 5,
            "current": name == job.name,
            "relation": "current" if name == job.name else ("upstream" if name in ancestors else "downstream"),
        }
        for name, (x, y) in sorted(position.items(), key=lambda item: item[1])
    ]
    edge_list = []
    for name in sorted(members):
        for edge in upstreams[name]:
            if edge["upstream"] not in members:
                continue
            x1, y1 = position[edge["upstream"]]
            x2, y2 = position[name]
            x1, y1, y2 = x1 + NODE_W, y1 + NODE_H // 2, y2 + NODE_H // 2
            edge_list.append(
                {
                    "upstream": edge["upstream"],
                    "downstream": name,
                    "label": edge_label(edge),
                    "condition": edge.get("condition", "success"),
                    "x1": x1,
                    "y1": y1,
                    "x2": x2,
                    "y2": y2,
                    "label_x": (x1 + x2) // 2,
                    "label_y": (y1 + y2) // 2 - 6,
                }
            )
    return {
        "nodes": node_list,
        "edges": edge_list,
        "width": MARGIN * 2 + (max(columns) + 1) * COLUMN - (COLUMN - NODE_W),
        "height": MARGIN * 2 + max(len(v) for v in columns.values()) * ROW - (ROW - NODE_H),
        "node_w": NODE_W,
        "node_h": NODE_H,
        "upstream_count": len(ancestors),
        "downstream_count": len(descendants),
    }
