//! Status of the objects the proxy serves: HTTPRoute `status.parents[]`, Gateway conditions and
//! listeners, GatewayClass `Accepted`.
//!
//! [`compute`] is pure: from a snapshot, the compiler's problems and the outcome of the last
//! apply, it returns only the patches that would change something (a condition keeps its
//! `lastTransitionTime` while its status stays the same). The [`Writer`] sends them as merge
//! patches to the status subresource. On an HTTPRoute the proxy owns only the `parents` entries
//! with its controller name whose Gateway it serves (or whose parentRef left the spec); entries of
//! other controllers are kept, and the patch carries the `resourceVersion` it was computed from
//! so that a concurrent write is not lost (the write is retried on the next change).

use std::collections::BTreeSet;

use gateway_api::experimental::gatewayclasses::GatewayClass;
use gateway_api::experimental::gateways::{
    Gateway, GatewayListenersAllowedRoutesNamespacesFrom, GatewayStatusListeners,
    GatewayStatusListenersSupportedKinds,
};
use gateway_api::experimental::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteStatusParents, HttpRouteStatusParentsParentRef,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::objects::{GatewayFilter, parent_gateway};
use super::watch::Snapshot;
use super::{CONTROLLER_NAME, FIELD_MANAGER};
use crate::config::{GATEWAY_GROUP, ObjectKey, key_of};
use crate::table::Problem;

/// Condition type `Accepted`.
pub const ACCEPTED: &str = "Accepted";
/// Condition type `ResolvedRefs`.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// Condition type `Programmed`.
pub const PROGRAMMED: &str = "Programmed";
/// Reason of a listener or Gateway that is not programmed.
pub const INVALID: &str = "Invalid";
/// Reason of a Gateway none of whose listeners is valid.
pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";

/// The kinds whose status the proxy writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    HttpRoute,
    Gateway,
    GatewayClass,
}

/// One merge patch to one object's status subresource.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPatch {
    pub kind: Kind,
    /// Empty for the cluster-scoped GatewayClass.
    pub namespace: String,
    pub name: String,
    /// The merge patch body: `{"status": ...}` (and `metadata.resourceVersion` for routes).
    pub body: Value,
}

/// The status patches that would change something, given the last successful apply's
/// `problems` and the error of the last apply (`apply_error`: it failed and the previous table
/// is serving).
pub fn compute(
    snapshot: &Snapshot,
    filter: &GatewayFilter,
    problems: &[Problem],
    apply_error: Option<&str>,
    now: &Time,
) -> Vec<StatusPatch> {
    let ours = filter.gateways(snapshot);
    let mut out = Vec::new();
    // After a failed apply the problems describe an older table: route status waits for the
    // next successful one, while the Gateways report the failure.
    if apply_error.is_none() {
        for route in &snapshot.routes {
            if let Some(patch) = route_patch(route, &ours, problems, now) {
                out.push(patch);
            }
        }
    }
    for gateway in &snapshot.gateways {
        if ours.contains(&key_of(gateway.as_ref()))
            && let Some(patch) = gateway_patch(gateway, snapshot, &ours, problems, apply_error, now)
        {
            out.push(patch);
        }
    }
    let classes = filter.classes(snapshot);
    for class in &snapshot.classes {
        if class
            .metadata
            .name
            .as_ref()
            .is_some_and(|n| classes.contains(n))
            && let Some(patch) = class_patch(class, now)
        {
            out.push(patch);
        }
    }
    out
}

/// The status `parentRef` echoing a spec `parentRef`: an exact copy, defaults left unset as in
/// the spec. The spec says status parentRefs "should" match the spec's, and clients compare them
/// for equality (Flagger waits for `Accepted=True` on the entry whose parentRef equals the
/// spec's), so a namespace filled in here would make the entry invisible to them.
fn status_parent_ref(p: &HttpRouteParentRefs) -> HttpRouteStatusParentsParentRef {
    HttpRouteStatusParentsParentRef {
        group: p.group.clone(),
        kind: p.kind.clone(),
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        port: p.port,
        section_name: p.section_name.clone(),
    }
}

/// Whether two status parentRefs name the same parent (unset fields read as their defaults).
fn same_parent(
    route_namespace: &str,
    a: &HttpRouteStatusParentsParentRef,
    b: &HttpRouteStatusParentsParentRef,
) -> bool {
    let norm = |r: &HttpRouteStatusParentsParentRef| {
        (
            r.group.clone().unwrap_or_else(|| GATEWAY_GROUP.to_owned()),
            r.kind.clone().unwrap_or_else(|| "Gateway".to_owned()),
            r.namespace
                .clone()
                .unwrap_or_else(|| route_namespace.to_owned()),
            r.name.clone(),
            r.section_name.clone(),
            r.port,
        )
    };
    norm(a) == norm(b)
}

