//! `serin demo` end to end, as a user runs it: the binary, each scenario, its exit status, its
//! event log and its chart.

use std::process::Command;

fn demo(
    scenario: &str,
) -> (
    std::process::ExitStatus,
    String,
    std::path::PathBuf,
    tempfile::TempDir,
) {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(["demo", "--scenario", scenario, "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status, text, out.path().join("rollout.svg"), out)
}

/// Event messages, in order, without the time column.
fn events(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            l.split_once("  Normal   ")
                .or_else(|| l.split_once("  Warning  "))
        })
        .map(|(_, message)| message.to_owned())
        .collect()
}

fn assert_chart(path: &std::path::Path) {
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(svg.starts_with("<svg"), "not an SVG");
    assert!(svg.contains("canary weight"), "the chart has its legend");
}

#[test]
fn healthy_release_is_promoted_step_by_step() {
    let (status, log, chart, _out) = demo("healthy");
    assert!(status.success(), "{log}");
    let events = events(&log);
    let expected = [
        "Initialization done! podinfo.demo",
        "New revision detected! Scaling up podinfo.demo",
        "Starting canary analysis for podinfo.demo",
        "Pre-rollout check acceptance-test passed",
        "Advance podinfo.demo canary weight 10",
        "Advance podinfo.demo canary weight 20",
        "Advance podinfo.demo canary weight 30",
        "Advance podinfo.demo canary weight 40",
        "Advance podinfo.demo canary weight 50",
        "Copying podinfo.demo template spec to podinfo-primary.demo",
        "Routing all traffic to primary",
        "Promotion completed! Scaling down podinfo.demo",
    ];
    assert_eq!(events, expected, "{log}");
    assert!(log.contains("release ended Succeeded"), "{log}");
    assert_chart(&chart);
}

fn assert_rolled_back(scenario: &str, halt: &str) {
    let (status, log, chart, _out) = demo(scenario);
    assert!(status.success(), "{log}");
    let events = events(&log);
    let advance = events
        .iter()
        .position(|e| e == "Advance podinfo.demo canary weight 10");
    let halts: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.starts_with(halt))
        .map(|(i, _)| i)
        .collect();
    let rollback = events
        .iter()
        .position(|e| e == "Rolling back podinfo.demo failed checks threshold reached 3");
    let failed = events
        .iter()
        .position(|e| e == "Canary failed! Scaling down podinfo.demo");
    assert!(advance.is_some() && halts.len() == 3, "{log}");
    assert!(
        advance < halts.first().copied() && halts.last().copied() < rollback && rollback < failed,
        "{log}"
    );
    assert!(
        !events.iter().any(|e| e.starts_with("Promotion completed")),
        "{log}"
    );
    assert!(log.contains("release ended Failed"), "{log}");
    assert_chart(&chart);
}

#[test]
fn errors_roll_back_after_three_failed_checks() {
    assert_rolled_back("errors", "Halt podinfo.demo advancement success rate ");
}

#[test]
fn latency_rolls_back_after_three_failed_checks() {
    assert_rolled_back("latency", "Halt podinfo.demo advancement request duration ");
}

#[test]
fn without_out_the_chart_goes_to_the_temporary_directory_never_the_working_one() {
    let (cwd, tmp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let output = Command::new(env!("CARGO_BIN_EXE_serin"))
        .args(["demo", "--scenario", "healthy"])
        .current_dir(cwd.path())
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let chart = tmp.path().join("serin-demo/rollout.svg");
    assert_chart(&chart);
    assert!(
        log.contains(&format!("chart written to {}", chart.display())),
        "{log}"
    );
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "nothing left in the working directory"
    );
}
