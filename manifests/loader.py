"""Reading manifest files: YAML documents parsed with the position of every node.

A manifest set is a list of YAML streams; each stream holds one or more
documents of ``kind: Tenant`` (declares a tenant's teams and environments, so
validation works offline) or ``kind: Jobs`` (one team's jobs, each listed for
one or more environments with per-environment overrides).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from django.conf import settings

from governance.models import slug_validator
from governance.patterns import pattern_problem
from jobs.models import DEFINITION_FIELDS

API_VERSION = "governor/v1"
KINDS = ("Tenant", "Jobs")
DOCUMENT_KEYS = {
    "Tenant": ("apiVersion", "kind", "tenant", "naming_pattern", "secrets_by_team", "teams", "environments"),
    "Jobs": ("apiVersion", "kind", "tenant", "team", "jobs"),
}
# Keys of a job entry that are not definition fields.
ENTRY_KEYS = ("environments", "overrides")
MANIFEST_SUFFIXES = (".yaml", ".yml")
_SLUG = re.compile(cast(re.Pattern[str], slug_validator.regex).pattern)
_STR_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True)
class Problem:
    """One error found in the manifests, at a file, line and column (1-based)."""

    file: str
    line: int
    column: int
    message: str
    # Refused for lack of a role (HTTP 403) rather than invalid (HTTP 400).
    forbidden: bool = False

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "column": self.column, "message": self.message}


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else " (docs/manifests.md lists the fields)"


class _Loader(yaml.SafeLoader):
    """Safe YAML without timestamps (dates stay strings, so every value is plain JSON) and without
    aliases, which would let a few bytes expand into an enormous document."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                "anchors and aliases are not supported (per-environment values go in overrides)",
                event.start_mark,
            )
        return super().compose_node(parent, index)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def position(node: yaml.Node | None) -> tuple[int, int]:
    if node is None:
        return 1, 1
    return node.start_mark.line + 1, node.start_mark.column + 1


def pairs(node: yaml.Node) -> list[tuple[yaml.Node, yaml.Node]]:
    return list(node.value) if isinstance(node, yaml.MappingNode) else []


def key_node(node: yaml.Node, key: str) -> yaml.Node | None:
    for k, _ in pairs(node):
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return k
    return None


def value_node(node: yaml.Node, key: str | int) -> yaml.Node | None:
    if isinstance(key, int):
        if isinstance(node, yaml.SequenceNode) and 0 <= key < len(node.value):
            return node.value[key]
        return None
    for k, v in pairs(node):
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


@dataclass
class TenantDecl:
    """A ``kind: Tenant`` document: what offline validation knows about a tenant."""

    file: str
    node: yaml.Node
    slug: str
    naming_pattern: str | None
    teams: dict[str, yaml.Node]
    environments: dict[str, yaml.Node]
    secrets_by_team: bool = False


@dataclass
class _TeamPlace:
    """Where a ``kind: Jobs`` document or one of its jobs stands: its file and node, its tenant and team."""

    file: str
    node: yaml.Node
    tenant: str
    tenant_node: yaml.Node
    team: str
    team_node: yaml.Node


@dataclass
class JobEntry(_TeamPlace):
    """One job of a ``kind: Jobs`` document, listed for one or more environments."""

    name: str
    environments: list[tuple[str, yaml.Node]]
    base: dict[str, Any]
    overrides: dict[str, dict[str, Any]]
    override_nodes: dict[str, yaml.Node]

    def definition_for(self, env: str) -> dict[str, Any]:
        return {**self.base, **self.overrides.get(env, {})}

    def find(self, env: str | None, path: list[str | int]) -> yaml.Node | None:
        """The node at exactly ``path`` (override first), or None."""
        for start in self._starts(env, path):
            node: yaml.Node | None = start
            for part in path:
                node = value_node(node, part) if node is not None else None
                if node is None:
                    break
            if node is not None:
                return node
        return None

    def _starts(self, env: str | None, path: list[str | int]) -> list[yaml.Node]:
        starts = []
        if env is not None and env in self.override_nodes and path and path[0] in self.overrides.get(env, {}):
            starts.append(self.override_nodes[env])
        starts.append(self.node)
        return starts

    def locate(self, env: str | None, path: list[str | int]) -> yaml.Node:
        """The node a definition field (or a part of it) comes from in ``env``: the override when there
        is one, else the base entry; the nearest existing ancestor when the path goes deeper than the YAML."""
        node = self._starts(env, path)[0]
        for part in path:
            child = value_node(node, part)
            if child is None:
                break
            node = child
        return node


