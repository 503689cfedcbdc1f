"""Secret references: only the tenant's own prefix, no traversal, no reserved variables."""

import pytest
from django.core.exceptions import ValidationError

from governance.secrets import MASK, clean_secret_map, mask, parse_reference


def test_a_reference_under_the_tenants_prefix_is_accepted():
    ref = parse_reference("vault:secret/governor/acme/payments/db#password", "acme")
    assert (ref.mount, ref.path, ref.key) == ("secret", "governor/acme/payments/db", "password")


@pytest.mark.parametrize(
    "reference, message",
    [
        ("vault:secret/governor/globex/db#password", "must live under"),
        ("vault:secret/governor/acme/../globex/db#password", "'..'"),
        ("vault:secret/governor/acme/./db#password", "'.'"),
        ("vault:secret/governor/acme//db#password", "empty"),
        ("vault:secret/governor/acme#password", "must live under"),
        ("vault:secret/governor/acme/#password", "empty"),
        ("vault:secret/governor/acmecorp/db#password", "must live under"),
        ("vault:secret/other/acme/db#password", "must live under"),
        ("vault:sys/governor/acme/db#password", "not allowed"),
        ("vault:secret/governor/acme/db", "not a secret reference"),
        ("vault:secret/governor/acme/db#pass#word", "not a secret reference"),
        ("secret/governor/acme/db#password", "not a secret reference"),
        ("vault:secret/governor/acme/d%2e%2e/db#password", "not a secret reference"),
        ("vault:secret/governor/acme/db\n#password", "not a secret reference"),
    ],
)
def test_references_outside_the_tenants_prefix_are_refused(reference, message):
    with pytest.raises(ValueError, match=message):
        parse_reference(reference, "acme")


def test_a_secret_map_reports_every_bad_entry_by_variable_name():
    with pytest.raises(ValidationError) as info:
        clean_secret_map(
            {
                "DB_PASSWORD": "vault:secret/governor/globex/db#password",
                "lower": "vault:secret/governor/acme/db#password",
                "PATH": "vault:secret/governor/acme/db#password",
                "LD_PRELOAD": "vault:secret/governor/acme/db#password",
                "GOVERNOR_RUN_ID": "vault:secret/governor/acme/db#password",
                "OK": "vault:secret/governor/acme/db#password",
            },
            "acme",
        )
    errors = info.value.message_dict["secrets"]
    assert len(errors) == 5
    assert any(e.startswith("DB_PASSWORD:") for e in errors)
    assert not any(e.startswith("OK") for e in errors)


def test_a_secret_map_must_be_an_object():
    with pytest.raises(ValidationError):
        clean_secret_map(["vault:secret/governor/acme/db#password"], "acme")


def test_mask_replaces_every_value_longest_first():
    text = "user=admin pass=hunter2hunter2 again hunter2hunter2 and hunter2"
    masked = mask(text, ["hunter2", "hunter2hunter2", ""])
    assert "hunter2" not in masked
    assert masked.count(MASK) == 3
