"""The JSON Schema published in docs/ is the one the code generates."""

from pathlib import Path

from django.core.management import call_command

DOCS_SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "manifest.schema.json"


def test_published_manifest_schema_is_current(tmp_path, db):
    generated = tmp_path / "schema.json"
    call_command("export_manifests", "--schema", "-o", str(generated))
    assert generated.read_text() == DOCS_SCHEMA.read_text(), (
        "docs/manifest.schema.json is stale: run "
        "`manage.py export_manifests --schema -o docs/manifest.schema.json` after changing job fields"
    )
