//! The DynamoDB store. Two tables:
//!
//! - **principals**, partition key `pk` = organisation id, sort key `sk`. Everything that
//!   belongs to an organisation lives in its partition, so tenancy is in the key and listing
//!   is a Query: principals `P#<principalId>`, role assignments `A#<principalId>#<roleId>`,
//!   credential references `C#<principalId>#<keyId>` (so a principal's credentials list with a
//!   consistent Query, never a GSI), organisation roles `R#<roleId>` with name markers
//!   `RN#<name>` and a `ROLECOUNT` counter, a `PRINCIPALCOUNT` counter (for the principal
//!   cap), and the `BOOTSTRAP` marker.
//! - **credentials**, partition key `keyId`, so an exchange is one strongly consistent read.
//!
//! Every read the contract calls consistent uses `ConsistentRead`; every write that can race
//! is a condition expression or a TransactWriteItems. Items are (de)serialised by hand, field
//! by field; an item that does not decode is a `Corrupt` error, never a panic.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, ConditionCheck, Delete, KeySchemaElement, KeyType, KeysAndAttributes, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

pub use aws_sdk_dynamodb::types::AttributeValue;

use super::{Page, Store, StoreError, principal_limit};
use crate::authority::{AdminWitness, Guard};
use crate::idempotency::IdempotencyRecord;
use crate::ids::{KeyId, OrgId, Permission, PrincipalId, RoleId};
use crate::model::{
    Actor, Credential, CredentialStatus, MAX_ACTIVE_CREDENTIALS, MAX_ORG_ROLES, MAX_ROLES_PER_PRINCIPAL, Principal, PrincipalStatus,
    PrincipalType, Role, RoleAssignment,
};

type Item = HashMap<String, AttributeValue>;

/// Optimistic retries of a transaction that lost a race, before answering Conflict.
const MAX_TRANSACTION_ATTEMPTS: usize = 25;

#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    principals: String,
    credentials: String,
}

// ---------------------------------------------------------------- attribute helpers

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn time(t: DateTime<Utc>) -> AttributeValue {
    s(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn corrupt(what: &str, field: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: field '{field}' is missing or malformed"))
}

struct Reader<'a> {
    what: &'static str,
    item: &'a Item,
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, item: &'a Item) -> Self {
        Self { what, item }
    }

    fn str(&self, field: &str) -> Result<&'a str, StoreError> {
        self.item.get(field).and_then(|v| v.as_s().ok()).map(String::as_str).ok_or_else(|| corrupt(self.what, field))
    }

    fn opt_str(&self, field: &str) -> Result<Option<&'a str>, StoreError> {
        match self.item.get(field) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.as_str())),
            Some(_) => Err(corrupt(self.what, field)),
        }
    }

    fn num(&self, field: &str) -> Result<u64, StoreError> {
        self.item.get(field).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).ok_or_else(|| corrupt(self.what, field))
    }

    fn parse<T: std::str::FromStr>(&self, field: &str) -> Result<T, StoreError> {
        self.str(field)?.parse().map_err(|_| corrupt(self.what, field))
    }

    fn time(&self, field: &str) -> Result<DateTime<Utc>, StoreError> {
        let raw = self.str(field)?;
        DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc)).map_err(|_| corrupt(self.what, field))
    }

    fn opt_time(&self, field: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self.opt_str(field)? {
            None => Ok(None),
            Some(raw) => DateTime::parse_from_rfc3339(raw).map(|t| Some(t.with_timezone(&Utc))).map_err(|_| corrupt(self.what, field)),
        }
    }

    fn strings(&self, field: &str) -> Result<Vec<&'a str>, StoreError> {
        let list = self.item.get(field).and_then(|v| v.as_l().ok()).ok_or_else(|| corrupt(self.what, field))?;
        list.iter().map(|v| v.as_s().map(String::as_str).map_err(|_| corrupt(self.what, field))).collect()
    }
}

fn principal_status(raw: &str) -> Option<PrincipalStatus> {
    match raw {
        "Active" => Some(PrincipalStatus::Active),
        "Suspended" => Some(PrincipalStatus::Suspended),
        "Revoked" => Some(PrincipalStatus::Revoked),
        _ => None,
    }
}

fn status_name(status: PrincipalStatus) -> &'static str {
    match status {
        PrincipalStatus::Active => "Active",
        PrincipalStatus::Suspended => "Suspended",
        PrincipalStatus::Revoked => "Revoked",
    }
}

fn credential_status_name(status: CredentialStatus) -> &'static str {
    match status {
        CredentialStatus::Active => "Active",
        CredentialStatus::Revoked => "Revoked",
        // Never stored: expiry is computed on read.
        CredentialStatus::Expired => "Active",
    }
}

fn principal_type(raw: &str) -> Option<PrincipalType> {
    match raw {
        "User" => Some(PrincipalType::User),
        "ApiKey" => Some(PrincipalType::ApiKey),
        "ServiceAccount" => Some(PrincipalType::ServiceAccount),
        _ => None,
    }
}

fn principal_type_name(t: PrincipalType) -> &'static str {
    match t {
        PrincipalType::User => "User",
        PrincipalType::ApiKey => "ApiKey",
        PrincipalType::ServiceAccount => "ServiceAccount",
    }
}

// ---------------------------------------------------------------- keys

fn principal_sk(id: &PrincipalId) -> String {
    format!("P#{id}")
}

fn credential_ref_sk(principal: &PrincipalId, key_id: &KeyId) -> String {
    format!("C#{principal}#{key_id}")
}

fn assignment_sk(principal: &PrincipalId, role: &RoleId) -> String {
    format!("A#{principal}#{role}")
}

fn role_sk(role: &RoleId) -> String {
    format!("R#{role}")
}

fn role_name_sk(name: &str) -> String {
    format!("RN#{name}")
}

