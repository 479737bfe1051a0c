//! How each object is laid out as a DynamoDB item: attribute helpers, keys, and the
//! (de)serialisation of principals, credentials, role assignments and roles, field by field.
//! An item that does not decode is a `Corrupt` error, never a panic.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use crate::ids::{KeyId, OrgId, Permission, PrincipalId, RoleId};
use crate::model::{
    Actor, Credential, CredentialStatus, DailyUses, Principal, PrincipalStatus, PrincipalType, Role, RoleAssignment, UseWindow,
};
use crate::restrictions::Restrictions;
use crate::store::StoreError;

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn time(t: DateTime<Utc>) -> AttributeValue {
    s(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

pub(super) fn corrupt(what: &str, field: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: field '{field}' is missing or malformed"))
}

pub(super) struct Reader<'a> {
    what: &'static str,
    item: &'a Item,
}

impl<'a> Reader<'a> {
    pub(super) fn new(what: &'static str, item: &'a Item) -> Self {
        Self { what, item }
    }

    pub(super) fn str(&self, field: &str) -> Result<&'a str, StoreError> {
        self.item.get(field).and_then(|v| v.as_s().ok()).map(String::as_str).ok_or_else(|| corrupt(self.what, field))
    }

    pub(super) fn opt_str(&self, field: &str) -> Result<Option<&'a str>, StoreError> {
        match self.item.get(field) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.as_str())),
            Some(_) => Err(corrupt(self.what, field)),
        }
    }

    pub(super) fn num(&self, field: &str) -> Result<u64, StoreError> {
        self.item.get(field).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).ok_or_else(|| corrupt(self.what, field))
    }

    pub(super) fn opt_num<T: std::str::FromStr>(&self, field: &str) -> Result<Option<T>, StoreError> {
        match self.item.get(field) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| corrupt(self.what, field)),
            Some(_) => Err(corrupt(self.what, field)),
        }
    }

    pub(super) fn parse<T: std::str::FromStr>(&self, field: &str) -> Result<T, StoreError> {
        self.str(field)?.parse().map_err(|_| corrupt(self.what, field))
    }

    pub(super) fn time(&self, field: &str) -> Result<DateTime<Utc>, StoreError> {
        let raw = self.str(field)?;
        DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc)).map_err(|_| corrupt(self.what, field))
    }

    pub(super) fn opt_time(&self, field: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self.opt_str(field)? {
            None => Ok(None),
            Some(raw) => DateTime::parse_from_rfc3339(raw).map(|t| Some(t.with_timezone(&Utc))).map_err(|_| corrupt(self.what, field)),
        }
    }

    pub(super) fn strings(&self, field: &str) -> Result<Vec<&'a str>, StoreError> {
        let list = self.item.get(field).and_then(|v| v.as_l().ok()).ok_or_else(|| corrupt(self.what, field))?;
        list.iter().map(|v| v.as_s().map(String::as_str).map_err(|_| corrupt(self.what, field))).collect()
    }
}

pub(super) fn principal_status(raw: &str) -> Option<PrincipalStatus> {
    match raw {
        "Active" => Some(PrincipalStatus::Active),
        "Suspended" => Some(PrincipalStatus::Suspended),
        "Revoked" => Some(PrincipalStatus::Revoked),
        _ => None,
    }
}

pub(super) fn status_name(status: PrincipalStatus) -> &'static str {
    match status {
        PrincipalStatus::Active => "Active",
        PrincipalStatus::Suspended => "Suspended",
        PrincipalStatus::Revoked => "Revoked",
    }
}

pub(super) fn credential_status_name(status: CredentialStatus) -> &'static str {
    match status {
        CredentialStatus::Active => "Active",
        CredentialStatus::Revoked => "Revoked",
        // Never stored: expiry is computed on read.
        CredentialStatus::Expired => "Active",
    }
}

pub(super) fn principal_type(raw: &str) -> Option<PrincipalType> {
    match raw {
        "User" => Some(PrincipalType::User),
        "ApiKey" => Some(PrincipalType::ApiKey),
        "ServiceAccount" => Some(PrincipalType::ServiceAccount),
        _ => None,
    }
}

