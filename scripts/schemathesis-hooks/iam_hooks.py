"""Schemathesis hooks for scripts/schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

Schemathesis fuzzes with one administrator's token, and it learns that administrator's
principal id from the list responses (its inferred links). Left alone it revokes the very
credential its token came from (or rotates it without a grace period, or narrows its ceiling or
expiry), or unassigns `iam-admin` from its own principal once it has made another
administrator, and every later request is a 401 or 403: the rules would stop being fuzzed at
all. So those requests on the guarded principal are redirected to a stand-in principal the
script created. Everything else on the guarded principal still runs,
including the self-service refusals (status, expiry, granting itself a role).
"""

import os

import schemathesis

GUARDED = os.environ["IAM_SCHEMATHESIS_GUARDED_PRINCIPAL"]
STAND_IN = os.environ["IAM_SCHEMATHESIS_STAND_IN_PRINCIPAL"]


def would_lock_out(method, path):
    return (
        (method == "POST" and (path.endswith("/revoke") or path.endswith("/rotate")))
        or (method == "PATCH" and "/credentials/" in path)
        or (method == "DELETE" and "/role-assignments/" in path)
    )


@schemathesis.hook
def before_call(context, case, **kwargs):
    parameters = case.path_parameters or {}
    if parameters.get("principalId") == GUARDED and would_lock_out(case.method.upper(), case.path):
        parameters["principalId"] = STAND_IN
