"""Secret references: only the job's own tenant/environment(/team) prefix, no traversal, no reserved variables."""

import pytest
from django.core.exceptions import ValidationError

from governance.secrets import MASK, SecretScope, clean_secret_map, mask, parse_reference

ACME_DEV = SecretScope("acme", "dev")


def test_a_reference_under_the_jobs_prefix_is_accepted():
    ref = parse_reference("vault:secret/governor/acme/dev/payments/db#password", ACME_DEV)
    assert (ref.mount, ref.path, ref.key) == ("secret", "governor/acme/dev/payments/db", "password")


def test_a_team_scoped_reference_must_name_the_team():
    payments = SecretScope("acme", "dev", "payments")
    assert parse_reference("vault:secret/governor/acme/dev/payments/db#pw", payments).path.endswith("payments/db")
    for reference in ("vault:secret/governor/acme/dev/data/db#pw", "vault:secret/governor/acme/dev/db#pw"):
        with pytest.raises(ValueError, match="'secret/governor/acme/dev/payments/...'"):
            parse_reference(reference, payments)
    with pytest.raises(ValueError, match="must live under"):
        parse_reference("vault:secret/governor/acme/dev/payments#pw", payments)


@pytest.mark.parametrize(
    "reference, message",
    [
        ("vault:secret/governor/globex/db#password", "must live under"),
        ("vault:secret/governor/globex/dev/db#password", "must live under"),
        ("vault:secret/governor/acme/prod/db#password", "must live under"),
        ("vault:secret/governor/acme/devel/db#password", "must live under"),
        ("vault:secret/governor/acme/dev#password", "must live under"),
        ("vault:secret/governor/acme/db#password", "must live under"),
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
        parse_reference(reference, ACME_DEV)


def test_a_secret_map_reports_every_bad_entry_by_variable_name():
    with pytest.raises(ValidationError) as info:
        clean_secret_map(
            {
                "DB_PASSWORD": "vault:secret/governor/globex/dev/db#password",
                "lower": "vault:secret/governor/acme/dev/db#password",
                "PATH": "vault:secret/governor/acme/dev/db#password",
                "LD_PRELOAD": "vault:secret/governor/acme/dev/db#password",
                "GOVERNOR_RUN_ID": "vault:secret/governor/acme/dev/db#password",
                "OK": "vault:secret/governor/acme/dev/db#password",
            },
            ACME_DEV,
        )
    assert info.value.message_dict == {
        "secrets": ["'lower' is not an environment variable name (A-Z, 0-9, _)."],
        "secrets.DB_PASSWORD": ["Secrets of acme/dev jobs must live under 'secret/governor/acme/dev/...'."],
        "secrets.PATH": ["This environment variable is reserved."],
        "secrets.LD_PRELOAD": ["This environment variable is reserved."],
        "secrets.GOVERNOR_RUN_ID": ["This environment variable is reserved."],
    }


def test_a_secret_map_must_be_an_object():
    with pytest.raises(ValidationError):
        clean_secret_map(["vault:secret/governor/acme/dev/db#password"], ACME_DEV)


def test_mask_replaces_every_value_longest_first():
    text = "user=admin pass=hunter2hunter2 again hunter2hunter2 and hunter2"
    masked = mask(text, ["hunter2", "hunter2hunter2", ""])
    assert "hunter2" not in masked
    assert masked.count(MASK) == 3
