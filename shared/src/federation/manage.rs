//! Managing federation: the organisation's trusted issuers (`iam:federation:write`), and a
//! service account's trust policies. A trust policy is what a service account has instead of
//! credentials, so adding or removing one needs what issuing or revoking a credential needs
//! (`iam:credentials:write`, and holding everything the account holds). Every change is
//! recorded in the audit trail with the write that makes it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::TrustPolicy;
use super::trust::{MAX_TRUST_POLICIES, SignInProvider, TrustPolicyEntry, TrustPolicyUse, TrustedIssuer, TrustedIssuers, client_id_of};
use crate::authority::Guard;
use crate::error::{DomainError, Limit};
use crate::ids::{PrincipalId, TrustPolicyId};
use crate::model::{self, Principal, PrincipalStatus, PrincipalType};
use crate::service::{Caller, Iam, PERM_API_KEYS_READ, PERM_CREDENTIALS_WRITE, PERM_FEDERATION_WRITE};

/// A trust policy as asked for.
#[derive(Debug, Clone)]
pub struct NewTrustPolicy {
    pub issuer: String,
    pub audience: String,
    pub subject: String,
    pub required_claims: BTreeMap<String, String>,
}

/// A service account's trust policies as answered: each with its use, and the `client_id` the
/// workload names at the token endpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustPolicies {
    pub principal_id: PrincipalId,
    pub client_id: String,
    pub items: Vec<TrustPolicyView>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustPolicyView {
    #[serde(flatten)]
    pub entry: TrustPolicyEntry,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<DateTime<Utc>>,
    pub uses: u64,
}

fn service_account(principal: &Principal) -> Result<(), DomainError> {
    if principal.principal_type != PrincipalType::ServiceAccount {
        return Err(DomainError::unprocessable("only a service account has trust policies; an API-key principal has credentials"));
    }
    if principal.status == PrincipalStatus::Revoked {
        return Err(DomainError::conflict("the principal is revoked and can no longer be changed"));
    }
    Ok(())
}

impl Iam {
    pub async fn trusted_issuers(&self, caller: &Caller) -> Result<TrustedIssuers, DomainError> {
        caller.require(PERM_API_KEYS_READ)?;
        Ok(self.store.get_trusted_issuers(&caller.org_id).await?.unwrap_or_default())
    }

    /// Replaces the organisation's trusted issuers, only over the list at `if_match` when
    /// given (412 otherwise), and only over the list read (409 if another change won). An
    /// issuer taken off stops every trust policy that names it at once (the exchange and
    /// introspection check the list each time).
    pub async fn set_trusted_issuers(
        &self,
        caller: &Caller,
        issuers: Vec<TrustedIssuer>,
        sign_in: Option<Option<SignInProvider>>,
        if_match: Option<u64>,
    ) -> Result<TrustedIssuers, DomainError> {
        let result = async {
            caller.require(PERM_FEDERATION_WRITE)?;
            let current = self.store.get_trusted_issuers(&caller.org_id).await?.unwrap_or_default();
            if if_match.is_some_and(|v| v != current.version) {
                return Err(DomainError::PreconditionFailed(
                    "the trusted issuers have changed since they were read (If-Match); read them again".into(),
                ));
            }
            let next = current.version + 1;
            // Left out, the provider stays as it is: a client that only manages the list never
            // takes it away by accident (null removes it).
            let sign_in = sign_in.unwrap_or_else(|| current.sign_in.clone());
            let issuers = TrustedIssuers::new(issuers, sign_in, next, self.webhooks.allow_loopback, caller.actor(), model::now())?
                .following(&current);
            // Any change of the provider (its issuer or the console's client there) may stop
            // people signing in: an administrator with a key must remain (checked again at the
            // write).
            let witness = match &current.sign_in {
                Some(before) if issuers.sign_in.as_ref() != Some(before) => Some(self.administrator_with_a_key(caller).await?),
                _ => None,
            };
            let detail = serde_json::json!({
                "issuers": issuers.issuers.iter().map(|i| i.issuer.as_str()).collect::<Vec<_>>(),
                "signIn": issuers.sign_in,
            });
            let guard = Guard::decided_on([caller.as_decided_on()])
                .with_witness(witness)
                .recording(caller.entry("trusted_issuers.update").detail(detail));
            self.store.put_trusted_issuers(&caller.org_id, &issuers, &guard).await?;
            Ok(issuers)
        }
        .await;
        self.audited("trusted_issuers.update", caller, caller.org_id.as_str(), result).await
    }

