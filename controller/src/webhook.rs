//! Webhooks: Flagger's JSON payload and the boundary to the HTTP client that delivers it.
//!
//! A hook succeeds when its URL answers with a 2xx status within the timeout; anything else
//! (non-2xx, timeout, connection error) fails it, and the failure message is what the events
//! quote (`Halt podinfo.test advancement pre-rollout check acceptance-test failed ...`).
//! `rollback` hooks are the inverse: success asks for a rollback.

use std::{collections::BTreeMap, hash::Hasher};

use serde::{Deserialize, Serialize};

use crate::{
    analysis::BoxFuture,
    event::Event,
    stage::HookResult,
    status::{CanaryStatus, Phase},
    timestamp::Timestamp,
    validation::Webhook,
};

/// The JSON body POSTed to a webhook, field for field as Flagger's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookPayload {
    /// Canary name.
    pub name: String,
    /// Canary namespace.
    pub namespace: String,
    /// The phase the hook is called for (`Progressing` during the analysis).
    pub phase: Phase,
    /// Stable hash of the revision under release: the same for every call about it.
    pub checksum: String,
    /// The hook's metadata (for `event` hooks: `eventMessage`, `eventType`, `timestamp`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl WebhookPayload {
    /// The payload for `hook`, called for `phase` while the Canary has `status`.
    pub fn new(
        name: &str,
        namespace: &str,
        phase: Phase,
        status: &CanaryStatus,
        hook: &Webhook,
    ) -> WebhookPayload {
        WebhookPayload {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            phase,
            checksum: checksum(status),
            metadata: hook.metadata.clone(),
        }
    }

    /// The payload forwarding `event` to an `event` hook, as Flagger's: the hook's metadata
    /// plus `eventMessage`, `eventType` and `timestamp` (milliseconds since the epoch).
    pub fn for_event(
        name: &str,
        namespace: &str,
        status: &CanaryStatus,
        hook: &Webhook,
        event: &Event,
        now: Timestamp,
    ) -> WebhookPayload {
        let mut metadata = hook.metadata.clone();
        metadata.insert("eventMessage".to_owned(), event.message.clone());
        metadata.insert("eventType".to_owned(), event.event_type.to_string());
        metadata.insert(
            "timestamp".to_owned(),
            now.unix_seconds().saturating_mul(1000).to_string(),
        );
        WebhookPayload {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            phase: status.phase.unwrap_or(Phase::Initializing),
            checksum: checksum(status),
            metadata,
        }
    }
}

/// Hash of the revision under release (`lastAppliedSpec` and `trackedConfigs`): identifies a
/// release to webhooks (e.g. to approve a specific one).
pub fn checksum(status: &CanaryStatus) -> String {
    let mut hasher = Fnv1a::default();
    hasher.write(
        status
            .last_applied_spec
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
    );
    for (key, value) in status.tracked_configs.iter().flatten() {
        hasher.write(b"\0");
        hasher.write(key.as_bytes());
        hasher.write(b"=");
        hasher.write(value.as_bytes());
    }
    format!("{:016x}", hasher.finish())
}

/// Delivers webhook payloads. Implemented by the HTTP client adapter.
pub trait WebhookClient: Send + Sync {
    /// POSTs `payload` to `hook.url` and reports the outcome. Never panics.
    fn call<'a>(
        &'a self,
        hook: &'a Webhook,
        payload: &'a WebhookPayload,
    ) -> BoxFuture<'a, HookResult>;
}

/// FNV-1a, 64 bit: a hash that is stable across builds and platforms (unlike `DefaultHasher`).
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::HookType;

    fn hook() -> Webhook {
        Webhook {
            index: 0,
            name: "load-test".into(),
            hook_type: HookType::Rollout,
            url: "http://flagger-loadtester.test/".into(),
            timeout: None,
            metadata: BTreeMap::from([("cmd".into(), "hey -z 1m http://podinfo.test".into())]),
            mute_alert: false,
        }
    }

    #[test]
    fn payload_is_flaggers_json() {
        let status = CanaryStatus {
            last_applied_spec: Some("5d8c9f7b6".into()),
            ..CanaryStatus::default()
        };
        let payload = WebhookPayload::new("podinfo", "test", Phase::Progressing, &status, &hook());
        let json = serde_json::to_value(&payload).unwrap_or_default();
        assert_eq!(json["name"], "podinfo");
        assert_eq!(json["namespace"], "test");
        assert_eq!(json["phase"], "Progressing");
        assert_eq!(json["metadata"]["cmd"], "hey -z 1m http://podinfo.test");
        assert_eq!(json["checksum"].as_str().map(str::len), Some(16));
    }

    #[test]
    fn checksum_identifies_the_revision() {
        let a = CanaryStatus {
            last_applied_spec: Some("a".into()),
            ..CanaryStatus::default()
        };
        let mut b = a.clone();
        b.failed_checks = 3;
        assert_eq!(checksum(&a), checksum(&b), "only the revision counts");
        b.tracked_configs = Some(BTreeMap::from([("configmap/x".into(), "1".into())]));
        assert_ne!(checksum(&a), checksum(&b));
    }

    #[test]
    fn event_payload_carries_the_event() {
        let event = Event::warning("Canary failed! Scaling down podinfo.test");
        let payload = WebhookPayload::for_event(
            "podinfo",
            "test",
            &CanaryStatus::default(),
            &hook(),
            &event,
            Timestamp::from_unix_seconds(10),
        );
        assert_eq!(payload.metadata["eventMessage"], event.message);
        assert_eq!(payload.metadata["eventType"], "Warning");
        assert_eq!(payload.metadata["timestamp"], "10000");
    }
}
