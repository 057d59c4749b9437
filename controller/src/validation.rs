//! Semantic validation: turns a parsed [`CanarySpec`] into [`Settings`], the checked form the
//! stage machine runs on, or reports every problem at once, each with its field path
//! (`spec.analysis.maxWeight: must be at most 100, got 150`).
//!
//! The same code backs `serin validate`, the controller's admission of a Canary and the stage
//! machine, so a manifest that validates is exactly one the controller will run.
//!
//! Defaults are Flagger's: interval 60s, threshold 1, max weight 100, progress deadline 600s,
//! metric interval 1m, session cookie max age 86400s.

use std::{collections::BTreeMap, fmt, time::Duration};

use crate::{
    canary::{
        AnalysisSpec, Canary, CanarySpec, HookType, HttpMatchRequest, IntOrString, MetricSpec,
        ServiceSpec, StringMatch, ThresholdRange, WebhookSpec,
    },
    route::{NamedMatch, RouteMatch, ValueMatch},
    template::MetricTemplate,
    weight::{Percent, Weight},
};

/// Names of the metrics Serin measures itself (from serin-proxy's counters).
pub const BUILTIN_METRICS: [&str; 2] = [REQUEST_SUCCESS_RATE, REQUEST_DURATION];
/// Percentage of non-5xx responses.
pub const REQUEST_SUCCESS_RATE: &str = "request-success-rate";
/// 99th percentile of request duration, in milliseconds.
pub const REQUEST_DURATION: &str = "request-duration";

const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_PROGRESS_DEADLINE_SECONDS: u64 = 600;
const DEFAULT_COOKIE_MAX_AGE: u64 = 86_400;

/// One problem, located by its field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field, e.g. `spec.analysis.metrics[1].name`.
    pub path: String,
    /// What is wrong, e.g. `must be at most 100, got 150`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one resource, in field order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// The problems.
    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.0.iter()
    }

    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// A validated Canary spec, with defaults applied: what the stage machine runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Name of the target workload.
    pub target: String,
    /// Kind of the target workload (`Deployment`).
    pub target_kind: String,
    /// Time between analysis steps.
    pub interval: Duration,
    /// Failed checks that trigger a rollback.
    pub threshold: u32,
    /// How long the canary may stay unready before the release is rolled back.
    pub progress_deadline: Duration,
    /// Promote without analysis.
    pub skip_analysis: bool,
    /// Do nothing until unset.
    pub suspend: bool,
    /// How traffic moves.
    pub strategy: Strategy,
    /// Share of traffic mirrored, when mirroring is on.
    pub mirror: Option<Weight>,
    /// Primary weight step during promotion (all at once when `None`).
    pub step_weight_promotion: Option<Weight>,
    /// Cookie pinning for a weighted canary.
    pub session_affinity: Option<AffinitySettings>,
    /// A/B testing conditions (or the conditions a weighted canary is limited to).
    pub matches: Vec<RouteMatch>,
    /// Metric checks, built-in ones first (Flagger's order), then custom ones.
    pub metrics: Vec<MetricCheck>,
    /// Webhooks in spec order.
    pub webhooks: Vec<Webhook>,
}

/// How traffic moves during the analysis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Progressive traffic shifting up to `max_weight`.
    Canary {
        /// How the canary weight grows.
        steps: Steps,
        /// Highest canary weight before promotion.
        max_weight: Weight,
    },
    /// Requests matching [`Settings::matches`] go to the canary for `iterations` steps.
    AbTesting {
        /// Number of analysis iterations.
        iterations: u32,
    },
    /// The canary gets no live traffic (or a mirror of it) for `iterations` steps, then all
    /// of it just before promotion.
    BlueGreen {
        /// Number of analysis iterations.
        iterations: u32,
    },
}

/// Weight progression of a canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Steps {
    /// Add this much at every step (`stepWeight`).
    Fixed(Weight),
    /// Go through these weights (`stepWeights`), strictly increasing.
    List(Vec<Weight>),
}

impl Strategy {
    /// Highest canary weight reached during the analysis.
    pub fn max_weight(&self) -> Weight {
        match self {
            Strategy::Canary { max_weight, .. } => *max_weight,
            Strategy::AbTesting { .. } | Strategy::BlueGreen { .. } => Weight::FULL,
        }
    }