@dataclass
class JobsDoc(_TeamPlace):
    entries: list[JobEntry] = field(default_factory=list)


@dataclass
class ManifestSet:
    files: list[str] = field(default_factory=list)
    tenants: list[TenantDecl] = field(default_factory=list)
    documents: list[JobsDoc] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def entries(self) -> list[JobEntry]:
        return [entry for doc in self.documents for entry in doc.entries]

    def extend(self, other: ManifestSet) -> None:
        self.files += other.files
        self.tenants += other.tenants
        self.documents += other.documents
        self.problems += other.problems


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def error(self, node: yaml.Node | None, message: str) -> None:
        line, column = position(node)
        self.problems.append(Problem(self.file, line, column, message))

    def check_plain(self, node: yaml.Node, value: Any) -> bool:
        """Keys must be unique strings and values plain JSON types; report the first offence per branch."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for k, _ in node.value:
                if not isinstance(k, yaml.ScalarNode):
                    self.error(k, "Mapping keys must be plain strings.")
                    return False
                if k.tag != _STR_TAG:
                    self.error(k, f"Mapping key {k.value!r} is not read as a string: quote it.")
                    return False
                if k.value in seen:
                    line, column = position(seen[k.value])
                    self.error(k, f"Duplicate key {k.value!r} (first at line {line}, column {column}).")
                    return False
                seen[k.value] = k
            return all(self.check_plain(v, value[k.value]) for k, v in node.value)
        if isinstance(node, yaml.SequenceNode):
            return all(self.check_plain(n, v) for n, v in zip(node.value, value, strict=False))
        if value is None or isinstance(value, str | int | float | bool):
            return True
        self.error(node, "Only plain values are allowed (strings, numbers, booleans, null, lists and mappings).")
        return False

    def read(self, text: str) -> ManifestSet:
        result = ManifestSet(files=[self.file])
        try:
            # The reader refuses control characters while it is being built, so build it here.
            loader = _Loader(text)
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            column = exc.position - text.rfind("\n", 0, exc.position)
            self.problems.append(
                Problem(self.file, line, column, f"YAML syntax error: character #x{exc.character:04x} is not allowed.")
            )
            result.problems = self.problems
            return result
        try:
            while loader.check_node():
                node = loader.get_node()
                if node is None:
                    continue
                value = loader.construct_document(node)
                if value is None:
                    continue
                if not self.check_plain(node, value):
                    continue
                self.document(node, value, result)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = exc.problem or exc.context or "unreadable YAML"
            self.problems.append(Problem(self.file, line, column, f"YAML syntax error: {problem}."))
        except yaml.YAMLError as exc:
            self.problems.append(Problem(self.file, 1, 1, f"YAML syntax error: {exc}."))
        except RecursionError:
            self.problems.append(Problem(self.file, 1, 1, "The YAML is nested too deeply."))
        finally:
            loader.dispose()
        result.problems = self.problems
        return result

    def _slug(self, doc: yaml.Node, value: dict, key: str, what: str) -> str | None:
        node = value_node(doc, key)
        raw = value.get(key)
        if node is None:
            self.error(doc, f"{key}: This field is required (the {what}'s slug).")
            return None
        if not isinstance(raw, str) or not _SLUG.fullmatch(raw):
            self.error(node, f"{key}: {raw!r} is not a {what} slug (lower-case letters, digits and single dashes).")
            return None
        return raw

    def _unknown(self, doc: yaml.Node, allowed: tuple[str, ...], what: str) -> None:
        for k, _ in pairs(doc):
            if k.value not in allowed:
                self.error(k, f"Unknown key {k.value!r} in {what} (allowed: {', '.join(allowed)}).")

    def _slug_list(self, parent: yaml.Node, value: dict, key: str, what: str) -> dict[str, yaml.Node] | None:
        node = value_node(parent, key)
        raw = value.get(key)
        if node is None:
            self.error(parent, f"{key}: This field is required (a list of {what} slugs).")
            return None
        if not isinstance(raw, list):
            self.error(node, f"{key}: Must be a list of {what} slugs.")
            return None
        found: dict[str, yaml.Node] = {}
        for item_node, item in zip(node.value, raw, strict=True):
            if not isinstance(item, str) or not _SLUG.fullmatch(item):
                self.error(item_node, f"{key}: {item!r} is not a {what} slug (lower-case letters, digits and dashes).")
            elif item in found:
                self.error(item_node, f"{key}: {item!r} is listed twice.")
            else:
                found[item] = item_node
        return found

    def document(self, node: yaml.Node, value: Any, result: ManifestSet) -> None:
        if not isinstance(value, dict):
            self.error(node, "A manifest document must be a mapping with apiVersion, kind and tenant.")
            return
        version_node = value_node(node, "apiVersion")
        if version_node is None:
            self.error(node, f"apiVersion: This field is required ({API_VERSION!r}).")
            return
        if value["apiVersion"] != API_VERSION:
            self.error(version_node, f"apiVersion: {value['apiVersion']!r} is not supported (use {API_VERSION!r}).")
            return
        kind_node = value_node(node, "kind")
        if kind_node is None:
            self.error(node, f"kind: This field is required (one of: {', '.join(KINDS)}).")
            return
        kind = value["kind"]
        if kind not in KINDS:
            self.error(kind_node, f"kind: {kind!r} is not a manifest kind (one of: {', '.join(KINDS)}).")
            return
        self._unknown(node, DOCUMENT_KEYS[kind], f"a {kind} document")
        tenant = self._slug(node, value, "tenant", "tenant")
        if kind == "Tenant":
            self.tenant_document(node, value, tenant, result)
        else:
            self.jobs_document(node, value, tenant, result)

    def tenant_document(self, node: yaml.Node, value: dict, tenant: str | None, result: ManifestSet) -> None:
        pattern = value.get("naming_pattern")
        if pattern is not None:
            pattern_node = value_node(node, "naming_pattern")
            if not isinstance(pattern, str):
                self.error(pattern_node, "naming_pattern: Must be a regular expression (a string).")
                pattern = None
            else:
                problem = pattern_problem(pattern)
                if problem:
                    self.error(pattern_node, f"naming_pattern: {problem}")
                    pattern = None
        by_team = value.get("secrets_by_team", False)
        if not isinstance(by_team, bool):
            self.error(value_node(node, "secrets_by_team"), "secrets_by_team: Must be true or false.")
            by_team = False
        teams = self._slug_list(node, value, "teams", "team")
        environments = self._slug_list(node, value, "environments", "environment")
        if tenant is not None and teams is not None and environments is not None:
            result.tenants.append(TenantDecl(self.file, node, tenant, pattern, teams, environments, by_team))

    def jobs_document(self, node: yaml.Node, value: dict, tenant: str | None, result: ManifestSet) -> None:
        team = self._slug(node, value, "team", "team")
        jobs_node = value_node(node, "jobs")
        jobs = value.get("jobs")
        if jobs_node is None:
            self.error(node, "jobs: This field is required (a list of jobs; [] for none).")
            return
        if not isinstance(jobs, list):
            self.error(jobs_node, "jobs: Must be a list of jobs.")
            return
        if tenant is None or team is None:
            return
        tenant_node, team_node = value_node(node, "tenant"), value_node(node, "team")
        assert tenant_node is not None and team_node is not None  # both were read above
        doc = JobsDoc(self.file, node, tenant, tenant_node, team, team_node)
        for entry_node, entry in zip(jobs_node.value, jobs, strict=True):
            job = self.entry(entry_node, entry, doc)
            if job is not None:
                doc.entries.append(job)
        result.documents.append(doc)

    def entry(self, node: yaml.Node, value: Any, doc: JobsDoc) -> JobEntry | None:
        if not isinstance(value, dict):
            self.error(node, "A job must be a mapping of its fields (name, environments, cron, ...).")
            return None
        allowed = (*DEFINITION_FIELDS, *ENTRY_KEYS)
        ok = True
        for k, _ in pairs(node):
            if k.value not in allowed:
                self.error(k, f"Unknown job field {k.value!r}{_suggest(k.value, allowed)}.")
                ok = False
        name_node = value_node(node, "name")
        name = value.get("name")
        if name_node is None:
            self.error(node, "name: This field is required.")
            ok = False
        elif not isinstance(name, str) or not name.strip():
            self.error(name_node, "name: Must be a non-empty string.")
            ok = False
        environments = self._slug_list(node, value, "environments", "environment")
        if environments is not None and not environments and value_node(node, "environments") is not None:
            self.error(value_node(node, "environments"), "environments: List at least one environment.")
            ok = False
        overrides: dict[str, dict] = {}
        override_nodes: dict[str, yaml.Node] = {}
        overrides_node = value_node(node, "overrides")
        if overrides_node is not None:
            raw = value["overrides"]
            if not isinstance(raw, dict):
                self.error(overrides_node, "overrides: Must map environment slugs to the fields that differ there.")
                ok = False
            else:
                for env_key, env_node in pairs(overrides_node):
                    env = env_key.value
                    if environments is not None and env not in environments:
                        self.error(env_key, f"overrides: {env!r} is not one of this job's environments.")
                        ok = False
                        continue
                    fields = raw[env]
                    if not isinstance(fields, dict):
                        self.error(env_node, f"overrides.{env}: Must be a mapping of definition fields.")
                        ok = False
                        continue
                    for k, _ in pairs(env_node):
                        if k.value == "name":
                            self.error(k, "overrides: A job's name is the same in every environment.")
                            ok = False
                        elif k.value not in DEFINITION_FIELDS:
                            self.error(
                                k,
                                f"Unknown job field {k.value!r} in overrides.{env}{_suggest(k.value, DEFINITION_FIELDS)}.",
                            )
                            ok = False
                    overrides[env] = fields
                    override_nodes[env] = env_node
        if not ok or environments is None:
            return None
        base = {k: v for k, v in value.items() if k in DEFINITION_FIELDS}
        return JobEntry(
            file=self.file,
            node=node,
            tenant=doc.tenant,
            tenant_node=doc.tenant_node,
            team=doc.team,
            team_node=doc.team_node,
            name=str(name),
            environments=list(environments.items()),
            base=base,
            overrides=overrides,
            override_nodes=override_nodes,
        )


def read_text(text: str, file: str = "<manifest>") -> ManifestSet:
    return _Reader(file).read(text)


def read_texts(sources: list[tuple[str, str]]) -> ManifestSet:
    result = ManifestSet()
    for file, text in sources:
        result.extend(read_text(text, file))
    return within_limits(result)


def within_limits(mset: ManifestSet) -> ManifestSet:
    """Refuse a set declaring more jobs (one per job and environment it lists) than
    ``GOVERNOR_MANIFEST_MAX_JOBS``: its documents are dropped, so checking, planning and applying
    do nothing but report the limit."""
    limit = settings.GOVERNOR_MANIFEST_MAX_JOBS
    jobs = sum(len(entry.environments) for entry in mset.entries)
    if jobs > limit:
        mset.documents, mset.tenants = [], []
        mset.problems.append(
            Problem(
                mset.files[0] if mset.files else "<manifests>",
                1,
                1,
                f"These manifests declare {jobs} jobs (one per job and environment); at most {limit} are "
                "accepted at once (GOVERNOR_MANIFEST_MAX_JOBS): split them. Nothing was checked or changed.",
            )
        )
    return mset


def manifest_files(paths: list[str]) -> tuple[list[Path], list[Problem]]:
    """Expand files and directories (recursively, *.yaml and *.yml, sorted) in the order given."""
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(raw, 1, 1, "No such file or directory."))
    return files, problems


def read_paths(paths: list[str]) -> ManifestSet:
    files, problems = manifest_files(paths)
    result = ManifestSet(problems=problems)
    limit = settings.GOVERNOR_MANIFEST_MAX_BYTES
    size = sum(path.stat().st_size for path in files if path.is_file())
    if size > limit:
        result.problems.append(
            Problem(
                str(files[0]),
                1,
                1,
                f"These manifests are {size} bytes; at most {limit} are read at once "
                "(GOVERNOR_MANIFEST_MAX_BYTES): split them. Nothing was read.",
            )
        )
        return result
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            result.problems.append(Problem(str(path), 1, 1, f"Cannot read the file: {exc}."))
            continue
        result.extend(read_text(text, str(path)))
    return within_limits(result)
