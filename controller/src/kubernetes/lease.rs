//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's leaderelection
//! package does it: replicas of serin-controller compete for one Lease; the holder renews it
//! every retry period, the others take it over once it has not been renewed for its duration.
//!
//! Every write is an update conditional on the Lease's `resourceVersion`, so of two
//! candidates that see an expired Lease at once exactly one wins (the other's write is
//! refused with a conflict). That is why this is not the `kube-leader-election` crate: it
//! acquires with an unconditional merge patch, after which two replicas can both believe they
//! lead for a round. A leader that cannot renew within the renew deadline stops leading
//! (the process exits, so no write of a deposed leader can follow); on shutdown the holder
//! releases the Lease so a standby takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

/// How a replica competes for the Lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (unique among the replicas).
    pub identity: String,
    /// How long a Lease not renewed stays held (`leaseDurationSeconds`).
    pub duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// The pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults (15 s, 10 s, 2 s).
    pub fn new(namespace: String, name: String, identity: String) -> LeaseConfig {
        LeaseConfig {
            namespace,
            name,
            identity,
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why leading ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The leader could not renew within its deadline (or another replica holds the Lease).
    #[error(
        "lost the leader Lease {namespace}/{name}: not renewed for {elapsed:?} (renew deadline \
         {deadline:?}); stopping so that no write follows"
    )]
    Lost {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// Time since the last renewal.
        elapsed: Duration,
        /// The renew deadline.
        deadline: Duration,
    },
}

/// Competes for the Lease until `stop` turns true: `leading` is set true once this replica
/// holds it. Returns `Ok` after releasing it on stop, `Err` when leadership was lost.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), LeaseError> {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut renewed: Option<Instant> = None;
    loop {
        match try_acquire_or_renew(&api, &config).await {
            Ok(true) => {
                if renewed.is_none() {
                    info!(
                        lease = %format!("{}/{}", config.namespace, config.name),
                        identity = %config.identity,
                        "became the leader"
                    );
                }
                renewed = Some(Instant::now());
                leading.send_replace(true);
            }
            Ok(false) => {
                if let Some(at) = renewed {
                    // Someone else holds it now: we are deposed.
                    return Err(lost(&config, at.elapsed()));
                }
            }
            Err(e) => warn!(
                lease = %format!("{}/{}", config.namespace, config.name),
                "leader election: {e}"
            ),
        }
        if let Some(at) = renewed
            && at.elapsed() > config.renew_deadline
        {
            return Err(lost(&config, at.elapsed()));
        }
        let stopping = tokio::select! {
            () = tokio::time::sleep(config.retry_period) => false,
            () = async { let _ = stop.wait_for(|s| *s).await; } => true,
        };
        if stopping {
            if renewed.is_some() {
                release(&api, &config).await;
            }
            return Ok(());
        }
    }
}

fn lost(config: &LeaseConfig, elapsed: Duration) -> LeaseError {
    LeaseError::Lost {
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        elapsed,
        deadline: config.renew_deadline,
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// One attempt: true when this replica holds the Lease afterwards.
async fn try_acquire_or_renew(api: &Api<Lease>, config: &LeaseConfig) -> kube::Result<bool> {
    let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder != config.identity {
        let held_for = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(seconds)).unwrap_or(0),
        );
        let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
            let age = k8s_openapi::jiff::Timestamp::now().duration_since(renewed.0);
            age.is_negative() || age.unsigned_abs() > held_for
        });
        if !holder.is_empty() && !expired {
            return Ok(false);
        }
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(seconds);
    // Conditional on the resourceVersion read: a conflict means someone else wrote first.
    let name = lease.name_any();
    match api.replace(&name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up (holder cleared), if this replica still holds it.
async fn release(api: &Api<Lease>, config: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = Some(now());
    let name = lease.name_any();
    match api.replace(&name, &PostParams::default(), &lease).await {
        Ok(_) => info!(identity = %config.identity, "released the leader Lease"),
        Err(e) => warn!("releasing the leader Lease: {e}"),
    }
}