    /// Canary weight after the step that follows `current` (capped at the max weight).
    pub fn next_weight(&self, current: Weight) -> Weight {
        match self {
            Strategy::Canary {
                steps: Steps::Fixed(step),
                max_weight,
            } => current.saturating_add(*step).min(*max_weight),
            Strategy::Canary {
                steps: Steps::List(list),
                max_weight,
            } => list
                .iter()
                .copied()
                .find(|w| *w > current)
                .unwrap_or(*max_weight)
                .min(*max_weight),
            Strategy::AbTesting { .. } | Strategy::BlueGreen { .. } => Weight::FULL,
        }
    }
}

/// Cookie pinning settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffinitySettings {
    /// Cookie name.
    pub cookie_name: String,
    /// Cookie lifetime in seconds.
    pub max_age: u64,
}

/// A checked metric.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricCheck {
    /// Name as in the spec; unique within a Canary.
    pub name: String,
    /// What to measure.
    pub kind: MetricKind,
    /// Query window.
    pub interval: Duration,
    /// Accepted range (a legacy `threshold` becomes a min for the success rate and a max
    /// otherwise).
    pub range: ThresholdRange,
}

/// What a metric measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Percentage of non-5xx canary responses.
    RequestSuccessRate,
    /// 99th percentile canary request duration in milliseconds.
    RequestDuration,
    /// A `MetricTemplate` query.
    Template {
        /// Template name.
        name: String,
        /// Template namespace (`None`: the Canary's).
        namespace: Option<String>,
        /// Values for `{{ variables.KEY }}`.
        variables: BTreeMap<String, String>,
    },
    /// A legacy inline PromQL query.
    Query(String),
}

impl MetricKind {
    /// Whether Serin measures this metric itself.
    pub fn is_builtin(&self) -> bool {
        matches!(
            self,
            MetricKind::RequestSuccessRate | MetricKind::RequestDuration
        )
    }
}

/// A checked webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// Position in `spec.analysis.webhooks`.
    pub index: usize,
    /// Name, used in events.
    pub name: String,
    /// When it runs.
    pub hook_type: HookType,
    /// Absolute http(s) URL.
    pub url: String,
    /// Request timeout (`None`: the client's default).
    pub timeout: Option<Duration>,
    /// Payload metadata.
    pub metadata: BTreeMap<String, String>,
    /// Mute alerts raised by this hook.
    pub mute_alert: bool,
}

/// Validates a whole Canary: its metadata and its spec.
pub fn validate_canary(canary: &Canary) -> Result<Settings, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if canary.metadata.name.as_deref().is_none_or(str::is_empty) {
        errors.push("metadata.name", "required");
    }
    match (validate(&canary.spec), errors.0.is_empty()) {
        (Ok(settings), true) => Ok(settings),
        (Ok(_), false) => Err(errors),
        (Err(spec_errors), _) => {
            errors.0.extend(spec_errors.0);
            Err(errors)
        }
    }
}

