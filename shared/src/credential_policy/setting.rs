//! Reading and setting an organisation's credential policy. Management routes read it fresh;
//! the exchange reads it through a short per-process cache, so that a warm exchange stays two
//! reads and one write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::CredentialPolicy;
use crate::authority::{Guard, LastAdministrator};
use crate::error::DomainError;
use crate::ids::OrgId;
use crate::model;
use crate::service::{Caller, Iam, PERM_API_KEYS_READ, PERM_POLICY_WRITE, WITNESS_ATTEMPTS};
use crate::store::StoreError;

/// How long an exchange may act on a policy it read: a change made through another process
/// (another Lambda function, another instance) reaches its exchanges within this time; the
/// process that made it applies it at once.
pub const POLICY_CACHE_TTL: Duration = Duration::from_secs(30);
const POLICY_CACHE_ENTRIES: usize = 4096;

/// Policies as recently read, per organisation (the default included, so an organisation with
/// no policy costs no read either). Bounded: when full it starts again empty.
#[derive(Default)]
pub struct PolicyCache(Mutex<HashMap<OrgId, (Instant, CredentialPolicy)>>);

impl PolicyCache {
    fn get(&self, org: &OrgId) -> Option<CredentialPolicy> {
        let cached = self.0.lock().unwrap_or_else(|p| p.into_inner());
        cached.get(org).filter(|(read, _)| read.elapsed() < POLICY_CACHE_TTL).map(|(_, p)| p.clone())
    }

    fn insert(&self, org: &OrgId, policy: &CredentialPolicy) {
        let mut cached = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cached.len() >= POLICY_CACHE_ENTRIES {
            cached.clear();
        }
        cached.insert(org.clone(), (Instant::now(), policy.clone()));
    }
}

/// What a `PUT /iam/policy` asks for; absent fields take the default's value.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PolicyRequest {
    pub max_lifetime_days: Option<u32>,
    pub expiry_required: Option<bool>,
    pub max_idle_days: Option<u32>,
    pub allow_credential_creation: Option<bool>,
}

impl Iam {
    /// The organisation's policy as stored now (the default if none was set).
    pub(crate) async fn current_policy(&self, org: &OrgId) -> Result<CredentialPolicy, StoreError> {
        let policy = self.store.get_credential_policy(org).await?.unwrap_or_default();
        self.policies.insert(org, &policy);
        Ok(policy)
    }

    /// The policy an exchange applies: as read within [`POLICY_CACHE_TTL`].
    pub(crate) async fn policy_for_exchange(&self, org: &OrgId) -> Result<CredentialPolicy, StoreError> {
        match self.policies.get(org) {
            Some(policy) => Ok(policy),
            None => self.current_policy(org).await,
        }
    }

    pub async fn credential_policy(&self, caller: &Caller) -> Result<CredentialPolicy, DomainError> {
        caller.require(PERM_API_KEYS_READ)?;
        Ok(self.current_policy(&caller.org_id).await?)
    }

    /// Replaces the organisation's credential policy. A policy under which no usable
    /// administrator could exchange its key (every administrator's key idle or older than the
    /// new limits) is refused, as any other change that would lose the last administrator: the
    /// write is conditioned on one administrator that the new policy still admits.
    pub async fn set_credential_policy(&self, caller: &Caller, request: PolicyRequest) -> Result<CredentialPolicy, DomainError> {
        let result = async {
            caller.require(PERM_POLICY_WRITE)?;
            let default = CredentialPolicy::default();
            let policy = CredentialPolicy::new(
                request.max_lifetime_days,
                request.expiry_required.unwrap_or(default.expiry_required),
                request.max_idle_days,
                request.allow_credential_creation.unwrap_or(default.allow_credential_creation),
            )?
            .set_by(caller.actor(), model::now());
            let takes_nobody_out = policy.max_idle_days.is_none() && policy.max_lifetime_days.is_none();
            for attempt in 1..=WITNESS_ATTEMPTS {
                let witness = match takes_nobody_out {
                    true => None,
                    false => Some(self.administrator_admitted_by(caller, &policy).await?),
                };
                let record = caller.entry("policy.update").detail(serde_json::to_value(&policy).unwrap_or_default());
                let guard = Guard::decided_on([caller.as_decided_on()]).with_witness(witness).recording(record);
                match self.store.put_credential_policy(&caller.org_id, &policy, &guard).await {
                    Ok(()) => {
                        self.policies.insert(&caller.org_id, &policy);
                        return Ok(policy);
                    }
                    Err(StoreError::WitnessGone) if attempt < WITNESS_ATTEMPTS => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(LastAdministrator.into())
        }
        .await;
        self.audited("policy.update", caller, caller.org_id.as_str(), result).await
    }

    /// A usable administrator whose key `policy` still lets exchange now: the caller's principal
    /// when it is one, else any other in the organisation.
    async fn administrator_admitted_by(
        &self,
        caller: &Caller,
        policy: &CredentialPolicy,
    ) -> Result<crate::authority::AdminWitness, DomainError> {
        let now = model::now();
        let admitted = |c: &model::Credential| policy.admits_use(c, now).is_ok();
        // The caller's own principal first (any of its keys may be the one the policy admits).
        if let Some(witness) = self.standing_of(caller, &caller.principal_id).await?.usable_administrator_where(now, admitted) {
            return Ok(witness);
        }
        match self.other_administrator(&caller.org_id, &[&caller.principal_id], admitted).await? {
            Some(witness) => Ok(witness),
            None => Err(LastAdministrator.into()),
        }
    }
}