/// A condition, keeping the previous `lastTransitionTime` when the status did not change.
fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        last_transition_time,
        message,
        observed_generation: generation,
        reason: reason.to_owned(),
        status: status.to_owned(),
        type_: type_.to_owned(),
    }
}

/// `(ok, reason, message)` of one condition type from the problems of one object.
fn verdict(
    problems: &[&Problem],
    type_: &str,
    ok_reason: &str,
    ok_message: &str,
) -> (bool, String, String) {
    let relevant: Vec<&&Problem> = problems
        .iter()
        .filter(|p| p.reason.condition().0 == type_)
        .collect();
    match relevant.first() {
        None => (true, ok_reason.to_owned(), ok_message.to_owned()),
        Some(first) => (
            false,
            first.reason.condition().1.to_owned(),
            relevant
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

fn route_patch(
    route: &HttpRoute,
    ours: &BTreeSet<ObjectKey>,
    problems: &[Problem],
    now: &Time,
) -> Option<StatusPatch> {
    let key = key_of(route);
    let generation = route.metadata.generation;
    let existing: &[HttpRouteStatusParents] = route
        .status
        .as_ref()
        .map(|s| s.parents.as_slice())
        .unwrap_or_default();
    let spec_parents: Vec<&HttpRouteParentRefs> = route.spec.parent_refs.iter().flatten().collect();
    let mine: Vec<&Problem> = problems
        .iter()
        .filter(|p| p.kind == "HTTPRoute" && p.object == key)
        .collect();

    // Entries we own and will rewrite: our controller's, for a Gateway we serve, or for a
    // parentRef that is no longer in the spec.
    let in_spec = |r: &HttpRouteStatusParentsParentRef| {
        spec_parents
            .iter()
            .any(|p| same_parent(&key.namespace, &status_parent_ref(p), r))
    };
    let serves = |r: &HttpRouteStatusParentsParentRef| {
        r.group.as_deref().unwrap_or(GATEWAY_GROUP) == GATEWAY_GROUP
            && r.kind.as_deref().unwrap_or("Gateway") == "Gateway"
            && ours.contains(&ObjectKey::new(
                r.namespace.as_deref().unwrap_or(&key.namespace),
                r.name.as_str(),
            ))
    };
    let mut desired: Vec<HttpRouteStatusParents> = existing
        .iter()
        .filter(|e| {
            e.controller_name != CONTROLLER_NAME
                || (in_spec(&e.parent_ref) && !serves(&e.parent_ref))
        })
        .cloned()
        .collect();

    let mut seen: Vec<HttpRouteStatusParentsParentRef> = Vec::new();
    for (i, parent) in spec_parents.iter().enumerate() {
        let Some(gateway) = parent_gateway(&key.namespace, parent) else {
            continue;
        };
        if !ours.contains(&gateway) {
            continue;
        }
        let parent_ref = status_parent_ref(parent);
        if seen
            .iter()
            .any(|s| same_parent(&key.namespace, s, &parent_ref))
        {
            continue;
        }
        seen.push(parent_ref.clone());
        // A route with an Accepted problem is not served at all: every parent reports it,
        // preferring the problems about this very parentRef.
        let this_parent = format!("spec.parentRefs[{i}]");
        let (about_this, about_any): (Vec<&Problem>, Vec<&Problem>) = mine
            .iter()
            .copied()
            .filter(|p| p.reason.condition().0 == ACCEPTED)
            .partition(|p| p.field.starts_with(&this_parent));
        let mut concerning = if about_this.is_empty() {
            about_any
        } else {
            about_this
        };
        concerning.extend(
            mine.iter()
                .copied()
                .filter(|p| p.reason.condition().0 == RESOLVED_REFS),
        );
        let previous = existing
            .iter()
            .find(|e| {
                e.controller_name == CONTROLLER_NAME
                    && same_parent(&key.namespace, &e.parent_ref, &parent_ref)
            })
            .map(|e| e.conditions.as_slice())
            .unwrap_or_default();
        let (ok, reason, message) =
            verdict(&concerning, ACCEPTED, "Accepted", "Accepted by serin-proxy");
        let accepted = condition(previous, ACCEPTED, ok, &reason, message, generation, now);
        let (ok, reason, message) = verdict(
            &concerning,
            RESOLVED_REFS,
            "ResolvedRefs",
            "All references resolved",
        );
        let resolved = condition(
            previous,
            RESOLVED_REFS,
            ok,
            &reason,
            message,
            generation,
            now,
        );
        desired.push(HttpRouteStatusParents {
            conditions: vec![accepted, resolved],
            controller_name: CONTROLLER_NAME.to_owned(),
            parent_ref,
        });
    }
    if desired == existing {
        return None;
    }
    Some(StatusPatch {
        kind: Kind::HttpRoute,
        namespace: key.namespace,
        name: key.name,
        body: json!({
            "metadata": {"resourceVersion": route.metadata.resource_version},
            "status": {"parents": desired},
        }),
    })
}

fn gateway_patch(
    gateway: &Gateway,
    snapshot: &Snapshot,
    ours: &BTreeSet<ObjectKey>,
    problems: &[Problem],
    apply_error: Option<&str>,
    now: &Time,
) -> Option<StatusPatch> {
    let key = key_of(gateway);
    let generation = gateway.metadata.generation;
    let status = gateway.status.as_ref();
    let previous_conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let previous_listeners = status
        .and_then(|s| s.listeners.as_deref())
        .unwrap_or_default();
    let mine: Vec<&Problem> = problems
        .iter()
        .filter(|p| p.kind == "Gateway" && p.object == key)
        .collect();
    // Routes the compiler served (no Accepted problem) that name this Gateway.
    let served_routes: Vec<&HttpRoute> = snapshot
        .routes
        .iter()
        .map(AsRef::as_ref)
        .filter(|r| super::objects::names_any(r, ours))
        .filter(|r| {
            let rk = key_of(*r);
            !problems.iter().any(|p| {
                p.kind == "HTTPRoute" && p.object == rk && p.reason.condition().0 == ACCEPTED
            })
        })
        .collect();

    let mut listeners = Vec::new();
    let mut valid = 0;
    for (i, l) in gateway.spec.listeners.iter().enumerate() {
        let prefix = format!("spec.listeners[{i}].");
        let problem = mine.iter().find(|p| p.field.starts_with(&prefix));
        let previous = previous_listeners
            .iter()
            .find(|p| p.name == l.name)
            .map(|p| p.conditions.as_slice())
            .unwrap_or_default();
        let conditions = match problem {
            Some(p) => vec![
                condition(
                    previous,
                    ACCEPTED,
                    false,
                    p.reason.condition().1,
                    format!("{}: {}", p.field, p.message),
                    generation,
                    now,
                ),
                condition(
                    previous,
                    PROGRAMMED,
                    false,
                    INVALID,
                    "the listener is not served".to_owned(),
                    generation,
                    now,
                ),
                condition(
                    previous,
                    RESOLVED_REFS,
                    true,
                    "ResolvedRefs",
                    "All references resolved".to_owned(),
                    generation,
                    now,
                ),
            ],
            None => {
                valid += 1;
                let programmed = match apply_error {
                    None => condition(
                        previous,
                        PROGRAMMED,
                        true,
                        "Programmed",
                        "Serving".to_owned(),
                        generation,
                        now,
                    ),
                    Some(e) => condition(
                        previous,
                        PROGRAMMED,
                        false,
                        INVALID,
                        e.to_owned(),
                        generation,
                        now,
                    ),
                };
                vec![
                    condition(
                        previous,
                        ACCEPTED,
                        true,
                        "Accepted",
                        "Accepted by serin-proxy".to_owned(),
                        generation,
                        now,
                    ),
                    programmed,
                    condition(
                        previous,
                        RESOLVED_REFS,
                        true,
                        "ResolvedRefs",
                        "All references resolved".to_owned(),
                        generation,
                        now,
                    ),
                ]
            }
        };
        let attached = if problem.is_some() {
            0
        } else {
            served_routes
                .iter()
                .filter(|r| attaches(r, &key, l))
                .count()
        };
        listeners.push(GatewayStatusListeners {
            attached_routes: i32::try_from(attached).unwrap_or(i32::MAX),
            conditions,
            name: l.name.clone(),
            supported_kinds: Some(if problem.is_some() {
                Vec::new()
            } else {
                vec![GatewayStatusListenersSupportedKinds {
                    group: Some(GATEWAY_GROUP.to_owned()),
                    kind: "HTTPRoute".to_owned(),
                }]
            }),
        });
    }
    let accepted = if valid > 0 {
        condition(
            previous_conditions,
            ACCEPTED,
            true,
            "Accepted",
            "Accepted by serin-proxy".to_owned(),
            generation,
            now,
        )
    } else {
        condition(
            previous_conditions,
            ACCEPTED,
            false,
            LISTENERS_NOT_VALID,
            "no listener can be served".to_owned(),
            generation,
            now,
        )
    };
    let programmed = match (valid, apply_error) {
        (0, _) => condition(
            previous_conditions,
            PROGRAMMED,
            false,
            INVALID,
            "no listener can be served".to_owned(),
            generation,
            now,
        ),
        (_, Some(e)) => condition(
            previous_conditions,
            PROGRAMMED,
            false,
            INVALID,
            e.to_owned(),
            generation,
            now,
        ),
        (_, None) => condition(
            previous_conditions,
            PROGRAMMED,
            true,
            "Programmed",
            "Serving".to_owned(),
            generation,
            now,
        ),
    };
    let conditions = vec![accepted, programmed];
    if previous_conditions == conditions.as_slice() && previous_listeners == listeners.as_slice() {
        return None;
    }
    Some(StatusPatch {
        kind: Kind::Gateway,
        namespace: key.namespace,
        name: key.name,
        body: json!({"status": {"conditions": conditions, "listeners": listeners}}),
    })
}

/// Whether `route` attaches to listener `l` of `gateway` (parentRef name, section, port and the
/// listener's allowed namespaces).
fn attaches(
    route: &HttpRoute,
    gateway: &ObjectKey,
    l: &gateway_api::experimental::gateways::GatewayListeners,
) -> bool {
    let namespace = key_of(route).namespace;
    let from = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.clone())
        .unwrap_or(GatewayListenersAllowedRoutesNamespacesFrom::Same);
    let allowed = match from {
        GatewayListenersAllowedRoutesNamespacesFrom::All => true,
        GatewayListenersAllowedRoutesNamespacesFrom::Same => namespace == gateway.namespace,
        GatewayListenersAllowedRoutesNamespacesFrom::Selector => false,
    };
    allowed
        && route.spec.parent_refs.iter().flatten().any(|p| {
            parent_gateway(&namespace, p).as_ref() == Some(gateway)
                && p.section_name.as_deref().is_none_or(|s| s == l.name)
                && p.port.is_none_or(|port| port == l.port)
        })
}

fn class_patch(class: &GatewayClass, now: &Time) -> Option<StatusPatch> {
    let previous = class
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let accepted = condition(
        previous,
        ACCEPTED,
        true,
        "Accepted",
        "Handled by serin-proxy".to_owned(),
        class.metadata.generation,
        now,
    );
    // Conditions of other types (e.g. SupportedVersion set by someone else) are kept.
    let mut conditions: Vec<Condition> = previous
        .iter()
        .filter(|c| c.type_ != ACCEPTED)
        .cloned()
        .collect();
    conditions.insert(0, accepted);
    let mut sorted_previous = previous.to_vec();
    sorted_previous.sort_by(|a, b| a.type_.cmp(&b.type_));
    let mut sorted = conditions.clone();
    sorted.sort_by(|a, b| a.type_.cmp(&b.type_));
    if sorted_previous == sorted {
        return None;
    }
    Some(StatusPatch {
        kind: Kind::GatewayClass,
        namespace: String::new(),
        name: class.metadata.name.clone().unwrap_or_default(),
        body: json!({"status": {"conditions": conditions}}),
    })
}

/// Sends status patches from a task of its own, so that a slow API server never delays the
/// next table.
pub struct Writer {
    tx: watch::Sender<Vec<StatusPatch>>,
}

impl Writer {
    /// Starts the writer task.
    pub fn start(client: Client) -> (Writer, JoinHandle<()>) {
        let (tx, mut rx) = watch::channel(Vec::<StatusPatch>::new());
        let task = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let patches = rx.borrow_and_update().clone();
                for patch in patches {
                    write(&client, &patch).await;
                }
            }
        });
        (Writer { tx }, task)
    }

    /// Replaces the pending patches (the newest computation supersedes older ones).
    pub fn send(&self, patches: Vec<StatusPatch>) {
        if !patches.is_empty() {
            self.tx.send_replace(patches);
        }
    }
}

async fn write(client: &Client, patch: &StatusPatch) {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let body = Patch::Merge(&patch.body);
    let result = match patch.kind {
        Kind::HttpRoute => Api::<HttpRoute>::namespaced(client.clone(), &patch.namespace)
            .patch_status(&patch.name, &params, &body)
            .await
            .map(drop),
        Kind::Gateway => Api::<Gateway>::namespaced(client.clone(), &patch.namespace)
            .patch_status(&patch.name, &params, &body)
            .await
            .map(drop),
        Kind::GatewayClass => Api::<GatewayClass>::all(client.clone())
            .patch_status(&patch.name, &params, &body)
            .await
            .map(drop),
    };
    match result {
        Ok(()) => {
            tracing::debug!(kind = ?patch.kind, namespace = %patch.namespace, name = %patch.name, "status written")
        }
        // A newer version exists: its watch event brings a fresh computation.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!(kind = ?patch.kind, namespace = %patch.namespace, name = %patch.name, "status write conflicted; recomputing on the next change")
        }
        Err(e) => {
            tracing::warn!(kind = ?patch.kind, namespace = %patch.namespace, name = %patch.name, error = %e, "status write failed")
        }
    }
}

#[cfg(test)]
mod tests;
