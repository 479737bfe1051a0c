//! Built-in roles, available to every organisation.

use std::sync::LazyLock;

use crate::ids::{Permission, RoleId};
use crate::model::{PrincipalType, Role};

/// Every permission this service checks. `iam-admin` holds all of them.
pub const IAM_PERMISSIONS: &[&str] =
    &["iam:api-keys:read", "iam:api-keys:write", "iam:credentials:write", "iam:roles:write", "iam:role-assignments:write"];

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
        role("iam-admin", "Full access to IAM API keys, credentials, roles and role assignments", IAM_PERMISSIONS, &[User, ApiKey]),
        role("iam-viewer", "Read API-key principals, credentials, roles and role assignments", &["iam:api-keys:read"], &[User, ApiKey]),
        role("org-owner", "Owns the organisation; for signed-in users only", IAM_PERMISSIONS, &[User]),
        role("device-provisioner", "Provision IoT devices", &["iot:devices:provision"], &[ApiKey, ServiceAccount]),
    ]
});

pub fn builtins() -> &'static [Role] {
    &BUILTIN
}

pub fn builtin(id: &str) -> Option<&'static Role> {
    BUILTIN.iter().find(|r| r.id.as_str() == id)
}

pub const ADMIN_ROLE: &str = "iam-admin";
