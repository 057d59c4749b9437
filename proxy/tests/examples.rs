//! The example configurations shipped in `deploy/examples/` compile without problems.

use std::path::Path;

use serin_proxy::config::load_path;
use serin_proxy::metrics::Telemetry;
use serin_proxy::table::compile;

#[test]
fn quickstart_compiles_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/quickstart");
    let (objects, skipped) = load_path(&dir).unwrap();
    assert_eq!(skipped, 0);
    assert_eq!(
        (
            objects.gateways.len(),
            objects.routes.len(),
            objects.backends.len()
        ),
        (1, 1, 2)
    );
    let telemetry = Telemetry::new();
    let (table, problems) = compile(&objects, &telemetry.metrics);
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(table.ports().collect::<Vec<_>>(), [8080]);
}
