//! Managing an organisation's webhook endpoints (`iam:webhooks:manage`): create (its secret
//! shown once), change, rotate its secret (shown once), delete, and read its deliveries. Every
//! change is recorded in the audit trail with the write that makes it.

use std::sync::Arc;

use secrecy::SecretString;
use tokio::sync::OnceCell;

use super::delivery::Delivery;
use super::{MAX_WEBHOOKS_PER_ORG, Webhook, WebhookChange, WebhookKey};
use crate::authority::Guard;
use crate::error::{DomainError, Limit};
use crate::ids::WebhookId;
use crate::model;
use crate::service::{Caller, Iam, PERM_AUDIT_READ, PERM_WEBHOOKS_MANAGE};

/// Where the service's webhook key comes from: a Secrets Manager secret read on first use
/// (only the functions that sign or show secrets are granted it), or a key at hand.
pub enum WebhookKeySource {
    Static(Arc<WebhookKey>),
    SecretsManager { client: aws_sdk_secretsmanager::Client, secret_id: String, key: OnceCell<Arc<WebhookKey>> },
}

impl std::fmt::Debug for WebhookKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookKeySource")
    }
}

impl WebhookKeySource {
    pub fn secrets_manager(client: aws_sdk_secretsmanager::Client, secret_id: String) -> Self {
        Self::SecretsManager { client, secret_id, key: OnceCell::new() }
    }

    pub async fn key(&self) -> Result<Arc<WebhookKey>, DomainError> {
        match self {
            Self::Static(key) => Ok(key.clone()),
            Self::SecretsManager { client, secret_id, key } => key
                .get_or_try_init(|| async {
                    let out =
                        client.get_secret_value().secret_id(secret_id).send().await.map_err(|e| {
                            DomainError::Unavailable(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string().into())
                        })?;
                    let material = out.secret_string().ok_or_else(|| DomainError::Unavailable("the webhook key secret is empty".into()))?;
                    Ok(Arc::new(WebhookKey::from_material(material.as_bytes()).map_err(|e| DomainError::Unavailable(e.into()))?))
                })
                .await
                .cloned(),
        }
    }
}

/// The webhook key and the outbound rules endpoints are checked against.
#[derive(Debug, Default)]
pub struct WebhookSettings {
    pub key: Option<Arc<WebhookKeySource>>,
    /// The operator's switch for local testing (`IAM_OUTBOUND_ALLOW_LOOPBACK`).
    pub allow_loopback: bool,
}

/// An endpoint and its signing secret, shown this once.
#[derive(Debug)]
pub struct WebhookWithSecret {
    pub webhook: Webhook,
    pub secret: SecretString,
}

/// How many deliveries an endpoint's listing answers at most.
pub const MAX_DELIVERIES_LISTED: usize = 100;

impl Iam {
    pub fn with_webhooks(mut self, webhooks: WebhookSettings) -> Self {
        self.webhooks = webhooks;
        self
    }

    async fn webhook_key(&self) -> Result<Arc<WebhookKey>, DomainError> {
        match &self.webhooks.key {
            Some(source) => source.key().await,
            None => Err(DomainError::Unavailable("webhooks are not configured here (no webhook key)".into())),
        }
    }

    /// Pointing an endpoint somewhere (creating, changing, or re-keying it) sends it the
    /// organisation's events, which are its trail: so it takes the trail's permission too, and
    /// nobody hands a receiver more than they could read themselves.
    fn may_direct_events(caller: &Caller) -> Result<(), DomainError> {
        caller.require(PERM_WEBHOOKS_MANAGE)?;
        caller.require(PERM_AUDIT_READ)
    }

    async fn stored_webhook(&self, caller: &Caller, id: &WebhookId) -> Result<Webhook, DomainError> {
        self.store.get_webhook(&caller.org_id, id).await?.ok_or(DomainError::NotFound("webhook"))
    }

