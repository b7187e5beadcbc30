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

/// Every operation lists its error statuses one by one (no `4XX`/`5XX`
/// ranges, which typed clients cannot use), each as problem+json naming
/// the `code`s it answers; the statuses any operation of its kind can
/// answer are there: 401 behind a token, 403 behind the admin role or a
/// queue token, 400/413/415 with a JSON body, 429 with `Retry-After`, and
/// 500 and 503 (with `Retry-After`) everywhere but the liveness probe.
#[test]
fn every_operation_lists_its_error_statuses_and_codes() {
    let spec: serde_json::Value = serde_json::from_str(&boxoffice::app::openapi_spec()).unwrap();
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            let errors: Vec<(u16, &serde_json::Value)> = responses
                .iter()
                .map(|(status, response)| {
                    let status: u16 = status
                        .parse()
                        .unwrap_or_else(|_| panic!("{id} documents the range {status}"));
                    (status, response)
                })
                .filter(|(status, _)| *status >= 400)
                .collect();
            if path == "/health/live" {
                assert!(errors.is_empty(), "{id} cannot fail");
                continue;
            }
            for (status, response) in &errors {
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{id} {status} is not a problem"
                );
                let description = response["description"].as_str().unwrap();
                let codes: Vec<&str> = description.split('`').skip(1).step_by(2).collect();
                assert!(
                    codes
                        .iter()
                        .any(|code| *code != "code" && !code.contains(' ')),
                    "{id} {status} names no code: {description}"
                );
                if [429, 503].contains(status) {
                    assert!(
                        response["headers"]["Retry-After"].is_object(),
                        "{id} {status} has no Retry-After"
                    );
                }
            }
            let has = |status: u16| errors.iter().any(|(s, _)| *s == status);
            let schemes: Vec<&str> = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_object)
                .flat_map(|schemes| schemes.keys().map(String::as_str))
                .collect();
            let mut expected = vec![500, 503];
            if !schemes.is_empty() {
                expected.push(401);
            }
            if schemes.contains(&"adminToken")
                || schemes.contains(&"queueToken") && schemes.contains(&"userToken")
            {
                expected.push(403);
            }
            if op.get("requestBody").is_some() {
                expected.extend([400, 413, 415]);
            }
            if op["parameters"].as_array().is_some_and(|p| !p.is_empty()) {
                expected.push(400);
            }
            for status in expected {
                assert!(has(status), "{id} does not document {status}");
            }
        }
    }
    assert!(operations >= 46, "only {operations} operations");
}

/// Each operation's refusals name the codes the domain answers for it: a
/// few that clients act on, checked in the document itself.
#[test]
fn the_codes_clients_act_on_are_listed_on_their_operations() {
    let spec: serde_json::Value = serde_json::from_str(&boxoffice::app::openapi_spec()).unwrap();
    let op = |path: &str, method: &str| spec["paths"][path][method]["responses"].clone();
    let lists = |responses: &serde_json::Value, status: &str, code: &str| {
        responses[status]["description"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("`{code}`")))
    };
    let hold = op("/v1/reservations", "post");
    assert!(lists(&hold, "409", "seat_unavailable"));
    assert!(lists(&hold, "409", "hold_limit"));
    assert!(lists(&hold, "403", "queue_not_admitted"));
    assert!(lists(&hold, "429", "rate_limited"));
    let pay = op("/v1/payments", "post");
    assert!(lists(&pay, "409", "insufficient_points"));
    assert!(lists(&pay, "409", "idempotency_conflict"));
    let issue = op("/v1/coupons/{id}/issue", "post");
    assert!(lists(&issue, "409", "sold_out"));
    assert!(lists(&issue, "409", "already_issued"));
    let enter = op("/v1/queue/tokens", "post");
    assert!(lists(&enter, "409", "queue_closed"));
    let cancel = op("/v1/payments/{id}/refunds", "post");
    assert!(lists(&cancel, "409", "cancel_window_closed"));
    assert!(lists(&cancel, "409", "not_confirmed"));
    // The one nullable field a client sets to null.
    assert_eq!(
        spec["components"]["schemas"]["QueueSettingsChange"]["properties"]["opensAt"]["nullable"],
        true
    );
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