/// Validates a Canary spec and compiles it into [`Settings`], or returns every problem.
pub fn validate(spec: &CanarySpec) -> Result<Settings, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let knative = spec.provider.as_deref() == Some("knative");

    // targetRef
    let (mut target, mut target_kind) = (String::new(), String::new());
    match &spec.target_ref {
        None => errors.push("spec.targetRef", "required"),
        Some(target_ref) => {
            match target_ref.name.as_deref() {
                None | Some("") => errors.push("spec.targetRef.name", "required"),
                Some(name) => target = name.to_owned(),
            }
            match target_ref.kind.as_deref() {
                None | Some("") => errors.push("spec.targetRef.kind", "required"),
                Some(kind) if knative => {
                    if kind != "Service" {
                        errors.push(
                            "spec.targetRef.kind",
                            format!("must be Service when provider is knative, got {kind:?}"),
                        );
                    }
                    target_kind = kind.to_owned();
                }
                Some(kind @ ("Deployment" | "DaemonSet")) => target_kind = kind.to_owned(),
                // Standalone mode: a serin.dev Backend of static addresses stands for the target.
                Some("Backend") => {
                    target_kind = "Backend".to_owned();
                    if target_ref.api_version.as_deref() != Some("serin.dev/v1alpha1") {
                        errors.push(
                            "spec.targetRef.apiVersion",
                            "must be serin.dev/v1alpha1 for a Backend target",
                        );
                    }
                }
                Some(kind) => errors.push(
                    "spec.targetRef.kind",
                    format!(
                        "unsupported kind {kind:?} (expected Deployment or DaemonSet, or Backend in standalone mode)"
                    ),
                ),
            }
            if knative && target_ref.api_version.as_deref() != Some("serving.knative.dev/v1") {
                errors.push(
                    "spec.targetRef.apiVersion",
                    "must be serving.knative.dev/v1 when provider is knative",
                );
            }
        }
    }

    if let Some(autoscaler) = &spec.autoscaler_ref
        && autoscaler.name.as_deref().is_none_or(str::is_empty)
    {
        errors.push("spec.autoscalerRef.name", "required");
    }

    match &spec.service {
        None if !knative => errors.push("spec.service", "required"),
        None => {}
        Some(service) => validate_service(service, !knative, &mut errors),
    }

    let progress_deadline = match spec.progress_deadline_seconds {
        None => Duration::from_secs(DEFAULT_PROGRESS_DEADLINE_SECONDS),
        Some(secs) if secs > 0 => Duration::from_secs(secs.unsigned_abs()),
        Some(secs) => {
            errors.push(
                "spec.progressDeadlineSeconds",
                format!("must be greater than 0, got {secs}"),
            );
            Duration::ZERO
        }
    };

    let analysis = match &spec.analysis {
        None => {
            errors.push("spec.analysis", "required");
            None
        }
        Some(analysis) => validate_analysis(analysis, &mut errors),
    };

    match analysis {
        Some(analysis) if errors.0.is_empty() => Ok(Settings {
            target,
            target_kind,
            progress_deadline,
            skip_analysis: spec.skip_analysis,
            suspend: spec.suspend,
            interval: analysis.interval,
            threshold: analysis.threshold,
            strategy: analysis.strategy,
            mirror: analysis.mirror,
            step_weight_promotion: analysis.step_weight_promotion,
            session_affinity: analysis.session_affinity,
            matches: analysis.matches,
            metrics: analysis.metrics,
            webhooks: analysis.webhooks,
        }),
        _ => Err(errors),
    }
}

/// Validates a MetricTemplate.
pub fn validate_metric_template(template: &MetricTemplate) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if template.metadata.name.as_deref().is_none_or(str::is_empty) {
        errors.push("metadata.name", "required");
    }
    match &template.spec.provider {
        None => errors.push("spec.provider", "required"),
        Some(provider) => match provider.provider_type.as_deref() {
            None | Some("") => errors.push("spec.provider.type", "required"),
            Some("prometheus") => match provider.address.as_deref() {
                None | Some("") => errors.push("spec.provider.address", "required"),
                Some(address) => {
                    if let Err(reason) = check_http_url(address) {
                        errors.push(
                            "spec.provider.address",
                            format!("invalid URL {address:?}: {reason}"),
                        );
                    }
                }
            },
            Some(other) => errors.push(
                "spec.provider.type",
                format!("unsupported provider {other:?} (supported: prometheus)"),
            ),
        },
    }
    if let Some(secret) = template
        .spec
        .provider
        .as_ref()
        .and_then(|p| p.secret_ref.as_ref())
        && secret.name.as_deref().is_none_or(str::is_empty)
    {
        errors.push("spec.provider.secretRef.name", "required");
    }
    if template
        .spec
        .query
        .as_deref()
        .is_none_or(|q| q.trim().is_empty())
    {
        errors.push("spec.query", "required");
    }
    if errors.0.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The analysis part of [`Settings`].
struct AnalysisSettings {
    interval: Duration,
    threshold: u32,
    strategy: Strategy,
    mirror: Option<Weight>,
    step_weight_promotion: Option<Weight>,
    session_affinity: Option<AffinitySettings>,
    matches: Vec<RouteMatch>,
    metrics: Vec<MetricCheck>,
    webhooks: Vec<Webhook>,
}

