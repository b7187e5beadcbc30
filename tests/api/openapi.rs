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
