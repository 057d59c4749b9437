use super::*;

#[test]
fn routes() {
    assert_eq!(Route::of("/"), Some(Route::Info));
    assert_eq!(Route::of("/status/503"), Some(Route::Status("503")));
    assert_eq!(Route::of("/delay/0.5"), Some(Route::Delay("0.5")));
    assert_eq!(Route::of("/readyz/disable"), Some(Route::SetReady(false)));
    assert_eq!(Route::of("/nope"), None);
    assert_eq!(Route::of("/status"), None);
}

async fn call(app: &App, method: Method, path: &str) -> Response<Full<Bytes>> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Full::new(Bytes::new()))
        .unwrap();
    app.handle(request).await.unwrap()
}

fn faulty(error_percent: f64) -> App {
    App::new(AppConfig::new("2.0.0").with_faults(crate::Faults {
        error_percent,
        ..crate::Faults::default()
    }))
    .unwrap()
}

#[tokio::test]
async fn error_percent_bounds_are_exact() {
    let (always, never) = (faulty(100.0), faulty(0.0));
    for _ in 0..200 {
        for path in ["/", "/version"] {
            let failed = call(&always, Method::GET, path).await;
            assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR, "{path}");
            assert_eq!(failed.headers()[VERSION_HEADER], "2.0.0");
            let ok = call(&never, Method::GET, path).await;
            assert_eq!(ok.status(), StatusCode::OK, "{path}");
        }
        for path in ["/healthz", "/readyz", "/headers", "/status/201"] {
            let probe = call(&always, Method::GET, path).await;
            assert!(probe.status().is_success(), "{path}: {}", probe.status());
        }
    }
}

#[tokio::test]
async fn readiness_switch_is_shared_by_clones() {
    let app = faulty(0.0);
    let other = app.clone();
    let disabled = call(&app, Method::POST, "/readyz/disable").await;
    assert_eq!(disabled.status(), StatusCode::ACCEPTED);
    let readyz = call(&other, Method::GET, "/readyz").await;
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        call(&other, Method::GET, "/healthz").await.status(),
        StatusCode::OK
    );
}

#[test]
fn a_version_that_cannot_be_a_header_is_refused() {
    assert!(App::new(AppConfig::new("6.0.0-rc.1+build.5")).is_ok());
    let error = App::new(AppConfig::new("1.0\r\nx: y")).unwrap_err();
    assert!(matches!(error, Error::Version { .. }), "{error:?}");
}

#[test]
fn header_names_are_canonical() {
    let name = HeaderName::from_static("x-forwarded-for");
    assert_eq!(canonical(&name), "X-Forwarded-For");
    assert_eq!(canonical(&HeaderName::from_static("host")), "Host");
}