pub(super) fn principal_type_name(t: PrincipalType) -> &'static str {
    match t {
        PrincipalType::User => "User",
        PrincipalType::ApiKey => "ApiKey",
        PrincipalType::ServiceAccount => "ServiceAccount",
    }
}

pub(super) fn principal_sk(id: &PrincipalId) -> String {
    format!("P#{id}")
}

pub(super) fn credential_ref_sk(principal: &PrincipalId, key_id: &KeyId) -> String {
    format!("C#{principal}#{key_id}")
}

pub(super) fn assignment_sk(principal: &PrincipalId, role: &RoleId) -> String {
    format!("A#{principal}#{role}")
}

pub(super) fn role_sk(role: &RoleId) -> String {
    format!("R#{role}")
}

pub(super) fn role_name_sk(name: &str) -> String {
    format!("RN#{name}")
}

/// Counter items: sort key and `kind`.
pub(super) const ROLE_COUNT: (&str, &str) = ("ROLECOUNT", "roleCount");
/// Counts the principals created since the cap existed: organisations older than it start
/// from zero, and the cap bounds their growth from then on.
pub(super) const PRINCIPAL_COUNT: (&str, &str) = ("PRINCIPALCOUNT", "principalCount");
pub(super) const BOOTSTRAP_SK: &str = "BOOTSTRAP";

pub(super) fn org_key(org: &OrgId, sk: String) -> Item {
    HashMap::from([("pk".to_owned(), s(org.as_str())), ("sk".to_owned(), s(sk))])
}

pub(super) fn credential_key(key_id: &KeyId) -> Item {
    HashMap::from([("keyId".to_owned(), s(key_id.as_str()))])
}

/// A principal item. `credSeq` and `roleCount` are the store's own bookkeeping: `credSeq`
/// changes with every credential issued (an optimistic lock for the active-credential limit),
/// `roleCount` counts role assignments (for their limit).
/// Where a principal item carries the ids of its assigned roles (a string set, absent when
/// empty), so that what a principal holds is one read. Only an item marked [`ROLES_CARRIED`]
/// is trusted for it: items from before this release gain it through `iam-admin migrate`, and
/// until then are read with the assignments' query.
pub(super) const ROLE_IDS: &str = "roleIds";
pub(super) const ROLES_CARRIED: &str = "rolesCarried";

pub(super) fn principal_to_item(p: &Principal, cred_seq: u64, roles: &[RoleId]) -> Item {
    let mut item = org_key(&p.org_id, principal_sk(&p.id));
    item.insert("kind".into(), s("principal"));
    item.insert("id".into(), s(p.id.as_str()));
    item.insert("orgId".into(), s(p.org_id.as_str()));
    item.insert("type".into(), s(principal_type_name(p.principal_type)));
    item.insert("displayName".into(), s(&p.display_name));
    item.insert("status".into(), s(status_name(p.status)));
    if let Some(t) = p.expires_at {
        item.insert("expiresAt".into(), time(t));
    }
    item.insert("createdAt".into(), time(p.created_at));
    item.insert("createdBy".into(), s(&p.created_by.0));
    item.insert("updatedAt".into(), time(p.updated_at));
    item.insert("version".into(), n(p.version));
    item.insert("credSeq".into(), n(cred_seq));
    item.insert("roleCount".into(), n(roles.len() as u64));
    if !roles.is_empty() {
        item.insert(ROLE_IDS.into(), role_id_set(roles));
    }
    item.insert(ROLES_CARRIED.into(), AttributeValue::Bool(true));
    if let Some(policies) = trust_policies_value(p) {
        item.insert(TRUST_POLICIES.into(), policies);
    }
    if let Some(identity) = &p.identity {
        item.insert("identityIssuer".into(), s(&identity.issuer));
        item.insert("identitySubject".into(), s(&identity.subject));
    }
    if let Some(version) = p.signed_in_under {
        item.insert(SIGNED_IN_UNDER.into(), n(version));
    }
    item
}