/// Counter items: sort key and `kind`.
const ROLE_COUNT: (&str, &str) = ("ROLECOUNT", "roleCount");
/// Counts the principals created since the cap existed: organisations older than it start
/// from zero, and the cap bounds their growth from then on.
const PRINCIPAL_COUNT: (&str, &str) = ("PRINCIPALCOUNT", "principalCount");
const BOOTSTRAP_SK: &str = "BOOTSTRAP";

fn org_key(org: &OrgId, sk: String) -> Item {
    HashMap::from([("pk".to_owned(), s(org.as_str())), ("sk".to_owned(), s(sk))])
}

/// Idempotency records sit beside the organisation's principals (a create's transaction writes
/// both, and every creating function may already write this table) and expire through `ttl`.
fn idempotency_sk(slot: &str) -> String {
    format!("IDEM#{slot}")
}

fn idempotency_put(table: &str, r: &IdempotencyRecord) -> Result<TransactWriteItem, StoreError> {
    let outcome = serde_json::to_string(&r.outcome).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut item = org_key(&r.org_id, idempotency_sk(&r.slot));
    item.insert("kind".into(), s("idempotency"));
    item.insert("fingerprint".into(), s(r.fingerprint.clone()));
    item.insert("outcome".into(), s(outcome));
    item.insert("createdAt".into(), time(r.created_at));
    item.insert("expiresAt".into(), time(r.expires_at));
    item.insert("ttl".into(), AttributeValue::N(r.expires_at.timestamp().to_string()));
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        // A record past its expiry may linger until TTL sweeps it (up to days): it frees the slot.
        .condition_expression("attribute_not_exists(sk) OR #ttl <= :now")
        .expression_attribute_names("#ttl", "ttl")
        .expression_attribute_values(":now", AttributeValue::N(r.created_at.timestamp().to_string()))
        .build()
        .map_err(build_error)?;
    Ok(TransactWriteItem::builder().put(put).build())
}

fn idempotency_from_item(org: &OrgId, slot: &str, item: &Item) -> Result<IdempotencyRecord, StoreError> {
    let r = Reader::new("idempotency record", item);
    let outcome = serde_json::from_str(r.str("outcome")?).map_err(|e| {
        let _ = e;
        corrupt("idempotency record", "outcome")
    })?;
    Ok(IdempotencyRecord {
        org_id: org.clone(),
        slot: slot.to_owned(),
        fingerprint: r.str("fingerprint")?.to_owned(),
        outcome,
        created_at: r.time("createdAt")?,
        expires_at: r.time("expiresAt")?,
    })
}

fn credential_key(key_id: &KeyId) -> Item {
    HashMap::from([("keyId".to_owned(), s(key_id.as_str()))])
}

// ---------------------------------------------------------------- items

/// A principal item. `credSeq` and `roleCount` are the store's own bookkeeping: `credSeq`
/// changes with every credential issued (an optimistic lock for the active-credential limit),
/// `roleCount` counts role assignments (for their limit).
pub fn principal_to_item(p: &Principal, cred_seq: u64, role_count: u64) -> Item {
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
    item.insert("roleCount".into(), n(role_count));
    item
}

pub fn principal_from_item(item: &Item) -> Result<Principal, StoreError> {
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
    })
}

pub fn credential_to_item(c: &Credential) -> Item {
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
    item
}

pub fn credential_from_item(item: &Item) -> Result<Credential, StoreError> {
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
    })
}

fn credential_ref_item(c: &Credential) -> Item {
    let mut item = org_key(&c.org_id, credential_ref_sk(&c.principal_id, &c.key_id));
    item.insert("kind".into(), s("credentialRef"));
    item.insert("keyId".into(), s(c.key_id.as_str()));
    item
}

pub fn assignment_to_item(a: &RoleAssignment) -> Item {
    let mut item = org_key(&a.org_id, assignment_sk(&a.principal_id, &a.role_id));
    item.insert("kind".into(), s("roleAssignment"));
    item.insert("orgId".into(), s(a.org_id.as_str()));
    item.insert("principalId".into(), s(a.principal_id.as_str()));
    item.insert("roleId".into(), s(a.role_id.as_str()));
    item.insert("assignedAt".into(), time(a.assigned_at));
    item.insert("assignedBy".into(), s(&a.assigned_by.0));
    item
}

pub fn assignment_from_item(item: &Item) -> Result<RoleAssignment, StoreError> {
    let r = Reader::new("role assignment", item);
    Ok(RoleAssignment {
        org_id: r.parse("orgId")?,
        principal_id: r.parse("principalId")?,
        role_id: r.parse("roleId")?,
        assigned_at: r.time("assignedAt")?,
        assigned_by: Actor(r.str("assignedBy")?.to_owned()),
    })
}

pub fn role_to_item(role: &Role, org: &OrgId) -> Item {
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

pub fn role_from_item(item: &Item) -> Result<Role, StoreError> {
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

// ---------------------------------------------------------------- errors

fn unavailable<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(DisplayErrorContext(&e).to_string())
}

fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Unavailable(format!("request could not be built: {e}"))
}

/// Why a transaction was cancelled, per item: `Some(code)` for each item in order.
fn cancellation_codes<R>(e: &SdkError<TransactWriteItemsError, R>) -> Option<Vec<String>> {
    match e.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(c) => {
            Some(c.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_owned()).collect())
        }
        TransactWriteItemsError::TransactionInProgressException(_) => Some(vec!["TransactionConflict".into()]),
        _ => None,
    }
}

fn failed(codes: &[String], index: usize) -> bool {
    codes.get(index).is_some_and(|c| c == "ConditionalCheckFailed")
}

fn raced(codes: &[String]) -> bool {
    codes.iter().any(|c| c == "TransactionConflict")
}

fn put(table: &str, item: Item, condition: Option<&str>) -> Result<TransactWriteItem, StoreError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .set_condition_expression(condition.map(str::to_owned))
        .build()
        .map_err(build_error)?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// The condition checks that keep a guarded write's administrator witness usable until it
