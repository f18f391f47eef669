"""Everyone who may call a service on cast.org (the ``actor_named`` fixture makes them), with the
role they act with there; None: a stranger. API tokens act with the role of their scope."""

from __future__ import annotations

from tenancy.models import ROLE_RANK, TOKEN_ROLE, Role, TokenScope

EFFECTIVE_ROLE = {
    "owner": Role.OWNER,
    "admin": Role.ADMIN,
    "editor": Role.EDITOR,
    "viewer": Role.VIEWER,
    "outsider": None,
    "read_token": TOKEN_ROLE[TokenScope.READ],
    "write_token": TOKEN_ROLE[TokenScope.WRITE],
}
ACTORS = list(EFFECTIVE_ROLE)


def allowed(who: str, needs: str) -> bool:
    role = EFFECTIVE_ROLE[who]
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[needs]


def permitted(cases) -> list:
    """(case, actor name) for every actor whose role suffices for the case."""
    return [(c, w) for c in cases for w in ACTORS if allowed(w, c.needs)]


def too_low(cases) -> list:
    """(case, actor name) for every member or token whose role is below what the case needs."""
    return [(c, w) for c in cases for w in ACTORS if EFFECTIVE_ROLE[w] is not None and not allowed(w, c.needs)]
