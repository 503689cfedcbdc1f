"""Jobs as code: manifests read with positions, validated, planned, applied and exported.

See docs/manifests.md for the format.
"""

from .export import dump, export_tenant, json_schema
from .loader import API_VERSION, ManifestSet, Problem, read_paths, read_text, read_texts
from .plan import ApplyError, Change, Plan, apply_plan, make_plan
from .validate import check

__all__ = [
    "API_VERSION",
    "ApplyError",
    "Change",
    "ManifestSet",
    "Plan",
    "Problem",
    "apply_plan",
    "check",
    "dump",
    "export_tenant",
    "json_schema",
    "make_plan",
    "read_paths",
    "read_text",
    "read_texts",
]
