//! The keyless exchange (RFC 8693): a workload's own OIDC token, presented for the service
//! account it names, buys an access token for that account. In order: the named account and
//! its organisation (never a search across organisations), the token's claimed issuer among
//! the account's trust policies and the organisation's trusted issuers, the token verified
//! with that issuer's keys for each such policy's audience until one admits it, the grant
//! decided from the account's roles, and the use counted against the policy while the account
//! is unchanged. Every refusal names its rule; none echoes the token.

use std::collections::BTreeSet;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::trust::{TrustPolicyEntry, service_account_of};
use super::{ExternalExpectations, FederationRefusal, IssuerKeys, claimed_issuer};
use crate::audit::AuditEntry;
use crate::ids::{OrgId, Permission, PrincipalId};
use crate::model::{self, Actor, Principal, PrincipalType};
use crate::outbound::Outbound;
use crate::service::{ExchangeError, Iam, IssuedToken, audit};
use crate::token::{Holder, ServiceAccountGrant, parse_scope};

/// The longest an external token may have lived when it is presented: GitHub's live minutes,
/// a Kubernetes projected token is refreshed well within its default hour.
pub const MAX_EXTERNAL_TOKEN_AGE_SECS: u64 = 60 * 60;
/// Exchanges that meet the account changed concurrently (a role assigned, a policy added) and
/// are decided again before they are refused.
const ATTEMPTS: u32 = 2;

pub struct FederatedRequest {
    /// The service account asked for: `sa_…` or its principal id.
    pub client_id: String,
    /// The workload's own token. Never logged, stored or echoed.
    pub subject_token: SecretString,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub source: Option<String>,
}

impl std::fmt::Debug for FederatedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederatedRequest").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

const UNKNOWN_ACCOUNT: ExchangeError = ExchangeError::InvalidClient("unknown service account");

impl Iam {
    /// Trusted issuers' keys found through `keys` (its own resolver, its own refetch interval)
    /// rather than the default; only before the first federated exchange. Whether it took.
    pub fn use_issuer_keys(&self, keys: Arc<IssuerKeys>) -> bool {
        self.issuer_keys.set(keys).is_ok()
    }

    pub(crate) fn issuer_keys(&self) -> Result<Arc<IssuerKeys>, FederationRefusal> {
        if let Some(keys) = self.issuer_keys.get() {
            return Ok(keys.clone());
        }
        let outbound = Outbound::new(super::issuer_keys::issuer_outbound_rules(self.webhooks.allow_loopback))
            .map_err(|e| FederationRefusal::IssuerUnreachable(e.to_string()))?;
        Ok(self.issuer_keys.get_or_init(|| Arc::new(IssuerKeys::new(outbound))).clone())
    }

    /// Exchanges a workload's token for a service account's access token, and audits the
    /// outcome: once a trusted issuer's signature is proved, a refusal is recorded in the
    /// account's organisation's trail; before that the caller is anonymous (anyone can name an
    /// account), and learns nothing about the account itself.
    pub async fn exchange_federated(&self, request: FederatedRequest) -> Result<IssuedToken, ExchangeError> {
        let client_id = request.client_id.chars().take(64).collect::<String>();
        let source = request.source.clone();
        let mut proved = None;
        let result = self.run_federated(request, &mut proved).await;
        match (&result, proved) {
            (Ok(t), _) => audit("token.exchange", &t.claims.sub, &t.claims.org_id, &client_id, Ok(())),
            (Err(e), Some((principal, org))) => {
                audit("token.exchange", principal.as_str(), org.as_str(), &client_id, Err(e));
                if let Some(reason) = crate::audit::refusals::exchange_reason(e) {
                    let entry = AuditEntry::new(&org, &Actor::principal(&principal), "token.exchange", model::now())
                        .principal(&principal)
                        .refused(&reason)
                        .detail(serde_json::json!({"message": e.to_string(), "grant": "federated"}));
                    self.record_refusal(entry).await;
                }
            }
            (Err(e), None) => {
                let source = source.as_deref().unwrap_or("unknown");
                tracing::info!(target: "audit", action = "token.exchange", actor = "anonymous", org = "", target_id = client_id, source, outcome = "failure", reason = %e, "audit")
            }
        }
        result
    }