/// `gateway_routed`: the Canary is routed by an HTTPRoute (every provider but knative), which
/// serin-proxy serves only when it names a parent Gateway: without one the route is rejected
/// and every request answers 404.
fn validate_service(service: &ServiceSpec, gateway_routed: bool, errors: &mut ValidationErrors) {
    match service.port {
        None => errors.push("spec.service.port", "required"),
        Some(port) => check_port("spec.service.port", port, errors),
    }
    match &service.target_port {
        Some(IntOrString::Int(port)) => check_port("spec.service.targetPort", *port, errors),
        Some(IntOrString::String(name)) if name.is_empty() => {
            errors.push("spec.service.targetPort", "must not be empty");
        }
        _ => {}
    }
    if gateway_routed && service.gateway_refs.is_empty() {
        errors.push(
            "spec.service.gatewayRefs",
            "required: at least one Gateway for the HTTPRoute to attach to \
             (without one serin-proxy rejects the route and answers 404)",
        );
    }
    for (i, gateway) in service.gateway_refs.iter().enumerate() {
        let path = format!("spec.service.gatewayRefs[{i}]");
        if gateway.name.as_deref().is_none_or(str::is_empty) {
            errors.push(format!("{path}.name"), "required");
        }
        if let Some(port) = gateway.port {
            check_port(&format!("{path}.port"), port, errors);
        }
    }
    for (i, mirror) in service.mirror.iter().enumerate() {
        let path = format!("spec.service.mirror[{i}].backendRef");
        match &mirror.backend_ref {
            None => errors.push(path, "required"),
            Some(backend) if backend.name.as_deref().is_none_or(str::is_empty) => {
                errors.push(format!("{path}.name"), "required");
            }
            Some(_) => {}
        }
    }
    for (i, m) in service.matches.iter().enumerate() {
        compile_match(&format!("spec.service.match[{i}]"), m, errors);
    }
}

fn check_port(path: &str, port: i64, errors: &mut ValidationErrors) {
    if !(1..=65_535).contains(&port) {
        errors.push(path, format!("must be between 1 and 65535, got {port}"));
    }
}

