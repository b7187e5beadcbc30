/// The committed `openapi/openapi.json` must be what the code generates.
#[test]
fn committed_spec_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed = std::fs::read_to_string(path).expect("openapi/openapi.json exists");
    let generated = boxoffice::app::openapi_spec();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is out of date; regenerate it with \
         `cargo run -- openapi > openapi/openapi.json` and commit the result"
    );
}

/// Every operation that can refuse a request says so in the spec (only the
/// liveness probe cannot).
#[test]
fn every_operation_documents_problem_answers() {
    let spec: serde_json::Value = serde_json::from_str(&boxoffice::app::openapi_spec()).unwrap();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
            if path == "/health/live" {
                continue;
            }
            let responses = &op["responses"];
            for range in ["4XX", "5XX"] {
                assert!(
                    responses[range]["content"]["application/problem+json"].is_object(),
                    "{method} {path} does not document {range} problem+json"
                );
            }
        }
    }
}

/// No schema wraps one reference in `allOf` (poem-openapi does that to hang
/// a description on an enum-typed field): openapi-python-client refuses
/// such a property ("Cannot take allOf a non-object") and drops the whole
/// model with it.
#[test]
fn no_schema_wraps_a_reference_in_all_of() {
    fn walk(value: &serde_json::Value, at: &str, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if map.contains_key("allOf") {
                    found.push(at.to_owned());
                }
                for (key, child) in map {
                    walk(child, &format!("{at}/{key}"), found);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{at}/{i}"), found);
                }
            }
            _ => {}
        }
    }
    let spec: serde_json::Value = serde_json::from_str(&boxoffice::app::openapi_spec()).unwrap();
    let mut found = Vec::new();
    walk(&spec, "", &mut found);
    assert!(found.is_empty(), "allOf at {found:?}");
}
