"""Jobs as code: manifests read with positions (``loader``), validated (``validate``), planned and
applied as change requests (``plan``) and exported (``export``); the REST endpoints (``api``) and
the ``plan``/``apply``/``export_manifests``/``validate_manifests`` commands on top.

An app above ``approvals``: applying a manifest proposes change requests. See docs/manifests.md for
the format and docs/architecture.md for the layers.
"""