/// commits (see `AdminWitness`): its principal unchanged and Active, its credential Active,
/// each of its roles assigned. Appended after the write's own items.
/// Adds one to an organisation's counter item ([`ROLE_COUNT`], [`PRINCIPAL_COUNT`]), on
/// condition that it stays within `max` when one is given: a transaction item, so the count
/// moves with the object it counts.
fn count_one(table: &str, org: &OrgId, (sk, kind): (&str, &str), max: Option<usize>) -> Result<TransactWriteItem, StoreError> {
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(org_key(org, sk.to_owned())))
        .update_expression("SET #count = if_not_exists(#count, :zero) + :one, kind = :kind")
        .expression_attribute_names("#count", "count")
        .expression_attribute_values(":zero", n(0))
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":kind", s(kind));
    let update = match max {
        Some(max) => {
            update.condition_expression("attribute_not_exists(#count) OR #count < :max").expression_attribute_values(":max", n(max as u64))
        }
        None => update,
    };
    Ok(TransactWriteItem::builder().update(update.build().map_err(build_error)?).build())
}

const PRINCIPAL_UPDATE_CONDITION: &str = "attribute_exists(pk) AND #version = :expected";

/// The update expression, names and values that replace a principal's mutable fields, for a
/// plain UpdateItem and for the same update inside a transaction.
fn principal_update(p: &Principal, expected_version: u64) -> (String, HashMap<String, String>, Item) {
    let names = HashMap::from(
        [("#version", "version"), ("#status", "status"), ("#name", "displayName"), ("#updated", "updatedAt"), ("#expires", "expiresAt")]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut values = HashMap::from([
        (":expected".to_owned(), n(expected_version)),
        (":version".to_owned(), n(p.version)),
        (":status".to_owned(), s(status_name(p.status))),
        (":name".to_owned(), s(&p.display_name)),
        (":updated".to_owned(), time(p.updated_at)),
    ]);
    let set = "SET #version = :version, #status = :status, #name = :name, #updated = :updated";
    let update = match p.expires_at {
        Some(t) => {
            values.insert(":expires".to_owned(), time(t));
            format!("{set}, #expires = :expires")
        }
        None => format!("{set} REMOVE #expires"),
    };
    (update, names, values)
}

/// The witness's condition checks. Its principal item is left out when the write itself
/// updates that item: the write's own condition then carries the version (an item may appear
/// only once in a transaction), and an unchanged version means an unchanged, Active principal.
fn witness_checks(
    principals: &str,
    credentials: &str,
    w: &AdminWitness,
    principal_written: bool,
) -> Result<Vec<TransactWriteItem>, StoreError> {
    let mut checks = Vec::new();
    if !principal_written {
        checks.push(
            ConditionCheck::builder()
                .table_name(principals)
                .set_key(Some(org_key(&w.org_id, principal_sk(&w.principal_id))))
                .condition_expression("#version = :version AND #status = :active")
                .expression_attribute_names("#version", "version")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":version", n(w.principal_version))
                .expression_attribute_values(":active", s("Active"))
                .build()
                .map_err(build_error)?,
        );
    }
    checks.push(
        ConditionCheck::builder()
            .table_name(credentials)
            .set_key(Some(credential_key(&w.key_id)))
            .condition_expression("#status = :active AND principalId = :principal")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":active", s("Active"))
            .expression_attribute_values(":principal", s(w.principal_id.as_str()))
            .build()
            .map_err(build_error)?,
    );
    for role in &w.roles {
        checks.push(
            ConditionCheck::builder()
                .table_name(principals)
                .set_key(Some(org_key(&w.org_id, assignment_sk(&w.principal_id, role))))
                .condition_expression("attribute_exists(sk)")
                .build()
                .map_err(build_error)?,
        );
    }
    Ok(checks.into_iter().map(|c| TransactWriteItem::builder().condition_check(c).build()).collect())
}

/// A guard's condition checks, to append to a transaction after the write's own `from` items.
struct GuardChecks {
    items: Vec<TransactWriteItem>,
    witness: std::ops::Range<usize>,
    decided_on: std::ops::Range<usize>,
}

impl GuardChecks {
    /// `written`: the principal whose item the write itself updates, conditioned on
    /// `guard.version_of(written)` by the caller.
    fn new(store: &DynamoStore, guard: &Guard, from: usize, written: Option<&PrincipalId>) -> Result<Self, StoreError> {
        let mut items = match &guard.witness {
            Some(w) => witness_checks(&store.principals, &store.credentials, w, written == Some(&w.principal_id))?,
            None => Vec::new(),
        };
        let witness = from..from + items.len();
        let mut skip: Vec<&PrincipalId> = written.into_iter().collect();
        skip.extend(guard.witness.iter().map(|w| &w.principal_id));
        for d in guard.principals_to_check(&skip)? {
            let check = ConditionCheck::builder()
                .table_name(&store.principals)
                .set_key(Some(org_key(&d.org_id, principal_sk(&d.principal_id))))
                .condition_expression("#version = :version")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":version", n(d.version))
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().condition_check(check).build());
        }
        let decided_on = witness.end..from + items.len();
        Ok(Self { items, witness, decided_on })
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn append(
        &self,
        mut request: aws_sdk_dynamodb::operation::transact_write_items::builders::TransactWriteItemsFluentBuilder,
    ) -> aws_sdk_dynamodb::operation::transact_write_items::builders::TransactWriteItemsFluentBuilder {
        for item in &self.items {
            request = request.transact_items(item.clone());
        }
        request
    }

    /// The guard's failure, if one of its checks is what cancelled the transaction.
    fn failure(&self, codes: &[String]) -> Option<StoreError> {
        if self.witness.clone().any(|i| failed(codes, i)) {
            Some(StoreError::WitnessGone)
        } else if self.decided_on.clone().any(|i| failed(codes, i)) {
            Some(StoreError::AuthorityChanged)
        } else {
            None
        }
    }
}