#[allow(clippy::too_many_lines)] // one rule after the other, in field order
fn validate_analysis(
    analysis: &AnalysisSpec,
    errors: &mut ValidationErrors,
) -> Option<AnalysisSettings> {
    const P: &str = "spec.analysis";
    let before = errors.0.len();

    let interval = match analysis.interval {
        None => DEFAULT_INTERVAL,
        Some(d) if d.is_zero() => {
            errors.push(format!("{P}.interval"), "must be greater than 0");
            DEFAULT_INTERVAL
        }
        Some(d) => d.get(),
    };

    let threshold = match analysis.threshold {
        None => 1,
        Some(n) if n >= 1 => u32::try_from(n).unwrap_or(u32::MAX),
        Some(n) => {
            errors.push(
                format!("{P}.threshold"),
                format!("must be at least 1, got {n}"),
            );
            1
        }
    };

    let iterations = match analysis.iterations {
        None => None,
        Some(n) if n >= 1 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        Some(n) => {
            errors.push(
                format!("{P}.iterations"),
                format!("must be at least 1, got {n}"),
            );
            None
        }
    };
    let has_iterations = analysis.iterations.is_some();
    let has_match = !analysis.matches.is_empty();

    // Weights.
    let max_weight = analysis
        .max_weight
        .and_then(|p| positive_weight(&format!("{P}.maxWeight"), p, errors));
    let effective_max = max_weight.unwrap_or(Weight::FULL);
    let step_weight = analysis
        .step_weight
        .and_then(|p| positive_weight(&format!("{P}.stepWeight"), p, errors));
    if let (Some(step), Some(p)) = (step_weight, analysis.step_weight)
        && step > effective_max
    {
        errors.push(
            format!("{P}.stepWeight"),
            format!("must not exceed maxWeight {effective_max}, got {p}"),
        );
    }
    if analysis.step_weight.is_some() && !analysis.step_weights.is_empty() {
        errors.push(
            format!("{P}.stepWeights"),
            "cannot be combined with stepWeight",
        );
    }
    let mut step_list = Vec::with_capacity(analysis.step_weights.len());
    let mut step_list_ok = true;
    for (i, p) in analysis.step_weights.iter().enumerate() {
        let path = format!("{P}.stepWeights[{i}]");
        let Some(weight) = positive_weight(&path, *p, errors) else {
            step_list_ok = false;
            continue;
        };
        if let Some(previous) = step_list.last()
            && weight <= *previous
        {
            errors.push(
                path,
                format!("must be greater than the previous step {previous}, got {p}"),
            );
            step_list_ok = false;
            continue;
        }
        if let Some(max) = max_weight
            && weight > max
        {
            errors.push(path, format!("must not exceed maxWeight {max}, got {p}"));
            step_list_ok = false;
            continue;
        }
        step_list.push(weight);
    }
    if has_iterations && !has_match {
        if analysis.step_weight.is_some() {
            errors.push(
                format!("{P}.stepWeight"),
                "cannot be combined with iterations unless match is set",
            );
        }
        if !analysis.step_weights.is_empty() {
            errors.push(
                format!("{P}.stepWeights"),
                "cannot be combined with iterations unless match is set",
            );
        }
    }
    let step_weight_promotion = analysis
        .step_weight_promotion
        .and_then(|p| positive_weight(&format!("{P}.stepWeightPromotion"), p, errors));

    // Strategy.
    let strategy = match (iterations, has_match, step_weight, step_list_ok) {
        (Some(iterations), true, _, _) => Some(Strategy::AbTesting { iterations }),
        (Some(iterations), false, _, _) => Some(Strategy::BlueGreen { iterations }),
        (None, _, Some(step), _) => Some(Strategy::Canary {
            steps: Steps::Fixed(step),
            max_weight: effective_max,
        }),
        (None, _, None, true) if !step_list.is_empty() => {
            let last = step_list.last().copied().unwrap_or(Weight::FULL);
            Some(Strategy::Canary {
                steps: Steps::List(step_list),
                max_weight: max_weight.map_or(last, |max| max.min(last)),
            })
        }
        _ => None,
    };
    if !has_iterations && analysis.step_weight.is_none() && analysis.step_weights.is_empty() {
        errors.push(
            P,
            "one of stepWeight, stepWeights or iterations is required",
        );
    }

    // Mirroring.
    if analysis.mirror && has_match {
        errors.push(format!("{P}.mirror"), "cannot be combined with match");
    }
    let mirror_weight = match analysis.mirror_weight {
        None => Weight::FULL,
        Some(p) => {
            if !analysis.mirror {
                errors.push(format!("{P}.mirrorWeight"), "requires mirror: true");
            }
            positive_weight(&format!("{P}.mirrorWeight"), p, errors).unwrap_or(Weight::FULL)
        }
    };
    let mirror = analysis.mirror.then_some(mirror_weight);

    // Match conditions.
    let matches: Vec<RouteMatch> = analysis
        .matches
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let path = format!("{P}.match[{i}]");
            let compiled = compile_match(&path, m, errors)?;
            if compiled == RouteMatch::default() {
                errors.push(path, "must set at least one condition");
                return None;
            }
            Some(compiled)
        })
        .collect();

    // Session affinity.
    let session_affinity = analysis.session_affinity.as_ref().and_then(|sa| {
        let path = format!("{P}.sessionAffinity");
        if has_iterations {
            errors.push(
                path.clone(),
                "requires a weighted strategy (stepWeight or stepWeights), not iterations",
            );
        } else if has_match {
            errors.push(path.clone(), "cannot be combined with match");
        }
        let max_age = match sa.max_age {
            None | Some(0) => DEFAULT_COOKIE_MAX_AGE,
            Some(secs) if secs > 0 => secs.unsigned_abs(),
            Some(secs) => {
                errors.push(
                    format!("{path}.maxAge"),
                    format!("must not be negative, got {secs}"),
                );
                DEFAULT_COOKIE_MAX_AGE
            }
        };
        match sa.cookie_name.as_deref() {
            None | Some("") => {
                errors.push(format!("{path}.cookieName"), "required");
                None
            }
            Some(name) if !is_cookie_token(name) => {
                errors.push(
                    format!("{path}.cookieName"),
                    format!("invalid cookie name {name:?}"),
                );
                None
            }
            Some(name) => Some(AffinitySettings {
                cookie_name: name.to_owned(),
                max_age,
            }),
        }
    });

    let metrics = validate_metrics(&analysis.metrics, errors);
    let webhooks = validate_webhooks(&analysis.webhooks, errors);

    match strategy {
        Some(strategy) if errors.0.len() == before => Some(AnalysisSettings {
            interval,
            threshold,
            strategy,
            mirror,
            step_weight_promotion,
            session_affinity,
            matches,
            metrics,
            webhooks,
        }),
        _ => None,
    }
}