    fn webhook_guard(caller: &Caller, action: &str, webhook: &Webhook) -> Guard {
        let record = caller.entry(action).detail(serde_json::json!({"webhookId": webhook.id, "webhook": webhook.audit_detail()}));
        Guard::decided_on([caller.as_decided_on()]).recording(record)
    }

    pub async fn create_webhook(&self, caller: &Caller, change: WebhookChange) -> Result<WebhookWithSecret, DomainError> {
        let result = async {
            Self::may_direct_events(caller)?;
            let webhook = Webhook::new(&caller.org_id, &change, self.webhooks.allow_loopback, caller.actor(), model::now())?;
            let key = self.webhook_key().await?;
            if self.store.list_webhooks(&caller.org_id).await?.len() >= MAX_WEBHOOKS_PER_ORG {
                return Err(Limit::Webhooks(MAX_WEBHOOKS_PER_ORG).into());
            }
            self.store.put_webhook(&webhook, None, &Self::webhook_guard(caller, "webhook.create", &webhook)).await?;
            let secret = key.secret(&webhook, webhook.secret_generation).reveal();
            Ok(WebhookWithSecret { webhook, secret })
        }
        .await;
        self.audited("webhook.create", caller, caller.org_id.as_str(), result).await
    }

    pub async fn list_webhooks(&self, caller: &Caller) -> Result<Vec<Webhook>, DomainError> {
        caller.require(PERM_WEBHOOKS_MANAGE)?;
        let mut webhooks = self.store.list_webhooks(&caller.org_id).await?;
        webhooks.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(webhooks)
    }

    pub async fn update_webhook(&self, caller: &Caller, id: &WebhookId, change: WebhookChange) -> Result<Webhook, DomainError> {
        let result = async {
            Self::may_direct_events(caller)?;
            let stored = self.stored_webhook(caller, id).await?;
            let Some(next) = stored.apply(&change, self.webhooks.allow_loopback, model::now())? else { return Ok(stored) };
            self.store.put_webhook(&next, Some(stored.version), &Self::webhook_guard(caller, "webhook.update", &next)).await?;
            Ok(next)
        }
        .await;
        self.audited("webhook.update", caller, id.as_str(), result).await
    }

    pub async fn rotate_webhook_secret(&self, caller: &Caller, id: &WebhookId) -> Result<WebhookWithSecret, DomainError> {
        let result = async {
            Self::may_direct_events(caller)?;
            let key = self.webhook_key().await?;
            let stored = self.stored_webhook(caller, id).await?;
            let next = stored.rotated(model::now());
            self.store.put_webhook(&next, Some(stored.version), &Self::webhook_guard(caller, "webhook.rotate_secret", &next)).await?;
            let secret = key.secret(&next, next.secret_generation).reveal();
            Ok(WebhookWithSecret { webhook: next, secret })
        }
        .await;
        self.audited("webhook.rotate_secret", caller, id.as_str(), result).await
    }

    pub async fn delete_webhook(&self, caller: &Caller, id: &WebhookId) -> Result<(), DomainError> {
        let result = async {
            caller.require(PERM_WEBHOOKS_MANAGE)?;
            let stored = self.stored_webhook(caller, id).await?;
            match self.store.delete_webhook(&caller.org_id, id, &Self::webhook_guard(caller, "webhook.delete", &stored)).await? {
                true => Ok(()),
                false => Err(DomainError::NotFound("webhook")),
            }
        }
        .await;
        self.audited("webhook.delete", caller, id.as_str(), result).await
    }

    pub async fn list_deliveries(&self, caller: &Caller, id: &WebhookId, limit: usize) -> Result<Vec<Delivery>, DomainError> {
        caller.require(PERM_WEBHOOKS_MANAGE)?;
        self.stored_webhook(caller, id).await?;
        Ok(self.store.list_deliveries(&caller.org_id, id, limit.clamp(1, MAX_DELIVERIES_LISTED)).await?)
    }
}
