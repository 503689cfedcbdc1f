"""``user.has_perm(perm, obj)`` (Django's API, as the admin and any third-party code call it) answers
exactly what ``governance.access`` answers, for the whole cast, narrowed and group grants included,
over every object kind and every action; and it costs the same two queries whatever the rows."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from guardian.shortcuts import assign_perm

from approvals.models import ChangeRequest, ChangeStatus
from governance import access
from governance.access import Action, Grant
from governance.actors import SYSTEM
from governance.backends import permission_name
from governance.models import Environment, Role, Scope, Team, Tenant
from governance.services import grant_role
from jobs.models import Job, Run

CAST_USERS = [
    "admin",
    "author",
    "author2",
    "approver",
    "approver2",
    "operator",
    "viewer",
    "outsider",
    "superuser",
    "globex_admin",
    "globex_author",
    "globex_approver",
]


# Where the jobs are: every environment and team of acme, and globex.
PLACES = [("dev", "payments"), ("staging", "payments"), ("prod", "payments"), ("dev", "data"), ("prod", "data")]
PLACES += [("globex_prod", "ops")]


def _users(cast) -> dict:
    """The cast plus users whose grants are narrowed, granted through a group, or switched off."""
    User = get_user_model()
    users = {name: getattr(cast, name) for name in CAST_USERS}

    def narrowed(name, role, **where):
        users[name] = User.objects.create_user(name)
        grant_role(users[name], role, tenant=cast.acme, **where, actor=SYSTEM)

    narrowed("payments-operator", Role.OPERATOR, team=cast.payments)
    narrowed("prod-author", Role.AUTHOR, environment=cast.prod)
    narrowed("payments-staging-admin", Role.TENANT_ADMIN, team=cast.payments, environment=cast.staging)
    narrowed("data-approver", Role.APPROVER, team=cast.data)
    grant_role(users["data-approver"], Role.VIEWER, tenant=cast.globex, actor=SYSTEM)

    group = Group.objects.create(name="data-operators")
    member = User.objects.create_user("group-member")
    member.groups.add(group)
    scope, _ = Scope.objects.get_or_create(tenant=cast.acme, team=cast.data, environment=None)
    assign_perm(f"governance.role_{Role.OPERATOR}", group, scope)
    users["group-member"] = member

    inactive = User.objects.create_user("gone", is_active=False)
    grant_role(inactive, Role.TENANT_ADMIN, tenant=cast.acme, actor=SYSTEM)
    users["inactive"] = inactive
    users["inactive-superuser"] = User.objects.create_user("gone-root", is_superuser=True, is_active=False)
    users["anonymous"] = AnonymousUser()
    return users


def _objects(cast) -> list:
    """A job in each environment and team of acme and one of globex, a run and an open change request
    of each, and the teams, environments and tenants themselves."""
    for i, (environment, team) in enumerate((getattr(cast, e), getattr(cast, t)) for e, t in PLACES):
        definition = cast.definition(name=f"{team.slug}.matrix.job-{i}")
        job = Job.objects.create(tenant=environment.tenant, team=team, environment=environment, **definition)
        cast.queued_run(job)
        ChangeRequest.objects.create(
            tenant=environment.tenant,
            team=team,
            environment=environment,
            action="update",
            job=job,
            proposed=definition,
            author=cast.globex_author if environment.tenant == cast.globex else cast.author,
            justification="matrix",
            status=ChangeStatus.SUBMITTED,
            required_approvals=environment.required_approvals,
        )
    return [
        *Job.objects.all(),
        *Run.objects.select_related("job"),
        *ChangeRequest.objects.all(),
        *Team.objects.all(),
        *Environment.objects.all(),
        *Tenant.objects.all(),
    ]


def test_has_perm_answers_what_access_answers_over_the_matrix(cast):
    users = _users(cast)
    objects = _objects(cast)
    assert {type(o) for o in objects} == {Job, Run, ChangeRequest, Team, Environment, Tenant}
    disagreements = []
    answers: dict[Action, set[bool]] = {action: set() for action in Action}
    for name, user in users.items():
        for obj in objects:
            for action in Action:
                perm = permission_name(action, obj)
                asked = user.has_perm(perm, obj)
                decided = access.can(user, action, obj)
                answers[action].add(decided)
                if asked != decided:
                    disagreements.append((name, perm, str(obj), asked, decided))
            # Model permissions never reach a governed object: writes go through change control.
            for verb in ("add", "change", "delete"):
                perm = f"{obj._meta.app_label}.{verb}_{obj._meta.model_name}"
                if user.has_perm(perm, obj) != (user.is_active and user.is_superuser):
                    disagreements.append((name, perm, str(obj), not user.is_superuser, user.is_superuser))
    assert disagreements == []
    # The matrix is not trivial: every action is allowed somewhere and refused somewhere.
    assert all(seen == {True, False} for seen in answers.values()), answers


def test_role_permissions_on_scopes_are_the_grants_access_reads(cast):
    """Guardian's own backend answers ``governance.role_<role>`` on a scope; access.py reads the
    same rows (direct and through groups): the two agree for every user, scope and role."""
    users = _users(cast)
    disagreements = []
    held = 0
    for name, user in users.items():
        grants = access.grants_for(user)
        for scope in Scope.objects.all():
            for role in Role:
                stored = Grant(role.value, scope.tenant_id, scope.team_id, scope.environment_id) in grants
                expected = stored or (user.is_active and user.is_superuser)
                held += stored
                if user.has_perm(f"governance.role_{role}", scope) != expected:
                    disagreements.append((name, role.value, str(scope), expected))
    assert disagreements == []
    assert held >= len(CAST_USERS) + 4


def test_has_perm_over_many_rows_costs_the_grant_queries_once(cast, django_assert_num_queries):
    users = _users(cast)
    objects = _objects(cast)
    for name in ["viewer", "payments-operator", "group-member", "outsider"]:
        user = get_user_model().objects.get(pk=users[name].pk)
        with django_assert_num_queries(1):  # the user's own grants and its groups' grants, in one statement
            allowed = [user.has_perm(permission_name(action, obj), obj) for obj in objects for action in Action]
        assert len(allowed) == len(objects) * len(Action)
        assert any(allowed) == (name != "outsider"), name


def test_admin_object_view_permission_agrees_with_has_perm(cast, rf):
    """The admin's per-object view check is Django's ``has_perm``: a narrowed staff member may open
    the jobs of their team only."""
    from django.contrib import admin

    users = _users(cast)
    _objects(cast)
    model_admin = admin.site._registry[Job]
    for name, visible in [
        ("payments-operator", {"payments"}),
        ("group-member", {"data"}),
        ("viewer", {"payments", "data"}),
        ("globex_admin", {"ops"}),
        ("outsider", set()),
    ]:
        get_user_model().objects.filter(pk=users[name].pk).update(is_staff=True)
        request = rf.get("/admin/")
        request.user = get_user_model().objects.get(pk=users[name].pk)
        jobs = list(Job.objects.select_related("team"))
        opened = {job.team.slug for job in jobs if model_admin.has_view_permission(request, job)}
        assert opened == {job.team.slug for job in jobs if request.user.has_perm("jobs.view_job", job)}, name
        assert opened == visible, name