impl DynamoStore {
    pub fn new(client: Client, principals_table: impl Into<String>, credentials_table: impl Into<String>) -> Self {
        Self { client, principals: principals_table.into(), credentials: credentials_table.into() }
    }

    /// Creates both tables (on-demand). For local DynamoDB-compatible servers and tests; in AWS
    /// the template creates them, with point-in-time recovery and deletion protection.
    pub async fn create_tables(&self) -> Result<(), StoreError> {
        let attr = |name: &str| {
            AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().map_err(build_error)
        };
        let key = |name: &str, kind: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(build_error);
        self.client
            .create_table()
            .table_name(&self.principals)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .send()
            .await
            .map_err(unavailable)?;
        self.client
            .create_table()
            .table_name(&self.credentials)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("keyId")?)
            .key_schema(key("keyId", KeyType::Hash)?)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get_principal_item(&self, org: &OrgId, id: &PrincipalId) -> Result<Option<(Principal, u64, u64)>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.principals)
            .set_key(Some(org_key(org, principal_sk(id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        match out.item() {
            None => Ok(None),
            Some(item) => {
                let p = principal_from_item(item)?;
                let r = Reader::new("principal", item);
                Ok(Some((p, r.num("credSeq").unwrap_or(0), r.num("roleCount").unwrap_or(0))))
            }
        }
    }

    /// Every item of `org` whose sort key starts with `prefix`, read consistently.
    async fn query_prefix(&self, org: &OrgId, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.principals)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(org.as_str()))
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(items),
            }
        }
    }

    /// Credentials by key id, read consistently, in batches of 100.
    async fn batch_get_credentials(&self, key_ids: Vec<String>) -> Result<Vec<Credential>, StoreError> {
        let mut out = Vec::new();
        for chunk in key_ids.chunks(100) {
            let mut pending: Vec<Item> = chunk.iter().map(|k| HashMap::from([("keyId".to_owned(), s(k.as_str()))])).collect();
            for _ in 0..5 {
                if pending.is_empty() {
                    break;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .map_err(build_error)?;
                let result = self.client.batch_get_item().request_items(&self.credentials, request).send().await.map_err(unavailable)?;
                if let Some(items) = result.responses().and_then(|r| r.get(&self.credentials)) {
                    for item in items {
                        out.push(credential_from_item(item)?);
                    }
                }
                if let Some(rest) = result.unprocessed_keys().and_then(|u| u.get(&self.credentials)) {
                    pending = rest.keys().to_vec();
                }
            }
            if !pending.is_empty() {
                return Err(StoreError::Unavailable("credentials could not all be read".into()));
            }
        }
        Ok(out)
    }

    async fn principal_credentials(&self, org: &OrgId, principal: &PrincipalId) -> Result<Vec<Credential>, StoreError> {
        let refs = self.query_prefix(org, &format!("C#{principal}#")).await?;
        let key_ids = refs
            .iter()
            .map(|item| Reader::new("credential reference", item).str("keyId").map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        let mut creds = self.batch_get_credentials(key_ids).await?;
        creds.retain(|c| c.org_id == *org && c.principal_id == *principal);
        creds.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.key_id.cmp(&b.key_id)));
        Ok(creds)
    }

    async fn get_assignment(&self, org: &OrgId, principal: &PrincipalId, role: &RoleId) -> Result<Option<RoleAssignment>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.principals)
            .set_key(Some(org_key(org, assignment_sk(principal, role))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item().map(assignment_from_item).transpose()
    }

    /// The principal for a write that needs it alive, with its bookkeeping counters.
    async fn live_principal(&self, org: &OrgId, id: &PrincipalId) -> Result<(Principal, u64, u64), StoreError> {
        let found = self.get_principal_item(org, id).await?.ok_or(StoreError::NotFound("principal"))?;
        if found.0.status == PrincipalStatus::Revoked {
            return Err(StoreError::Conflict("the principal is revoked".into()));
        }
        Ok(found)
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn create_principal(
        &self,
        principal: &Principal,
        max_principals: usize,
        idempotency: Option<&IdempotencyRecord>,
    ) -> Result<(), StoreError> {
        let count = count_one(&self.principals, &principal.org_id, PRINCIPAL_COUNT, Some(max_principals))?;
        let mut request = self
            .client
            .transact_write_items()
            .transact_items(put(&self.principals, principal_to_item(principal, 0, 0), Some("attribute_not_exists(pk)"))?)
            .transact_items(count);
        if let Some(record) = idempotency {
            request = request.transact_items(idempotency_put(&self.principals, record)?);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => match cancellation_codes(&e) {
                Some(codes) if failed(&codes, 0) => {
                    // An SDK retry after an attempt timeout finds the item its first attempt
                    // wrote (ids are 128 random bits, so an equal item is ours): that is success,
                    // unless the create carried an idempotency record (never retried that way).
                    match self.get_principal(&principal.org_id, &principal.id).await? {
                        Some(stored) if stored == *principal && idempotency.is_none() => Ok(()),
                        _ => Err(StoreError::Conflict("a principal with this id exists".into())),
                    }
                }
                Some(codes) if failed(&codes, 1) => Err(StoreError::Limit(principal_limit(max_principals))),
                Some(codes) if failed(&codes, 2) => Err(StoreError::IdempotencyKeyTaken),
                Some(codes) if raced(&codes) => Err(StoreError::Conflict("a concurrent change interfered; retry".into())),
                _ => Err(unavailable(e)),
            },
        }
    }

    async fn get_principal(&self, org: &OrgId, id: &PrincipalId) -> Result<Option<Principal>, StoreError> {
        Ok(self.get_principal_item(org, id).await?.map(|(p, _, _)| p))
    }

    async fn list_principals(&self, org: &OrgId, limit: usize, after: Option<&PrincipalId>) -> Result<Page<Principal>, StoreError> {
        // One more than asked, so a full last page is known to be the last.
        let want = limit + 1;
        let mut items = Vec::new();
        let mut start = after.map(|id| org_key(org, principal_sk(id)));
        while items.len() < want {
            let out = self
                .client
                .query()
                .table_name(&self.principals)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(org.as_str()))
                .expression_attribute_values(":prefix", s("P#"))
                .consistent_read(true)
                .limit(i32::try_from(want - items.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in out.items() {
                items.push(principal_from_item(item)?);
            }
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        let more = items.len() > limit;
        items.truncate(limit);
        let next = if more { items.last().map(|p| p.id.clone()) } else { None };
        Ok(Page { items, next })
    }

    async fn update_principal(&self, principal: &Principal, expected_version: u64, guard: &Guard) -> Result<(), StoreError> {
        // The update's own condition is the target's version: the guard's must be the same.
        if guard.version_of(&principal.id)?.is_some_and(|v| v != expected_version) {
            return Err(StoreError::AuthorityChanged);
        }
        let checks = GuardChecks::new(self, guard, 1, Some(&principal.id))?;
        if !checks.is_empty() {
            return self.update_principal_guarded(principal, expected_version, &checks).await;
        }
        let (update, names, values) = principal_update(principal, expected_version);
        let request = self
            .client
            .update_item()
            .table_name(&self.principals)
            .set_key(Some(org_key(&principal.org_id, principal_sk(&principal.id))))
            .condition_expression(PRINCIPAL_UPDATE_CONDITION)
            .update_expression(update)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c)) => {
                    if c.item().is_none_or(|i| i.is_empty()) {
                        Err(StoreError::NotFound("principal"))
                    } else {
                        Err(StoreError::Conflict("the principal was changed concurrently; read it again and retry".into()))
                    }
                }
                _ => Err(unavailable(e)),
            },
        }
    }

    async fn insert_credential(
        &self,
        credential: &Credential,
        now: DateTime<Utc>,
        idempotency: Option<&IdempotencyRecord>,
        guard: &Guard,
    ) -> Result<(), StoreError> {
        let decided = guard.version_of(&credential.principal_id)?;
        let own_items = 3 + usize::from(idempotency.is_some());
        let checks = GuardChecks::new(self, guard, own_items, Some(&credential.principal_id))?;
        for _ in 0..MAX_TRANSACTION_ATTEMPTS {
            let (current, cred_seq, _) = self.live_principal(&credential.org_id, &credential.principal_id).await?;
            if decided.is_some_and(|v| v != current.version) {
                return Err(StoreError::AuthorityChanged);
            }
            let live =
                self.principal_credentials(&credential.org_id, &credential.principal_id).await?.iter().filter(|c| c.is_live(now)).count();
            if live >= MAX_ACTIVE_CREDENTIALS {
                return Err(StoreError::Limit(format!(
                    "the principal already has {MAX_ACTIVE_CREDENTIALS} active credentials; revoke one first"
                )));
            }
            // The principal's credSeq moves with every issue: if another issue committed since we
            // counted, this transaction fails and we count again.
            const SEQ_CONDITION: &str =
                "attribute_exists(pk) AND #status <> :revoked AND (credSeq = :seen OR (attribute_not_exists(credSeq) AND :seen = :zero))";
            let bump = Update::builder()
                .table_name(&self.principals)
                .set_key(Some(org_key(&credential.org_id, principal_sk(&credential.principal_id))))
                .update_expression("SET credSeq = :next")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":revoked", s("Revoked"))
                .expression_attribute_values(":seen", n(cred_seq))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":next", n(cred_seq + 1));
            let bump = match decided {
                Some(v) => bump
                    .condition_expression(format!("{SEQ_CONDITION} AND #version = :decided"))
                    .expression_attribute_names("#version", "version")
                    .expression_attribute_values(":decided", n(v)),
                None => bump.condition_expression(SEQ_CONDITION),
            }
            .build()
            .map_err(build_error)?;
            let mut request = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().update(bump).build())
                .transact_items(put(&self.credentials, credential_to_item(credential), Some("attribute_not_exists(keyId)"))?)
                .transact_items(put(&self.principals, credential_ref_item(credential), None)?);
            if let Some(record) = idempotency {
                request = request.transact_items(idempotency_put(&self.principals, record)?);
            }
            let result = checks.append(request).send().await;
            match result {
                Ok(_) => return Ok(()),
                Err(e) => match cancellation_codes(&e) {
                    Some(codes) if failed(&codes, 1) => return Err(StoreError::Conflict("a credential with this key id exists".into())),
                    Some(codes) if idempotency.is_some() && failed(&codes, 3) => return Err(StoreError::IdempotencyKeyTaken),
                    Some(codes) if checks.failure(&codes).is_some() => {
                        return Err(checks.failure(&codes).unwrap_or(StoreError::AuthorityChanged));
                    }
                    // The loop's read tells a concurrent issue from a change to the principal.
                    Some(codes) if failed(&codes, 0) || raced(&codes) => continue,
                    _ => return Err(unavailable(e)),
                },
            }
        }
        Err(StoreError::Conflict("too many concurrent changes to this principal; retry".into()))
    }

    async fn warm_up(&self) {
        // A read the policy of every function that uses the store allows (each authenticates a
        // credential), for a key that cannot exist: `keyId`s are base62, never containing '-'.
        let started = std::time::Instant::now();
        let outcome =
            self.client.get_item().table_name(&self.credentials).key("keyId", AttributeValue::S("warm-up".to_owned())).send().await;
        match outcome {
            Ok(_) => tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "dynamodb connection warmed"),
            Err(e) => tracing::warn!(error = %DisplayErrorContext(&e), "dynamodb warm-up failed; the first request will connect"),
        }
    }

    async fn get_credential(&self, key_id: &KeyId) -> Result<Option<Credential>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.credentials)
            .set_key(Some(credential_key(key_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item().map(credential_from_item).transpose()
    }

    async fn list_credentials(&self, org: &OrgId, principal: &PrincipalId) -> Result<Vec<Credential>, StoreError> {
        self.principal_credentials(org, principal).await
    }

    async fn revoke_credential(
        &self,
        org: &OrgId,
        principal: &PrincipalId,
        key_id: &KeyId,
        actor: &Actor,
        now: DateTime<Utc>,
        guard: &Guard,
    ) -> Result<Credential, StoreError> {
        let checks = GuardChecks::new(self, guard, 1, None)?;
        // A transaction answers no item, and a read after it commits could fail when the
        // revocation already stands: the answer is built from this read instead (the write's
        // conditions keep it true, `lastUsedAt` aside).
        let before = match checks.is_empty() {
            true => None,
            false => Some(self.get_credential(key_id).await?.ok_or(StoreError::NotFound("credential"))?),
        };
        // `revokedAt` is never earlier than a `lastUsedAt` committed before it (see
        // `Credential::revoked`): the write also requires that, and when an exchange recorded a
        // later use, it is retried at that time. Times are fixed-width RFC 3339 strings, so
        // they compare as strings.
        let mut at = now;
        for attempt in 0..4 {
            // A key in constant use could move `lastUsedAt` ahead of every retry: the last
            // attempt revokes regardless, as revocation must win.
            let condition = if attempt < 3 {
                "orgId = :org AND principalId = :principal AND #status = :active AND (attribute_not_exists(lastUsedAt) OR lastUsedAt <= :at)"
            } else {
                "orgId = :org AND principalId = :principal AND #status = :active"
            };
            let values = HashMap::from([
                (":revoked".to_owned(), s("Revoked")),
                (":active".to_owned(), s("Active")),
                (":at".to_owned(), time(at)),
                (":by".to_owned(), s(&actor.0)),
                (":org".to_owned(), s(org.as_str())),
                (":principal".to_owned(), s(principal.as_str())),
            ]);
            const UPDATE: &str = "SET #status = :revoked, revokedAt = :at, revokedBy = :by";
            // `None`: the condition failed, and this is the credential as it stands.
            let refused: Option<Item> = match checks.is_empty() {
                true => {
                    let result = self
                        .client
                        .update_item()
                        .table_name(&self.credentials)
                        .set_key(Some(credential_key(key_id)))
                        .update_expression(UPDATE)
                        .condition_expression(condition)
                        .expression_attribute_names("#status", "status")
                        .set_expression_attribute_values(Some(values))
                        .return_values(ReturnValue::AllNew)
                        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                        .send()
                        .await;
                    match result {
                        Ok(out) => return credential_from_item(out.attributes().ok_or_else(|| corrupt("credential", "attributes"))?),
                        Err(e) => match e.as_service_error() {
                            Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c)) => {
                                Some(c.item().cloned().unwrap_or_default())
                            }
                            _ => return Err(unavailable(e)),
                        },
                    }
                }
                false => {
                    let write = Update::builder()
                        .table_name(&self.credentials)
                        .set_key(Some(credential_key(key_id)))
                        .update_expression(UPDATE)
                        .condition_expression(condition)
                        .expression_attribute_names("#status", "status")
                        .set_expression_attribute_values(Some(values))
                        .build()
                        .map_err(build_error)?;
                    let request = self.client.transact_write_items().transact_items(TransactWriteItem::builder().update(write).build());
                    match checks.append(request).send().await {
                        Ok(_) => match &before {
                            Some(before) => {
                                let mut revoked = before.revoked(actor.clone(), at);
                                revoked.revoked_at = Some(at);
                                return Ok(revoked);
                            }
                            None => return Err(StoreError::NotFound("credential")),
                        },
                        Err(e) => match cancellation_codes(&e) {
                            Some(codes) if failed(&codes, 0) => {
                                Some(self.get_credential(key_id).await?.map(|c| credential_to_item(&c)).unwrap_or_default())
                            }
                            Some(codes) if checks.failure(&codes).is_some() => {
                                return Err(checks.failure(&codes).unwrap_or(StoreError::WitnessGone));
                            }
                            Some(codes) if raced(&codes) => continue,
                            _ => return Err(unavailable(e)),
                        },
                    }
                }
            };
            let Some(item) = refused.filter(|i| !i.is_empty()) else {
                return Err(StoreError::NotFound("credential"));
            };
            let current = credential_from_item(&item)?;
            if current.org_id != *org || current.principal_id != *principal {
                return Err(StoreError::NotFound("credential"));
            }
            match current.last_used_at {
                Some(used) if current.status == CredentialStatus::Active && used > at => at = used,
                // Already revoked: idempotent, the first revocation stands.
                _ => return Ok(current),
            }
        }
        // Not reached: the last attempt has no condition a use can fail.
        Err(StoreError::Conflict("the credential changed while it was being revoked; retry".into()))
    }

    async fn record_credential_use(
        &self,
        credential: &Credential,
        at: DateTime<Utc>,
        secret_check: Option<&str>,
    ) -> Result<bool, StoreError> {
        let touch = Update::builder()
            .table_name(&self.credentials)
            .set_key(Some(credential_key(&credential.key_id)))
            .condition_expression("#status = :active")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":at", time(at))
            .expression_attribute_values(":active", s("Active"));
        let touch = match secret_check {
            Some(check) => touch
                .update_expression("SET lastUsedAt = :at, secretCheck = if_not_exists(secretCheck, :check)")
                .expression_attribute_values(":check", s(check)),
            None => touch.update_expression("SET lastUsedAt = :at"),
        }
        .build()
        .map_err(build_error)?;
        let principal_active = ConditionCheck::builder()
            .table_name(&self.principals)
            .set_key(Some(org_key(&credential.org_id, principal_sk(&credential.principal_id))))
            .condition_expression("#status = :active")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":active", s("Active"))
            .build()
            .map_err(build_error)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(touch).build())
            .transact_items(TransactWriteItem::builder().condition_check(principal_active).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => match cancellation_codes(&e) {
                Some(codes) if failed(&codes, 0) || failed(&codes, 1) => Ok(false),
                _ => Err(unavailable(e)),
            },
        }
    }

    async fn create_role(&self, role: &Role, idempotency: Option<&IdempotencyRecord>, guard: &Guard) -> Result<(), StoreError> {
        let Some(org) = role.org_id.as_ref() else {
            return Err(StoreError::Conflict("built-in roles are not stored".into()));
        };
        let checks = GuardChecks::new(self, guard, 3 + usize::from(idempotency.is_some()), None)?;
        let mut name_marker = org_key(org, role_name_sk(&role.name));
        name_marker.insert("kind".into(), s("roleName"));
        name_marker.insert("roleId".into(), s(role.id.as_str()));
        let count = count_one(&self.principals, org, ROLE_COUNT, Some(MAX_ORG_ROLES))?;
        let mut request = self
            .client
            .transact_write_items()
            .transact_items(put(&self.principals, role_to_item(role, org), Some("attribute_not_exists(sk)"))?)
            .transact_items(put(&self.principals, name_marker, Some("attribute_not_exists(sk)"))?)
            .transact_items(count);
        if let Some(record) = idempotency {
            request = request.transact_items(idempotency_put(&self.principals, record)?);
        }
        let result = checks.append(request).send().await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match cancellation_codes(&e) {
                Some(codes) if checks.failure(&codes).is_some() => Err(checks.failure(&codes).unwrap_or(StoreError::AuthorityChanged)),
                Some(codes) if failed(&codes, 0) => Err(StoreError::Conflict("a role with this id exists".into())),
                Some(codes) if failed(&codes, 1) => Err(StoreError::Conflict(format!("a role named '{}' already exists", role.name))),
                Some(codes) if failed(&codes, 2) => {
                    Err(StoreError::Limit(format!("an organisation can define at most {MAX_ORG_ROLES} roles")))
                }
                Some(codes) if idempotency.is_some() && failed(&codes, 3) => Err(StoreError::IdempotencyKeyTaken),
                Some(codes) if raced(&codes) => Err(StoreError::Conflict("a concurrent change interfered; retry".into())),
                _ => Err(unavailable(e)),
            },
        }
    }

    async fn list_org_roles(&self, org: &OrgId) -> Result<Vec<Role>, StoreError> {
        self.query_prefix(org, "R#").await?.iter().map(role_from_item).collect()
    }

    async fn get_org_role(&self, org: &OrgId, id: &RoleId) -> Result<Option<Role>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.principals)
            .set_key(Some(org_key(org, role_sk(id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item().map(role_from_item).transpose()
    }

    async fn list_role_assignments(&self, org: &OrgId, principal: &PrincipalId) -> Result<Vec<RoleAssignment>, StoreError> {
        self.query_prefix(org, &format!("A#{principal}#")).await?.iter().map(assignment_from_item).collect()
    }

    async fn assign_role(&self, assignment: &RoleAssignment, guard: &Guard) -> Result<(RoleAssignment, bool), StoreError> {
        let (org, id) = (&assignment.org_id, &assignment.principal_id);
        let decided = guard.version_of(id)?;
        let checks = GuardChecks::new(self, guard, 2, Some(id))?;
        for _ in 0..MAX_TRANSACTION_ATTEMPTS {
            let (current, _, role_count) = self.live_principal(org, id).await?;
            if let Some(existing) = self.get_assignment(org, id, &assignment.role_id).await? {
                return Ok((existing, false));
            }
            if decided.is_some_and(|v| v != current.version) {
                return Err(StoreError::AuthorityChanged);
            }
            if role_count >= MAX_ROLES_PER_PRINCIPAL as u64 {
                return Err(StoreError::Limit(format!("a principal can hold at most {MAX_ROLES_PER_PRINCIPAL} roles")));
            }
            // Conditioned on the version just read, and advancing it: what the principal holds
            // changes, and every decision made on the old version must fail (see Guard).
            let count = Update::builder()
                .table_name(&self.principals)
                .set_key(Some(org_key(org, principal_sk(id))))
                .update_expression("SET roleCount = if_not_exists(roleCount, :zero) + :one, #version = #version + :one")
                .condition_expression(
                    "attribute_exists(pk) AND #status <> :revoked AND #version = :seen AND (attribute_not_exists(roleCount) OR roleCount < :max)",
                )
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":revoked", s("Revoked"))
                .expression_attribute_values(":seen", n(current.version))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":max", n(MAX_ROLES_PER_PRINCIPAL as u64))
                .build()
                .map_err(build_error)?;
            let request = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().update(count).build())
                .transact_items(put(&self.principals, assignment_to_item(assignment), Some("attribute_not_exists(sk)"))?);
            match checks.append(request).send().await {
                Ok(_) => return Ok((assignment.clone(), true)),
                Err(e) => match cancellation_codes(&e) {
                    Some(codes) if checks.failure(&codes).is_some() => {
                        return Err(checks.failure(&codes).unwrap_or(StoreError::AuthorityChanged));
                    }
                    // Assigned, or the principal changed, concurrently: the loop reads again.
                    Some(codes) if failed(&codes, 0) || failed(&codes, 1) || raced(&codes) => continue,
                    _ => return Err(unavailable(e)),
                },
            }
        }
        Err(StoreError::Conflict("too many concurrent changes to this principal; retry".into()))
    }

    async fn unassign_role(&self, org: &OrgId, principal: &PrincipalId, role: &RoleId, guard: &Guard) -> Result<bool, StoreError> {
        let decided = guard.version_of(principal)?;
        let checks = GuardChecks::new(self, guard, 2, Some(principal))?;
        for _ in 0..MAX_TRANSACTION_ATTEMPTS {
            let Some((current, _, _)) = self.get_principal_item(org, principal).await? else { return Ok(false) };
            if decided.is_some_and(|v| v != current.version) {
                return Err(StoreError::AuthorityChanged);
            }
            let delete = Delete::builder()
                .table_name(&self.principals)
                .set_key(Some(org_key(org, assignment_sk(principal, role))))
                .condition_expression("attribute_exists(sk)")
                .build()
                .map_err(build_error)?;
            let count = Update::builder()
                .table_name(&self.principals)
                .set_key(Some(org_key(org, principal_sk(principal))))
                .update_expression("SET roleCount = roleCount - :one, #version = #version + :one")
                .condition_expression("attribute_exists(pk) AND roleCount > :zero AND #version = :seen")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":seen", n(current.version))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .build()
                .map_err(build_error)?;
            let request = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().delete(delete).build())
                .transact_items(TransactWriteItem::builder().update(count).build());
            match checks.append(request).send().await {
                Ok(_) => return Ok(true),
                Err(e) => match cancellation_codes(&e) {
                    Some(codes) if failed(&codes, 0) => return Ok(false),
                    Some(codes) if checks.failure(&codes).is_some() => {
                        return Err(checks.failure(&codes).unwrap_or(StoreError::AuthorityChanged));
                    }
                    // The principal changed since the read (its version): the loop reads again.
                    Some(codes) if failed(&codes, 1) || raced(&codes) => continue,
                    _ => return Err(unavailable(e)),
                },
            }
        }
        Err(StoreError::Conflict("too many concurrent changes to this principal; retry".into()))
    }

    async fn bootstrap_org(
        &self,
        principal: &Principal,
        assignment: &RoleAssignment,
        credential: &Credential,
        force: bool,
    ) -> Result<(), StoreError> {
        self.bootstrap(principal, assignment, credential, force).await
    }

    async fn get_idempotency_record(&self, org: &OrgId, slot: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.principals)
            .set_key(Some(org_key(org, idempotency_sk(slot))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item().map(|item| idempotency_from_item(org, slot, item)).transpose()
    }

    async fn is_bootstrapped(&self, org: &OrgId) -> Result<bool, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.principals)
            .set_key(Some(org_key(org, BOOTSTRAP_SK.to_owned())))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item().is_some())
    }
}

