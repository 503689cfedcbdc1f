"""The parameter syntax of job definitions: a name, and ``{name}`` placeholders in argv items and
HTTP bodies (validated by ``execution_spec``, filled in by it and by ``http_jobs``)."""

import re

PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
WHOLE_PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]{0,63})\}$")
ANY_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]{0,63}\}")