/// A service account's trust policies on its item: one JSON string (they are read and written
/// whole, with the principal's version), absent when there are none.
pub(super) const TRUST_POLICIES: &str = "trustPolicies";
/// A user's latest sign-in (see `Principal::signed_in_under`).
pub(super) const SIGNED_IN_UNDER: &str = "signedInUnder";

pub(super) fn trust_policies_value(p: &Principal) -> Option<AttributeValue> {
    (!p.trust_policies.is_empty()).then(|| s(serde_json::to_string(&p.trust_policies).expect("trust policies always serialise")))
}

pub(super) fn role_id_set(roles: &[RoleId]) -> AttributeValue {
    AttributeValue::Ss(roles.iter().map(|r| r.to_string()).collect())
}

/// The role ids a principal item carries, sorted; `None` when the item predates carrying them.
pub(super) fn carried_role_ids(item: &Item) -> Result<Option<Vec<RoleId>>, StoreError> {
    if !matches!(item.get(ROLES_CARRIED), Some(AttributeValue::Bool(true))) {
        return Ok(None);
    }
    let mut ids = match item.get(ROLE_IDS) {
        None => Vec::new(),
        Some(AttributeValue::Ss(raw)) => {
            raw.iter().map(|r| RoleId::parse(r).map_err(|_| corrupt("principal", ROLE_IDS))).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(corrupt("principal", ROLE_IDS)),
    };
    ids.sort();
    Ok(Some(ids))
}

pub(super) fn principal_from_item(item: &Item) -> Result<Principal, StoreError> {
    let r = Reader::new("principal", item);
    if r.str("kind")? != "principal" {
        return Err(corrupt("principal", "kind"));
    }
    Ok(Principal {
        id: r.parse("id")?,
        org_id: r.parse("orgId")?,
        principal_type: principal_type(r.str("type")?).ok_or_else(|| corrupt("principal", "type"))?,
        display_name: r.str("displayName")?.to_owned(),
        status: principal_status(r.str("status")?).ok_or_else(|| corrupt("principal", "status"))?,
        expires_at: r.opt_time("expiresAt")?,
        created_at: r.time("createdAt")?,
        created_by: Actor(r.str("createdBy")?.to_owned()),
        updated_at: r.time("updatedAt")?,
        version: r.num("version")?,
        trust_policies: match r.opt_str(TRUST_POLICIES)? {
            None => Vec::new(),
            Some(raw) => serde_json::from_str(raw).map_err(|_| corrupt("principal", TRUST_POLICIES))?,
        },
        signed_in_under: r.opt_num(SIGNED_IN_UNDER)?,
        identity: match (r.opt_str("identityIssuer")?, r.opt_str("identitySubject")?) {
            (Some(issuer), Some(subject)) => {
                Some(crate::federation::trust::UserIdentity { issuer: issuer.to_owned(), subject: subject.to_owned() })
            }
            _ => None,
        },
    })
}

pub(super) fn credential_to_item(c: &Credential) -> Item {
    let mut item = credential_key(&c.key_id);
    item.insert("principalId".into(), s(c.principal_id.as_str()));
    item.insert("orgId".into(), s(c.org_id.as_str()));
    item.insert("name".into(), s(&c.name));
    if let Some(t) = c.expires_at {
        item.insert("expiresAt".into(), time(t));
    }
    item.insert("status".into(), s(credential_status_name(c.status)));
    item.insert("createdAt".into(), time(c.created_at));
    item.insert("createdBy".into(), s(&c.created_by.0));
    if let Some(t) = c.revoked_at {
        item.insert("revokedAt".into(), time(t));
    }
    if let Some(a) = &c.revoked_by {
        item.insert("revokedBy".into(), s(&a.0));
    }
    if let Some(t) = c.last_used_at {
        item.insert("lastUsedAt".into(), time(t));
    }
    item.insert("secretHash".into(), s(&c.secret_hash));
    if let Some(check) = &c.secret_check {
        item.insert("secretCheck".into(), s(check));
    }
    if let Some(window) = c.recent_uses {
        item.insert(USE_SECOND.into(), AttributeValue::N(window.second.to_string()));
        item.insert(USE_COUNT.into(), n(window.count.into()));
    }
    if let Some(daily) = &c.daily_uses {
        item.insert(USE_DAY.into(), AttributeValue::N(daily.day.to_string()));
        item.insert(USE_TODAY.into(), n(daily.latest().into()));
        if let Some(past) = past_counts(daily) {
            item.insert(USE_PAST.into(), s(&past));
        }
    }
    if let Some(from) = &c.last_used_from {
        item.insert(LAST_USED_FROM.into(), s(from));
    }
    if let Some(k) = &c.rotated_from {
        item.insert(ROTATED_FROM.into(), s(k.as_str()));
    }
    if let Some(k) = &c.rotated_to {
        item.insert(ROTATED_TO.into(), s(k.as_str()));
    }
    if c.self_rotation {
        item.insert(SELF_ROTATION.into(), AttributeValue::Bool(true));
    }
    let r = &c.restrictions;
    let sets = [
        (ALLOWED_PERMISSIONS, r.permissions.as_ref().map(|set| set.iter().map(|p| p.to_string()).collect::<Vec<_>>())),
        (ALLOWED_SOURCES, r.source_cidrs.as_ref().map(|set| set.iter().map(|c| c.to_string()).collect())),
        (ALLOWED_AUDIENCES, r.audiences.as_ref().map(|set| set.iter().cloned().collect())),
    ];
    for (name, values) in sets {
        // A restriction's list is never empty (validated), and DynamoDB has no empty sets.
        if let Some(values) = values.filter(|v| !v.is_empty()) {
            item.insert(name.into(), AttributeValue::Ss(values));
        }
    }
    item
}

pub(super) const SELF_ROTATION: &str = "selfRotation";

/// A credential's [`Restrictions`], one string set per kind, absent when unrestricted.
pub(super) const ALLOWED_PERMISSIONS: &str = "allowedPermissions";
pub(super) const ALLOWED_SOURCES: &str = "allowedSources";
pub(super) const ALLOWED_AUDIENCES: &str = "allowedAudiences";

fn restrictions_from_item(item: &Item) -> Result<Restrictions, StoreError> {
    fn set<T: Ord + std::str::FromStr>(item: &Item, field: &str) -> Result<Option<std::collections::BTreeSet<T>>, StoreError> {
        match item.get(field) {
            None => Ok(None),
            Some(AttributeValue::Ss(values)) => {
                values.iter().map(|v| v.parse().map_err(|_| corrupt("credential", field))).collect::<Result<_, _>>().map(Some)
            }
            Some(_) => Err(corrupt("credential", field)),
        }
    }
    Ok(Restrictions {
        permissions: set(item, ALLOWED_PERMISSIONS)?,
        source_cidrs: set(item, ALLOWED_SOURCES)?,
        audiences: set(item, ALLOWED_AUDIENCES)?,
    })
}

/// A rotation's links between a credential and its successor (about 40 bytes each).
pub(super) const ROTATED_FROM: &str = "rotatedFrom";
pub(super) const ROTATED_TO: &str = "rotatedTo";

/// The per-key limit's window on a credential item ([`UseWindow`]): two small numbers the
/// exchange's one UpdateItem sets with `lastUsedAt`.
pub(super) const USE_SECOND: &str = "useSecond";
pub(super) const USE_COUNT: &str = "useCount";

pub(super) fn use_window_from_item(item: &Item) -> Result<Option<UseWindow>, StoreError> {
    let r = Reader::new("credential", item);
    Ok(match (r.opt_num::<i64>(USE_SECOND)?, r.opt_num::<u32>(USE_COUNT)?) {
        (Some(second), Some(count)) => Some(UseWindow { second, count }),
        _ => None,
    })
}

/// The credential's [`DailyUses`] on its item: the day of the latest count, that count (one
/// number the exchange's write adds to), and the 29 days before it as one string of
/// comma-separated counts (absent when all were zero): at most about 200 bytes for a key
/// exchanged at its limit all month, a few bytes for a typical one.
pub(super) const USE_DAY: &str = "useDay";
pub(super) const USE_TODAY: &str = "useToday";
pub(super) const USE_PAST: &str = "usePast";
/// Where the credential was last used from: one IP address, at most 39 bytes.
pub(super) const LAST_USED_FROM: &str = "lastUsedFrom";

/// The days before the latest, as stored in [`USE_PAST`]; `None` when there are none.
pub(super) fn past_counts(daily: &DailyUses) -> Option<String> {
    let earlier = daily.earlier();
    (!earlier.is_empty()).then(|| earlier.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
}

fn daily_uses_from_item(item: &Item) -> Result<Option<DailyUses>, StoreError> {
    let r = Reader::new("credential", item);
    let (Some(day), Some(latest)) = (r.opt_num::<i64>(USE_DAY)?, r.opt_num::<u32>(USE_TODAY)?) else {
        return Ok(None);
    };
    let earlier = match r.opt_str(USE_PAST)? {
        None | Some("") => Vec::new(),
        Some(past) => past.split(',').map(str::parse).collect::<Result<Vec<u32>, _>>().map_err(|_| corrupt("credential", USE_PAST))?,
    };
    Ok(Some(DailyUses::from_parts(day, latest, &earlier)))
}

/// A credential item carries its principal's status: the exchange's one conditional write
/// checks it on the credential alone, and every status change rewrites it on the principal's
/// Active credentials in the same transaction (see `credentials::record_use`). Items written
/// before this attribute existed lack it until `migrate` or their first use adds it.
pub(super) const PRINCIPAL_STATUS: &str = "principalStatus";

/// The item of a new credential of `principal`.
pub(super) fn new_credential_item(c: &Credential, principal: &Principal) -> Item {
    let mut item = credential_to_item(c);
    item.insert(PRINCIPAL_STATUS.into(), s(status_name(principal.status)));
    item
}

pub(super) fn credential_from_item(item: &Item) -> Result<Credential, StoreError> {
    let r = Reader::new("credential", item);
    let status = match r.str("status")? {
        "Active" => CredentialStatus::Active,
        "Revoked" => CredentialStatus::Revoked,
        _ => return Err(corrupt("credential", "status")),
    };
    Ok(Credential {
        key_id: r.parse("keyId")?,
        principal_id: r.parse("principalId")?,
        org_id: r.parse("orgId")?,
        name: r.str("name")?.to_owned(),
        expires_at: r.opt_time("expiresAt")?,
        status,
        created_at: r.time("createdAt")?,
        created_by: Actor(r.str("createdBy")?.to_owned()),
        revoked_at: r.opt_time("revokedAt")?,
        revoked_by: r.opt_str("revokedBy")?.map(|a| Actor(a.to_owned())),
        last_used_at: r.opt_time("lastUsedAt")?,
        secret_hash: r.str("secretHash")?.to_owned(),
        secret_check: r.opt_str("secretCheck")?.map(str::to_owned),
        recent_uses: use_window_from_item(item)?,
        daily_uses: daily_uses_from_item(item)?,
        last_used_from: r.opt_str(LAST_USED_FROM)?.map(str::to_owned),
        rotated_from: r.opt_str(ROTATED_FROM)?.map(str::parse).transpose().map_err(|_| corrupt("credential", ROTATED_FROM))?,
        rotated_to: r.opt_str(ROTATED_TO)?.map(str::parse).transpose().map_err(|_| corrupt("credential", ROTATED_TO))?,
        restrictions: restrictions_from_item(item)?,
        self_rotation: matches!(item.get(SELF_ROTATION), Some(AttributeValue::Bool(true))),
    })
}

pub(super) fn credential_ref_item(c: &Credential) -> Item {
    let mut item = org_key(&c.org_id, credential_ref_sk(&c.principal_id, &c.key_id));
    item.insert("kind".into(), s("credentialRef"));
    item.insert("keyId".into(), s(c.key_id.as_str()));
    item
}

pub(super) fn assignment_to_item(a: &RoleAssignment) -> Item {
    let mut item = org_key(&a.org_id, assignment_sk(&a.principal_id, &a.role_id));
    item.insert("kind".into(), s("roleAssignment"));
    item.insert("orgId".into(), s(a.org_id.as_str()));
    item.insert("principalId".into(), s(a.principal_id.as_str()));
    item.insert("roleId".into(), s(a.role_id.as_str()));
    item.insert("assignedAt".into(), time(a.assigned_at));
    item.insert("assignedBy".into(), s(&a.assigned_by.0));
    item
}

pub(super) fn assignment_from_item(item: &Item) -> Result<RoleAssignment, StoreError> {
    let r = Reader::new("role assignment", item);
    Ok(RoleAssignment {
        org_id: r.parse("orgId")?,
        principal_id: r.parse("principalId")?,
        role_id: r.parse("roleId")?,
        assigned_at: r.time("assignedAt")?,
        assigned_by: Actor(r.str("assignedBy")?.to_owned()),
    })
}

pub(super) fn role_to_item(role: &Role, org: &OrgId) -> Item {
    let mut item = org_key(org, role_sk(&role.id));
    item.insert("kind".into(), s("role"));
    item.insert("id".into(), s(role.id.as_str()));
    item.insert("orgId".into(), s(org.as_str()));
    item.insert("name".into(), s(&role.name));
    item.insert("description".into(), s(&role.description));
    item.insert("permissions".into(), AttributeValue::L(role.permissions.iter().map(|p| s(p.as_str())).collect()));
    item.insert("principalTypes".into(), AttributeValue::L(role.principal_types.iter().map(|t| s(principal_type_name(*t))).collect()));
    if let Some(t) = role.created_at {
        item.insert("createdAt".into(), time(t));
    }
    if let Some(a) = &role.created_by {
        item.insert("createdBy".into(), s(&a.0));
    }
    item
}

pub(super) fn role_from_item(item: &Item) -> Result<Role, StoreError> {
    let r = Reader::new("role", item);
    let permissions = r
        .strings("permissions")?
        .into_iter()
        .map(|p| Permission::parse(p).map_err(|_| corrupt("role", "permissions")))
        .collect::<Result<Vec<_>, _>>()?;
    let principal_types = r
        .strings("principalTypes")?
        .into_iter()
        .map(|t| principal_type(t).ok_or_else(|| corrupt("role", "principalTypes")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Role {
        id: r.parse("id")?,
        name: r.str("name")?.to_owned(),
        description: r.str("description")?.to_owned(),
        permissions,
        principal_types,
        org_id: Some(r.parse("orgId")?),
        built_in: false,
        created_at: r.opt_time("createdAt")?,
        created_by: r.opt_str("createdBy")?.map(|a| Actor(a.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::now;

    fn principal() -> Principal {
        Principal::new(OrgId::parse("acme").unwrap(), "svc", None, Some(now() + chrono::Duration::days(1)), Actor::system("t"), now())
            .unwrap()
    }

    #[test]
    fn principal_items_round_trip() {
        let p = principal();
        let roles = [RoleId::parse("iam-viewer").unwrap(), RoleId::parse("iam-admin").unwrap()];
        let item = principal_to_item(&p, 3, &roles);
        assert_eq!(principal_from_item(&item).unwrap(), p);
        assert_eq!(carried_role_ids(&item).unwrap(), Some(vec![roles[1].clone(), roles[0].clone()]));
        assert_eq!(carried_role_ids(&principal_to_item(&p, 0, &[])).unwrap(), Some(vec![]));
        let mut legacy = principal_to_item(&p, 0, &[]);
        legacy.remove(ROLES_CARRIED);
        assert_eq!(carried_role_ids(&legacy).unwrap(), None, "an item from before carrying roles is not trusted for them");
        assert_eq!(item["pk"], s("acme"));
        assert_eq!(item["sk"], s(format!("P#{}", p.id)));
    }

    #[test]
    fn credential_items_round_trip_and_keep_only_the_hash() {
        let p = principal();
        let mut c = Credential::new(
            &p,
            KeyId::generate(),
            "ci",
            None,
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA".into(),
            Actor::system("t"),
            now(),
        )
        .unwrap();
        c = c.revoked(Actor::system("r"), now());
        c.last_used_at = Some(now());
        let item = credential_to_item(&c);
        assert_eq!(credential_from_item(&item).unwrap(), c);
        assert_eq!(item.len(), 11);
        c.recent_uses = Some(UseWindow { second: 1_800_000_000, count: 7 });
        assert_eq!(credential_from_item(&credential_to_item(&c)).unwrap(), c);
        c.daily_uses = Some(DailyUses { day: 20_000, counts: vec![4] });
        c.last_used_from = Some("2001:db8::1".into());
        assert_eq!(credential_from_item(&credential_to_item(&c)).unwrap(), c);
        c.daily_uses = Some(DailyUses { day: 20_000, counts: vec![4, 0, 12, 1] });
        assert_eq!(credential_to_item(&c)[USE_PAST], s("0,12,1"));
        assert_eq!(credential_from_item(&credential_to_item(&c)).unwrap(), c);
        c.rotated_from = Some(KeyId::generate());
        c.rotated_to = Some(KeyId::generate());
        assert_eq!(credential_from_item(&credential_to_item(&c)).unwrap(), c);
        c.restrictions = Restrictions {
            permissions: Some([Permission::parse("ci:deploy").unwrap()].into()),
            source_cidrs: Some(["203.0.113.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()].into()),
            audiences: Some(["billing-api".to_owned()].into()),
        };
        c.self_rotation = true;
        assert_eq!(credential_from_item(&credential_to_item(&c)).unwrap(), c);
    }

    #[test]
    fn role_and_assignment_items_round_trip() {
        let org = OrgId::parse("acme").unwrap();
        let role = Role::new_org_role(
            org.clone(),
            "ops",
            Some("d"),
            vec![Permission::parse("a:b").unwrap()],
            vec![PrincipalType::ApiKey],
            Actor::system("t"),
            now(),
        )
        .unwrap();
        assert_eq!(role_from_item(&role_to_item(&role, &org)).unwrap(), role);
        let a = RoleAssignment {
            org_id: org,
            principal_id: PrincipalId::generate(),
            role_id: RoleId::parse("iam-viewer").unwrap(),
            assigned_at: now(),
            assigned_by: Actor::system("t"),
        };
        assert_eq!(assignment_from_item(&assignment_to_item(&a)).unwrap(), a);
    }

    #[test]
    fn corrupt_items_are_errors() {
        let p = principal();
        let mut item = principal_to_item(&p, 0, &[]);
        item.insert("status".into(), s("Deleted"));
        assert!(matches!(principal_from_item(&item), Err(StoreError::Corrupt(_))));
        item.insert("status".into(), n(1));
        assert!(matches!(principal_from_item(&item), Err(StoreError::Corrupt(_))));
        let mut item = principal_to_item(&p, 0, &[]);
        item.remove("version");
        assert!(matches!(principal_from_item(&item), Err(StoreError::Corrupt(_))));
        let mut item = principal_to_item(&p, 0, &[]);
        item.insert("kind".into(), s("role"));
        assert!(principal_from_item(&item).is_err());
        assert!(credential_from_item(&HashMap::new()).is_err());
        let mut c =
            credential_to_item(&Credential::new(&p, KeyId::generate(), "x", None, "SECRETHASH".into(), Actor::system("t"), now()).unwrap());
        c.insert("createdAt".into(), s("yesterday"));
        let err = credential_from_item(&c).unwrap_err().to_string();
        assert!(!err.contains("SECRETHASH") && !err.contains("yesterday"), "{err}");
    }
}
