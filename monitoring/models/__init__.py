"""Monitoring models, one module per part: alert rules, incidents, on-call, recovery rules."""

from .incidents import *  # noqa: F403
from .oncall import *  # noqa: F403
from .recovery import *  # noqa: F403
from .rules import *  # noqa: F403
