use super::*;

fn v(name: &str, version: &str, locked: bool, inference: bool, retrain: bool) -> ModelVersion {
    ModelVersion {
        name: name.into(),
        version: version.into(),
        locked,
        inference,
        retrain,
    }
}

fn table() -> ModelTable {
    ModelTable::new(vec![
        v("delay", "2.1.0", true, true, true),
        v("delay", "2.10.0", true, true, true),
        v("delay", "3.0.0-beta", false, true, true),
        v("budget", "1.0.0", true, false, false),
        v("draft", "0.1.0", false, true, true),
    ])
}

fn facts(name: &str, version: Option<&str>) -> ModelFacts {
    ModelFacts {
        name: Some(name.into()),
        version: version.map(String::from),
        ..ModelFacts::default()
    }
}

fn code(r: Result<Allowed, Rejection>) -> Result<Option<String>, ErrorCode> {
    r.map(|a| a.chosen_version).map_err(|r| r.code)
}

#[test]
fn inference_table() {
    let t = table();
    let p = ModelPolicy::default();
    let loose = ModelPolicy {
        require_locked_for_inference: false,
        ..p
    };
    type Case = (
        ModelPolicy,
        &'static str,
        Option<&'static str>,
        Result<Option<String>, ErrorCode>,
    );
    let cases: Vec<Case> = vec![
        (p, "delay", Some("2.1.0"), Ok(None)),
        (p, "delay", None, Ok(Some("2.10.0".into()))),
        (
            p,
            "delay",
            Some("3.0.0-beta"),
            Err(ErrorCode::ModelNotLocked),
        ),
        (loose, "delay", Some("3.0.0-beta"), Ok(None)),
        (p, "delay", Some("9.9.9"), Err(ErrorCode::ModelUnknown)),
        (p, "nope", None, Err(ErrorCode::ModelUnknown)),
        (p, "budget", None, Err(ErrorCode::ModelInferenceDisabled)),
        (p, "draft", None, Err(ErrorCode::ModelNotLocked)),
        (loose, "draft", None, Ok(Some("0.1.0".into()))),
    ];
    for (policy, name, version, want) in cases {
        let got = code(t.decide(&policy, Action::Inference, &facts(name, version)));
        assert_eq!(got, want, "{name} {version:?} {policy:?}");
    }
}

#[test]
fn retrain_needs_the_literal_true_and_a_model_that_allows_it() {
    let t = table();
    let p = ModelPolicy::default();
    let with = |force: serde_json::Value| ModelFacts {
        force: Some(force),
        ..facts("delay", None)
    };
    assert!(
        t.decide(&p, Action::Retrain, &with(serde_json::json!(true)))
            .is_ok()
    );
    for bad in [
        serde_json::json!("true"),
        serde_json::json!(1),
        serde_json::json!(false),
    ] {
        let e = t
            .decide(&p, Action::Retrain, &with(bad.clone()))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::RetrainNotConfirmed, "{bad}");
    }
    assert_eq!(
        t.decide(&p, Action::Retrain, &facts("delay", None))
            .unwrap_err()
            .code,
        ErrorCode::RetrainNotConfirmed
    );
    let no_force = ModelPolicy {
        retrain_requires_force: false,
        ..p
    };
    assert!(
        t.decide(&no_force, Action::Retrain, &facts("delay", None))
            .is_ok()
    );
    let budget = ModelFacts {
        force: Some(serde_json::json!(true)),
        ..facts("budget", None)
    };
    assert_eq!(
        t.decide(&p, Action::Retrain, &budget).unwrap_err().code,
        ErrorCode::Forbidden
    );
    assert_eq!(
        t.decide(&p, Action::Retrain, &facts("nope", None))
            .unwrap_err()
            .code,
        ErrorCode::ModelUnknown
    );
}

#[test]
fn locked_versions_are_never_overwritten_and_unlock_needs_confirmation() {
    let t = table();
    let p = ModelPolicy::default();
    assert_eq!(
        t.decide(&p, Action::Register, &facts("delay", Some("2.1.0")))
            .unwrap_err()
            .code,
        ErrorCode::ModelLocked
    );
    assert!(
        t.decide(&p, Action::Register, &facts("delay", Some("2.2.0")))
            .is_ok()
    );
    assert!(
        t.decide(&p, Action::Register, &facts("draft", Some("0.1.0")))
            .is_ok()
    );

    let unlock = |confirm: Option<&str>| ModelFacts {
        confirm: confirm.map(String::from),
        ..facts("delay", Some("2.1.0"))
    };
    assert_eq!(
        t.decide(&p, Action::Unlock, &unlock(Some("delay@2.1.0")))
            .unwrap_err()
            .code,
        ErrorCode::Forbidden
    );
    let open = ModelPolicy {
        api_unlock: true,
        ..p
    };
    assert!(
        t.decide(&open, Action::Unlock, &unlock(Some("delay@2.1.0")))
            .is_ok()
    );
    for bad in [
        None,
        Some("delay@2.1"),
        Some("delay@2.1.0 "),
        Some("budget@2.1.0"),
    ] {
        assert_eq!(
            t.decide(&open, Action::Unlock, &unlock(bad))
                .unwrap_err()
                .code,
            ErrorCode::Forbidden,
            "{bad:?}"
        );
    }
}

#[test]
fn lock_changes_are_listed_for_the_audit_log() {
    let before = table();
    let after = ModelTable::new(vec![
        v("delay", "2.1.0", false, true, true),
        v("delay", "2.10.0", true, true, true),
        v("delay", "3.0.0-beta", false, true, true),
        v("budget", "1.0.0", true, false, false),
        v("new", "1.0.0", true, true, true),
    ]);
    let changes = before.lock_changes(&after);
    assert_eq!(
        changes,
        vec![
            ("delay".into(), "2.1.0".into(), Some(true), Some(false)),
            ("draft".into(), "0.1.0".into(), Some(false), None),
            ("new".into(), "1.0.0".into(), None, Some(true)),
        ]
    );
}