    async fn run_federated(
        &self,
        request: FederatedRequest,
        proved: &mut Option<(PrincipalId, OrgId)>,
    ) -> Result<IssuedToken, ExchangeError> {
        let id = service_account_of(&request.client_id).ok_or(UNKNOWN_ACCOUNT)?;
        let token = request.subject_token.expose_secret();
        // What is not a JWT naming an issuer costs no read at all.
        let issuer = claimed_issuer(token).map_err(ExchangeError::Federation)?;
        let org = self.store.find_service_account(&id).await?.ok_or(UNKNOWN_ACCOUNT)?;
        // Only an issuer the organisation trusts is ever fetched from.
        if !self.store.get_trusted_issuers(&org).await?.unwrap_or_default().trusts(&issuer) {
            return Err(ExchangeError::Federation(FederationRefusal::NoPolicyForIssuer));
        }
        let now = u64::try_from(model::now().timestamp()).unwrap_or(0);
        let expect = ExternalExpectations { issuer: &issuer, audience: None, max_age_secs: MAX_EXTERNAL_TOKEN_AGE_SECS, now };
        let verified = match self.issuer_keys() {
            Ok(keys) => keys.verify(token, &expect).await,
            Err(refusal) => Err(refusal),
        };
        let claims = verified.map_err(|refusal| {
            if refusal.concerns_the_organisation() {
                *proved = Some((id.clone(), org.clone()));
            }
            ExchangeError::Federation(refusal)
        })?;
        // The issuer vouches for this token: who it was presented for is worth recording, and
        // the caller may now learn why the account refuses it.
        *proved = Some((id.clone(), org.clone()));
        for attempt in 1..=ATTEMPTS {
            let (principal, role_ids) = self.store.get_principal_with_roles(&org, &id).await?.ok_or(UNKNOWN_ACCOUNT)?;
            if principal.principal_type != PrincipalType::ServiceAccount {
                return Err(UNKNOWN_ACCOUNT);
            }
            let now = model::now();
            model::principal_may_authenticate(&principal, now).map_err(ExchangeError::Refused)?;
            let policy = admitting_policy(&principal, &issuer, &claims).map_err(ExchangeError::Federation)?;
            let roles = self.granting_roles(&principal, &role_ids).await?;
            let held: BTreeSet<Permission> = roles.iter().flat_map(|r| r.permissions.iter().cloned()).collect();
            let (audience, scope) = self.service_account_grant(held, request.audience.as_deref(), request.scope.as_deref())?;
            let role_ids: Vec<_> = roles.into_iter().map(|r| r.id).collect();
            let holder =
                Holder { principal_id: &principal.id, org_id: &principal.org_id, roles: &role_ids, scope: &scope, audience: &audience };
            let grant = ServiceAccountGrant { holder, trust_policy: &policy.id };
            let (signed, claims) =
                self.tokens.current().await.sign_for_service_account(&grant, now).map_err(|e| ExchangeError::Sign(e.to_string()))?;
            if self.store.record_trust_policy_use(&principal, &policy.id, now).await? {
                return Ok(IssuedToken {
                    access_token: SecretString::from(signed),
                    expires_in: self.tokens.settings().lifetime_secs,
                    scope: claims.scope.clone(),
                    claims,
                    verified_from_cache: false,
                });
            }
            // Suspended, revoked, a policy removed or a role changed since the read: decide
            // again on what is stored now.
            if attempt == ATTEMPTS {
                break;
            }
        }
        Err(ExchangeError::Federation(FederationRefusal::AccountChanged))
    }

    /// The audience asked for (or the first downstream one) and the scope asked for within
    /// what the roles hold. A service account's token is for downstream APIs only: `iam:`
    /// power is never granted to it.
    fn service_account_grant(
        &self,
        mut held: BTreeSet<Permission>,
        audience: Option<&str>,
        scope: Option<&str>,
    ) -> Result<(String, Vec<Permission>), ExchangeError> {
        let settings = self.tokens.settings();
        let audience = match audience {
            None => settings.audiences[0].clone(),
            Some(a) if settings.is_management(a) => {
                return Err(ExchangeError::InvalidTarget(
                    "a service account's token is for downstream APIs; the management API takes API keys".into(),
                ));
            }
            Some(a) => settings
                .audiences
                .iter()
                .find(|allowed| *allowed == a)
                .cloned()
                .ok_or_else(|| ExchangeError::InvalidTarget("the requested audience is not allowed".into()))?,
        };
        held.retain(|p| !p.as_str().starts_with("iam:"));
        let scope = match scope {
            None => held.into_iter().collect(),
            Some(raw) => {
                let wanted = parse_scope(raw).map_err(ExchangeError::InvalidScope)?;
                if let Some(missing) = wanted.iter().find(|p| !held.contains(*p)) {
                    return Err(ExchangeError::InvalidScope(format!("the service account does not hold '{missing}' for this audience")));
                }
                wanted
            }
        };
        Ok((audience, scope))
    }
}

/// The first of the account's policies for `issuer` whose audience, subject and claims admit
/// the verified `claims`; else why the one that came closest refused.
fn admitting_policy<'a>(
    principal: &'a Principal,
    issuer: &str,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<&'a TrustPolicyEntry, FederationRefusal> {
    let mut closest: Option<FederationRefusal> = None;
    for candidate in principal.trust_policies.iter().filter(|p| p.policy.issuer == issuer) {
        match candidate.policy.admits(claims) {
            Ok(()) => return Ok(candidate),
            Err(refusal) => {
                if closest.as_ref().is_none_or(|c| nearness(&refusal) > nearness(c)) {
                    closest = Some(refusal);
                }
            }
        }
    }
    Err(closest.unwrap_or(FederationRefusal::NoPolicyForIssuer))
}

/// How far a policy got before it refused: the audience is checked first, the claims last.
fn nearness(refusal: &FederationRefusal) -> u8 {
    match refusal {
        FederationRefusal::WrongAudience => 1,
        FederationRefusal::SubjectMismatch | FederationRefusal::MissingClaim(_) => 2,
        FederationRefusal::ClaimMismatch(_) => 3,
        _ => 0,
    }
}