/// A weight in (0, 100], reporting problems at `path`.
fn positive_weight(path: &str, percent: Percent, errors: &mut ValidationErrors) -> Option<Weight> {
    match percent.to_weight() {
        Ok(weight) if weight.is_zero() => {
            errors.push(path, format!("must be greater than 0, got {percent}"));
            None
        }
        Ok(weight) => Some(weight),
        Err(serin_api::Error::InvalidWeight { reason, .. }) if reason == "must not be negative" => {
            errors.push(path, format!("must be greater than 0, got {percent}"));
            None
        }
        Err(serin_api::Error::InvalidWeight { reason, .. }) => {
            errors.push(path, format!("{reason}, got {percent}"));
            None
        }
        Err(other) => {
            errors.push(path, other.to_string());
            None
        }
    }
}

fn validate_metrics(metrics: &[MetricSpec], errors: &mut ValidationErrors) -> Vec<MetricCheck> {
    let mut checks = Vec::new();
    let mut seen = BTreeMap::new();
    for (i, metric) in metrics.iter().enumerate() {
        let path = format!("spec.analysis.metrics[{i}]");
        let name = match metric.name.as_deref() {
            None | Some("") => {
                errors.push(format!("{path}.name"), "required");
                continue;
            }
            Some(name) => name,
        };
        if let Some(first) = seen.insert(name.to_owned(), i) {
            errors.push(
                format!("{path}.name"),
                format!("duplicate metric name {name:?} (also metrics[{first}])"),
            );
        }
        let kind = match (&metric.template_ref, &metric.query) {
            (Some(_), Some(_)) => {
                errors.push(
                    format!("{path}.query"),
                    "cannot be combined with templateRef",
                );
                None
            }
            (Some(template), None) => match template.name.as_deref() {
                None | Some("") => {
                    errors.push(format!("{path}.templateRef.name"), "required");
                    None
                }
                Some(template_name) => Some(MetricKind::Template {
                    name: template_name.to_owned(),
                    namespace: template.namespace.clone().filter(|ns| !ns.is_empty()),
                    variables: metric.template_variables.clone(),
                }),
            },
            (None, Some(query)) if query.trim().is_empty() => {
                errors.push(format!("{path}.query"), "must not be empty");
                None
            }
            (None, Some(query)) => Some(MetricKind::Query(query.clone())),
            (None, None) => match name {
                REQUEST_SUCCESS_RATE => Some(MetricKind::RequestSuccessRate),
                REQUEST_DURATION => Some(MetricKind::RequestDuration),
                other => {
                    errors.push(
                        format!("{path}.name"),
                        format!(
                            "unknown built-in metric {other:?} (built-ins: {}); set templateRef \
                             to query a MetricTemplate",
                            BUILTIN_METRICS.join(", ")
                        ),
                    );
                    None
                }
            },
        };
        if !metric.template_variables.is_empty() && metric.template_ref.is_none() {
            errors.push(format!("{path}.templateVariables"), "requires templateRef");
        }
        let interval = match metric.interval {
            None => DEFAULT_METRIC_INTERVAL,
            Some(d) if d.is_zero() => {
                errors.push(format!("{path}.interval"), "must be greater than 0");
                DEFAULT_METRIC_INTERVAL
            }
            Some(d) => d.get(),
        };
        let range = match (metric.threshold_range, metric.threshold) {
            (Some(range), _) => {
                let range_path = format!("{path}.thresholdRange");
                match (range.min, range.max) {
                    (None, None) => errors.push(range_path, "must set min, max or both"),
                    (Some(min), Some(max)) if min > max => {
                        errors.push(range_path, format!("min {min} must not exceed max {max}"))
                    }
                    (min, max) => {
                        for (field, value) in [("min", min), ("max", max)] {
                            if value.is_some_and(|v| !v.is_finite()) {
                                errors.push(
                                    format!("{range_path}.{field}"),
                                    "must be a finite number",
                                );
                            }
                        }
                    }
                }
                range
            }
            (None, Some(threshold)) => {
                if !threshold.is_finite() {
                    errors.push(format!("{path}.threshold"), "must be a finite number");
                }
                // Flagger's legacy semantics: a minimum for the success rate, a maximum
                // for everything else.
                if kind == Some(MetricKind::RequestSuccessRate) {
                    ThresholdRange {
                        min: Some(threshold),
                        max: None,
                    }
                } else {
                    ThresholdRange {
                        min: None,
                        max: Some(threshold),
                    }
                }
            }
            (None, None) => {
                errors.push(
                    path.clone(),
                    "one of thresholdRange or threshold is required",
                );
                ThresholdRange::default()
            }
        };
        if let Some(kind) = kind {
            checks.push(MetricCheck {
                name: name.to_owned(),
                kind,
                interval,
                range,
            });
        }
    }
    // Flagger runs the built-in checks before the custom ones.
    checks.sort_by_key(|check| !check.kind.is_builtin());
    checks
}