    /// A usable administrator who authenticates with a key: the caller when it is one, else
    /// any other in the organisation.
    async fn administrator_with_a_key(&self, caller: &Caller) -> Result<crate::authority::AdminWitness, DomainError> {
        let now = model::now();
        if let Some(witness) = self.standing_of(caller, &caller.principal_id).await?.usable_administrator_by_key_where(now, |_| true) {
            return Ok(witness);
        }
        let by_key = |standing: &crate::authority::Standing, now| standing.usable_administrator_by_key_where(now, |_| true);
        match self.other_administrator_where(&caller.org_id, &[&caller.principal_id], by_key).await? {
            Some(witness) => Ok(witness),
            None => Err(crate::authority::LastAdministrator.into()),
        }
    }

    pub async fn trust_policies(&self, caller: &Caller, id: &PrincipalId) -> Result<TrustPolicies, DomainError> {
        caller.require(PERM_API_KEYS_READ)?;
        let principal = self.store.get_principal(&caller.org_id, id).await?.ok_or(DomainError::NotFound("principal"))?;
        if principal.principal_type != PrincipalType::ServiceAccount {
            return Err(DomainError::unprocessable("only a service account has trust policies; an API-key principal has credentials"));
        }
        let uses = self.store.trust_policy_uses(&caller.org_id, id).await?;
        let items = principal
            .trust_policies
            .into_iter()
            .map(|entry| {
                let TrustPolicyUse { last_used_at, uses } = uses.get(&entry.id).copied().unwrap_or_default();
                TrustPolicyView { entry, last_used_at, uses }
            })
            .collect();
        Ok(TrustPolicies { client_id: client_id_of(id), principal_id: id.clone(), items })
    }

    /// The service account whose trust policies `caller` may change: what issuing a
    /// credential to it would need.
    async fn service_account_to_change(&self, caller: &Caller, id: &PrincipalId) -> Result<Principal, DomainError> {
        caller.require(PERM_CREDENTIALS_WRITE)?;
        let target = self.standing_of(caller, id).await?;
        caller.authority().may_act_on(&target.permissions())?;
        service_account(&target.principal)?;
        Ok(target.principal)
    }

    /// Adds a trust policy to a service account: handing the account's power to whoever the
    /// issuer vouches for, so it is decided as issuing a credential is.
    pub async fn add_trust_policy(
        &self,
        caller: &Caller,
        id: &PrincipalId,
        asked: NewTrustPolicy,
    ) -> Result<TrustPolicyEntry, DomainError> {
        let result = async {
            let principal = self.service_account_to_change(caller, id).await?;
            let policy =
                TrustPolicy::new(&asked.issuer, &asked.audience, &asked.subject, asked.required_claims).map_err(DomainError::invalid)?;
            let trusted = self.store.get_trusted_issuers(&caller.org_id).await?.unwrap_or_default();
            if !trusted.trusts(&policy.issuer) {
                return Err(DomainError::unprocessable(format!(
                    "'{}' is not one of the organisation's trusted issuers; an administrator adds it first",
                    crate::ids::truncate(&policy.issuer)
                )));
            }
            if principal.trust_policies.len() >= MAX_TRUST_POLICIES {
                return Err(Limit::TrustPolicies(MAX_TRUST_POLICIES).into());
            }
            let now = model::now();
            let entry = TrustPolicyEntry { id: TrustPolicyId::generate(), policy, created_at: now, created_by: caller.actor() };
            let mut next = principal.clone();
            next.trust_policies.push(entry.clone());
            next.version += 1;
            next.updated_at = now;
            let record = caller.entry("trust_policy.add").principal(id).detail(serde_json::to_value(&entry).unwrap_or_default());
            let guard = caller.guard_for_write_on(&principal).recording(record);
            self.store.update_principal(&next, principal.version, &guard).await?;
            Ok(entry)
        }
        .await;
        let target = match &result {
            Ok(entry) => format!("{id}/{}", entry.id),
            Err(_) => id.to_string(),
        };
        self.audited("trust_policy.add", caller, &target, result).await
    }

    pub async fn remove_trust_policy(&self, caller: &Caller, id: &PrincipalId, policy: &TrustPolicyId) -> Result<(), DomainError> {
        let result = async {
            let principal = self.service_account_to_change(caller, id).await?;
            let Some(removed) = principal.trust_policies.iter().find(|p| p.id == *policy).cloned() else {
                return Err(DomainError::NotFound("trust policy"));
            };
            let mut next = principal.clone();
            next.trust_policies.retain(|p| p.id != *policy);
            next.version += 1;
            next.updated_at = model::now();
            let record = caller.entry("trust_policy.remove").principal(id).detail(serde_json::to_value(&removed).unwrap_or_default());
            let guard = caller.guard_for_write_on(&principal).recording(record);
            self.store.update_principal(&next, principal.version, &guard).await?;
            Ok(())
        }
        .await;
        self.audited("trust_policy.remove", caller, &format!("{id}/{policy}"), result).await
    }
}