impl DynamoStore {
    async fn update_principal_guarded(&self, principal: &Principal, expected_version: u64, checks: &GuardChecks) -> Result<(), StoreError> {
        let (update, names, values) = principal_update(principal, expected_version);
        let write = Update::builder()
            .table_name(&self.principals)
            .set_key(Some(org_key(&principal.org_id, principal_sk(&principal.id))))
            .condition_expression(PRINCIPAL_UPDATE_CONDITION)
            .update_expression(update)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(build_error)?;
        let request = self.client.transact_write_items().transact_items(TransactWriteItem::builder().update(write).build());
        let result = checks.append(request).send().await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match cancellation_codes(&e) {
                Some(codes) if failed(&codes, 0) => match self.get_principal(&principal.org_id, &principal.id).await? {
                    None => Err(StoreError::NotFound("principal")),
                    Some(_) => Err(StoreError::Conflict("the principal was changed concurrently; read it again and retry".into())),
                },
                Some(codes) if checks.failure(&codes).is_some() => Err(checks.failure(&codes).unwrap_or(StoreError::WitnessGone)),
                Some(codes) if raced(&codes) => Err(StoreError::Conflict("a concurrent change interfered; retry".into())),
                _ => Err(unavailable(e)),
            },
        }
    }

    /// Writes an organisation's first admin in one transaction. With `force`, writes another
    /// admin even if the organisation was bootstrapped before (the operator's escape hatch when
    /// every admin key is lost).
    async fn bootstrap(
        &self,
        principal: &Principal,
        assignment: &RoleAssignment,
        credential: &Credential,
        force: bool,
    ) -> Result<(), StoreError> {
        let mut marker = org_key(&principal.org_id, BOOTSTRAP_SK.to_owned());
        marker.insert("kind".into(), s("bootstrap"));
        marker.insert("principalId".into(), s(principal.id.as_str()));
        let marker_condition = (!force).then_some("attribute_not_exists(sk)");
        // The bootstrap admin counts toward the principal cap, but is never refused by it.
        let bootstrap_count = count_one(&self.principals, &principal.org_id, PRINCIPAL_COUNT, None)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(put(&self.principals, marker, marker_condition)?)
            .transact_items(put(&self.principals, principal_to_item(principal, 1, 1), Some("attribute_not_exists(sk)"))?)
            .transact_items(bootstrap_count)
            .transact_items(put(&self.principals, assignment_to_item(assignment), None)?)
            .transact_items(put(&self.credentials, credential_to_item(credential), Some("attribute_not_exists(keyId)"))?)
            .transact_items(put(&self.principals, credential_ref_item(credential), None)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match cancellation_codes(&e) {
                Some(codes) if failed(&codes, 0) => {
                    Err(StoreError::Conflict(format!("organisation '{}' is already bootstrapped", principal.org_id)))
                }
                Some(codes) if codes.iter().any(|c| c == "ConditionalCheckFailed") || raced(&codes) => {
                    Err(StoreError::Conflict("a concurrent bootstrap interfered; retry".into()))
                }
                _ => Err(unavailable(e)),
            },
        }
    }
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
        let item = principal_to_item(&p, 3, 2);
        assert_eq!(principal_from_item(&item).unwrap(), p);
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
        let mut item = principal_to_item(&p, 0, 0);
        item.insert("status".into(), s("Deleted"));
        assert!(matches!(principal_from_item(&item), Err(StoreError::Corrupt(_))));
        item.insert("status".into(), n(1));
        assert!(matches!(principal_from_item(&item), Err(StoreError::Corrupt(_))));
        let mut item = principal_to_item(&p, 0, 0);
        item.remove("version");
        assert!(matches!(principal_from_item(&item), Err(StoreError::Corrupt(_))));
        let mut item = principal_to_item(&p, 0, 0);
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