fn validate_webhooks(webhooks: &[WebhookSpec], errors: &mut ValidationErrors) -> Vec<Webhook> {
    let mut checked = Vec::new();
    for (index, hook) in webhooks.iter().enumerate() {
        let path = format!("spec.analysis.webhooks[{index}]");
        let name = match hook.name.as_deref() {
            None | Some("") => {
                errors.push(format!("{path}.name"), "required");
                None
            }
            Some(name) => Some(name.to_owned()),
        };
        let hook_type = match hook.hook_type.as_deref().unwrap_or("").parse::<HookType>() {
            Ok(t) => Some(t),
            Err(reason) => {
                let expected: Vec<&str> = HookType::ALL.iter().map(|t| t.as_str()).collect();
                errors.push(
                    format!("{path}.type"),
                    format!("{reason} (expected one of {})", expected.join(", ")),
                );
                None
            }
        };
        let url = match hook.url.as_deref() {
            None | Some("") => {
                errors.push(format!("{path}.url"), "required");
                None
            }
            Some(url) => match check_http_url(url) {
                Ok(()) => Some(url.to_owned()),
                Err(reason) => {
                    errors.push(
                        format!("{path}.url"),
                        format!("invalid URL {url:?}: {reason}"),
                    );
                    None
                }
            },
        };
        if hook.timeout.is_some_and(|t| t.is_zero()) {
            errors.push(format!("{path}.timeout"), "must be greater than 0");
        }
        if let Some(retries) = hook.retries
            && retries < 0
        {
            errors.push(
                format!("{path}.retries"),
                format!("must not be negative, got {retries}"),
            );
        }
        if let (Some(name), Some(hook_type), Some(url)) = (name, hook_type, url) {
            checked.push(Webhook {
                index,
                name,
                hook_type,
                url,
                timeout: hook.timeout.map(|t| t.get()),
                metadata: hook.metadata.clone(),
                mute_alert: hook.mute_alert,
            });
        }
    }
    checked
}

/// Checks that `url` is an absolute http or https URL with a host.
fn check_http_url(url: &str) -> Result<(), String> {
    const ABSOLUTE: &str = "must be an absolute http or https URL";
    let uri: http::Uri = url
        .parse()
        .map_err(|_: http::uri::InvalidUri| ABSOLUTE.to_owned())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("scheme must be http or https, got {other:?}")),
        None => return Err(ABSOLUTE.to_owned()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("missing host".to_owned());
    }
    Ok(())
}

