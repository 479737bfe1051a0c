//! Built-in roles, available to every organisation.

use std::sync::LazyLock;

use crate::ids::{Permission, RoleId};
use crate::model::{PrincipalType, Role};

/// The permissions that make an organisation administrator (see `authority::is_administrator`):
/// whoever holds them all can manage every principal, key and role.
pub const IAM_PERMISSIONS: &[&str] =
    &["iam:api-keys:read", "iam:api-keys:write", "iam:credentials:write", "iam:roles:write", "iam:role-assignments:write"];

/// Every permission this service checks; `iam-admin` and `org-owner` hold all of them. Setting
/// the credential policy, introspecting tokens and reading the audit trail are not part of
/// what makes an administrator
/// (they were added later, and keys and roles that administered before keep doing so), but an
/// administrator can grant them.
pub const ADMIN_PERMISSIONS: &[&str] = &[
    "iam:api-keys:read",
    "iam:api-keys:write",
    "iam:credentials:write",
    "iam:roles:write",
    "iam:role-assignments:write",
    "iam:policy:write",
    "iam:tokens:introspect",
    "iam:audit:read",
    "iam:webhooks:manage",
    "iam:federation:write",
];

fn role(id: &'static str, description: &str, permissions: &[&str], types: &[PrincipalType]) -> Role {
    Role {
        id: RoleId::builtin(id),
        name: id.to_owned(),
        description: description.to_owned(),
        permissions: permissions.iter().map(|p| Permission::parse(p).expect("built-in permission")).collect(),
        principal_types: types.to_vec(),
        org_id: None,
        built_in: true,
        created_at: None,
        created_by: None,
    }
}

static BUILTIN: LazyLock<Vec<Role>> = LazyLock::new(|| {
    use PrincipalType::*;
    vec![
        role(
            "iam-admin",
            "Full access to IAM API keys, credentials, roles, role assignments, the credential policy, the audit trail and webhooks",
            ADMIN_PERMISSIONS,
            &[User, ApiKey],
        ),
        role(
            "iam-viewer",
            "Read API-key principals, credentials, roles, role assignments and the audit trail",
            &["iam:api-keys:read", "iam:audit:read"],
            &[User, ApiKey],
        ),
        role("org-owner", "Owns the organisation; for signed-in users only", ADMIN_PERMISSIONS, &[User]),
        role("device-provisioner", "Provision IoT devices", &["iot:devices:provision"], &[ApiKey, ServiceAccount]),
        role(
            "token-introspector",
            "Ask whether an access token is still active (RFC 7662), for APIs that must refuse revoked keys at once",
            &["iam:tokens:introspect"],
            &[ApiKey, ServiceAccount],
        ),
    ]
});

pub fn builtins() -> &'static [Role] {
    &BUILTIN
}

pub fn builtin(id: &str) -> Option<&'static Role> {
    BUILTIN.iter().find(|r| r.id.as_str() == id)
}

pub const ADMIN_ROLE: &str = "iam-admin";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_administrator_permission_is_an_admin_role_permission() {
        assert!(IAM_PERMISSIONS.iter().all(|p| ADMIN_PERMISSIONS.contains(p)));
        let admin = builtin(ADMIN_ROLE).unwrap();
        assert_eq!(admin.permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>(), ADMIN_PERMISSIONS);
    }
}
