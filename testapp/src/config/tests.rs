use super::*;

fn faults(vars: &[(&str, &str)]) -> Result<Faults> {
    Faults::from_lookup(|name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
    })
}

#[test]
fn no_fault_variables_mean_no_faults() {
    assert_eq!(faults(&[]).unwrap(), Faults::default());
    assert_eq!(
        faults(&[("FAULT_DELAY", ""), ("FAULT_ERROR_PERCENT", " ")]).unwrap(),
        Faults::default()
    );
}

#[test]
fn fault_variables_are_parsed() {
    let f = faults(&[
        ("FAULT_ERROR_PERCENT", "12.5"),
        ("FAULT_DELAY", "1m30s"),
        ("FAULT_NOT_READY", "true"),
    ])
    .unwrap();
    assert_eq!(
        f,
        Faults {
            error_percent: 12.5,
            delay: Duration::from_secs(90),
            not_ready: true
        }
    );
    for (value, expected) in [("1", true), ("TRUE", true), ("0", false), ("false", false)] {
        assert_eq!(
            faults(&[("FAULT_NOT_READY", value)]).unwrap().not_ready,
            expected,
            "{value}"
        );
    }
    assert_eq!(
        faults(&[("FAULT_ERROR_PERCENT", "100")])
            .unwrap()
            .error_percent,
        100.0
    );
}

#[test]
fn invalid_fault_variables_name_the_variable_and_value() {
    let cases = [
        ("FAULT_ERROR_PERCENT", "lots", "not a number"),
        ("FAULT_ERROR_PERCENT", "101", "between 0 and 100"),
        ("FAULT_ERROR_PERCENT", "-1", "between 0 and 100"),
        ("FAULT_ERROR_PERCENT", "NaN", "between 0 and 100"),
        ("FAULT_DELAY", "5", "missing unit"),
        ("FAULT_DELAY", "-1s", "negative"),
        ("FAULT_NOT_READY", "yes", "expected 1, true, 0 or false"),
    ];
    for (variable, value, reason) in cases {
        let error = faults(&[(variable, value)]).unwrap_err();
        let Error::Env {
            variable: named,
            value: ref found,
            ref source,
        } = error
        else {
            panic!("{variable}={value}: {error:?}");
        };
        assert_eq!((named, found.as_str()), (variable, value));
        assert!(
            source.to_string().contains(reason),
            "{variable}={value}: {source}"
        );
        assert_eq!(
            error.to_string(),
            format!("{variable}={value:?} is not valid")
        );
    }
}

#[test]
fn flags_and_their_defaults() {
    let config = Config::from_env_and_args([
        "serin-testapp",
        "--host",
        "0.0.0.0",
        "--port",
        "9898",
        "--port",
        "9797",
        "--version",
        "6.0.0",
        "--hostname",
        "podinfo-abc",
    ])
    .unwrap();
    assert_eq!(config.host.to_string(), "0.0.0.0");
    assert_eq!(config.ports, [9898, 9797]);
    assert_eq!(config.app.version, "6.0.0");
    assert_eq!(config.app.hostname, "podinfo-abc");

    let error = Config::from_env_and_args(["serin-testapp", "--port", "http"]).unwrap_err();
    assert!(matches!(error, Error::Args(_)), "{error:?}");
}

#[test]
fn app_config_defaults_to_podinfo_message() {
    let app = AppConfig::new("6.1.0");
    assert_eq!(app.message, "greetings from podinfo v6.1.0");
    assert!(!app.hostname.is_empty());
    assert_eq!(app.faults, Faults::default());
}