/// RFC 6265 cookie-name token: visible ASCII without separators.
fn is_cookie_token(name: &str) -> bool {
    name.bytes().all(|b| {
        b.is_ascii_graphic()
            && !matches!(
                b,
                b'(' | b')'
                    | b'<'
                    | b'>'
                    | b'@'
                    | b','
                    | b';'
                    | b':'
                    | b'\\'
                    | b'"'
                    | b'/'
                    | b'['
                    | b']'
                    | b'?'
                    | b'='
                    | b'{'
                    | b'}'
            )
    })
}

/// Compiles an HTTP match request into a [`RouteMatch`], reporting unsupported or invalid
/// parts at `path`. Returns `None` when anything is wrong.
fn compile_match(
    path: &str,
    m: &HttpMatchRequest,
    errors: &mut ValidationErrors,
) -> Option<RouteMatch> {
    let before = errors.0.len();
    let unsupported = [
        ("scheme", m.scheme.is_some()),
        ("authority", m.authority.is_some()),
        ("withoutHeaders", !m.without_headers.is_empty()),
        ("ignoreUriCase", m.ignore_uri_case.is_some()),
        ("port", m.port.is_some()),
        ("sourceLabels", !m.source_labels.is_empty()),
        ("sourceNamespace", m.source_namespace.is_some()),
        ("gateways", !m.gateways.is_empty()),
    ];
    for (field, present) in unsupported {
        if present {
            errors.push(format!("{path}.{field}"), "not supported by serin-proxy");
        }
    }
    let path_match = m
        .uri
        .as_ref()
        .and_then(|uri| compile_value(&format!("{path}.uri"), uri, errors));
    let method = m.method.as_ref().and_then(|method| match method {
        StringMatch {
            exact: Some(exact),
            prefix: None,
            suffix: None,
            regex: None,
        } if !exact.is_empty() => Some(exact.clone()),
        _ => {
            errors.push(format!("{path}.method"), "only exact is supported");
            None
        }
    });
    let mut headers = Vec::new();
    for (name, value) in &m.headers {
        let field = format!("{path}.headers.{name}");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(field.clone(), "invalid header name");
        }
        if let Some(value) = compile_value(&field, value, errors) {
            headers.push(NamedMatch {
                name: name.to_ascii_lowercase(),
                value,
            });
        }
    }
    let mut query_params = Vec::new();
    for (name, value) in &m.query_params {
        let field = format!("{path}.queryParams.{name}");
        if name.is_empty() {
            errors.push(field.clone(), "invalid parameter name");
        }
        if let Some(value) = compile_value(&field, value, errors) {
            query_params.push(NamedMatch {
                name: name.clone(),
                value,
            });
        }
    }
    (errors.0.len() == before).then_some(RouteMatch {
        path: path_match,
        method,
        headers,
        query_params,
    })
}

fn compile_value(path: &str, m: &StringMatch, errors: &mut ValidationErrors) -> Option<ValueMatch> {
    let set = [
        m.exact.as_ref().map(|v| ValueMatch::Exact(v.clone())),
        m.prefix.as_ref().map(|v| ValueMatch::Prefix(v.clone())),
        m.suffix.as_ref().map(|v| ValueMatch::Suffix(v.clone())),
        m.regex.as_ref().map(|v| ValueMatch::Regex(v.clone())),
    ];
    let mut present = set.into_iter().flatten();
    let (Some(value), None) = (present.next(), present.next()) else {
        let message = if m == &StringMatch::default() {
            "must set one of exact, prefix, suffix or regex"
        } else {
            "must set only one of exact, prefix, suffix or regex"
        };
        errors.push(path, message);
        return None;
    };
    if let ValueMatch::Regex(pattern) = &value
        && let Err(err) = regex::Regex::new(pattern)
    {
        let text = err.to_string();
        let reason = text
            .lines()
            .rev()
            .find(|line| line.starts_with("error:"))
            .map_or(text.as_str(), |line| {
                line.trim_start_matches("error:").trim()
            });
        errors.push(format!("{path}.regex"), format!("invalid regex: {reason}"));
        return None;
    }
    Some(value)
}
