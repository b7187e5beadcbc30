//! Bearer-token security schemes for the HTTP API. Handlers take `UserAuth`,
//! `ScannerAuth` or `AdminAuth` as an argument; poem-openapi runs the
//! checker first.

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};

use super::{
    domain::{AuthError, Identity, Role},
    usecase::Verifier,
};
use crate::{
    kernel::SystemClock,
    web::problem::{Problem, document_refusal},
};

/// What the security schemes need, put into the request data by the app.
#[derive(Clone)]
pub struct AuthContext {
    pub verifier: Verifier,
}

/// Any signed-in user or admin (not staff). `Authorization: Bearer <JWT>`.
#[derive(SecurityScheme)]
#[oai(
    rename = "userToken",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "check_user"
)]
pub struct UserAuth(pub Identity);

/// A user with the `admin` role.
#[derive(SecurityScheme)]
#[oai(
    rename = "adminToken",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "check_admin"
)]
pub struct AdminAuth(pub Identity);

/// Someone who scans tickets at the door: a token with the `staff` role,
/// or an admin's; a user's is refused 403. The door's operations take it
/// as their first argument, e.g.
/// `async fn check_in(&self, auth: ScannerAuth, body: Json<..>)`; their
/// `403 forbidden` is documented for them (see [`document_role_refusals`]).
#[derive(SecurityScheme)]
#[oai(
    rename = "scannerToken",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "check_scanner"
)]
pub struct ScannerAuth(pub Identity);

/// The names [`UserAuth`] and [`ScannerAuth`] have in the OpenAPI document:
/// the schemes whose checker refuses some valid tokens for their role.
const ROLE_CHECKED_SCHEMES: [&str; 2] = ["userToken", "scannerToken"];

/// Documents, on an operation of the OpenAPI document, the 403 its security
/// scheme's checker may answer before the handler runs: an operation for
/// users refuses a staff token, the door a user's.
pub fn document_role_refusals(operation: &mut serde_json::Value) {
    let role_checked = operation
        .get("security")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .any(|schemes| {
            ROLE_CHECKED_SCHEMES
                .iter()
                .any(|scheme| schemes.get(scheme).is_some())
        });
    if role_checked {
        document_refusal(operation, 403, "forbidden");
    }
}

async fn check_user(req: &Request, bearer: Bearer) -> poem::Result<Identity> {
    check(req, &bearer.token, Role::User).await
}

async fn check_scanner(req: &Request, bearer: Bearer) -> poem::Result<Identity> {
    check(req, &bearer.token, Role::Staff).await
}

async fn check_admin(req: &Request, bearer: Bearer) -> poem::Result<Identity> {
    check(req, &bearer.token, Role::Admin).await
}

async fn check(req: &Request, token: &str, required: Role) -> poem::Result<Identity> {
    let context = req.data::<AuthContext>().ok_or_else(|| {
        tracing::error!("AuthContext missing from request data");
        Problem::internal()
    })?;
    context
        .verifier
        .authenticate(&SystemClock, token, required)
        .await
        .map_err(|err| Problem::from(err).into())
}

impl From<AuthError> for Problem {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Invalid | AuthError::UnknownKey | AuthError::Expired => {
                Problem::unauthorized(err.to_string())
            }
            AuthError::Fault(fault) => Problem::fault("identity check", &fault),
            AuthError::Forbidden(_) | AuthError::StaffScansOnly => {
                Problem::forbidden(err.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeDelta;
    use futures::{FutureExt, future::BoxFuture};
    use poem::{
        Endpoint, EndpointExt, IntoEndpoint,
        http::{Method, StatusCode, Uri},
    };
    use poem_openapi::{OpenApi, OpenApiService, payload::PlainText};

    use super::*;
    use crate::{
        auth::{infra::jwt::JwtCodec, ports::SubjectDirectory, usecase::mint_token},
        kernel::UserId,
    };

    const SECRET: &[u8] = b"a-secret-for-the-scanner-guard-tests";

    /// Our own tokens name their user: never asked.
    struct NoSubjects;

    impl SubjectDirectory for NoSubjects {
        fn user_for<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<UserId, AuthError>> {
            async { Err(AuthError::Invalid) }.boxed()
        }
    }

    /// A door, a wallet and an operator's page, each answering the role it let in.
    struct Api;

    #[OpenApi]
    impl Api {
        #[oai(path = "/door", method = "post")]
        async fn door(&self, auth: ScannerAuth) -> PlainText<String> {
            PlainText(format!("{:?}", auth.0.role))
        }

        #[oai(path = "/wallet", method = "get")]
        async fn wallet(&self, auth: UserAuth) -> PlainText<String> {
            PlainText(format!("{:?}", auth.0.role))
        }

        #[oai(path = "/admin", method = "get")]
        async fn admin(&self, auth: AdminAuth) -> PlainText<String> {
            PlainText(format!("{:?}", auth.0.role))
        }
    }

    /// The status and body of `method path` with a `role` token.
    async fn ask(method: Method, path: &str, role: Role) -> (StatusCode, String) {
        let context = AuthContext {
            verifier: Verifier {
                codec: Arc::new(JwtCodec::new(SECRET)),
                keys: None,
                subjects: Arc::new(NoSubjects),
            },
        };
        let api = OpenApiService::new(Api, "guards", "1")
            .into_endpoint()
            .data(context);
        let codec = JwtCodec::new(SECRET);
        let token = mint_token(&codec, &SystemClock, UserId(5), role, TimeDelta::minutes(5));
        let req = poem::Request::builder()
            .method(method)
            .uri(path.parse::<Uri>().unwrap())
            .header("authorization", format!("Bearer {}", token.unwrap()))
            .finish();
        let resp = api.get_response(req).await;
        let status = resp.status();
        (status, resp.into_body().into_string().await.unwrap())
    }

    #[tokio::test]
    async fn the_door_lets_staff_and_admins_in_and_refuses_users() {
        assert_eq!(
            ask(Method::POST, "/door", Role::Staff).await,
            (StatusCode::OK, "Staff".into())
        );
        assert_eq!(
            ask(Method::POST, "/door", Role::Admin).await,
            (StatusCode::OK, "Admin".into())
        );
        let (status, body) = ask(Method::POST, "/door", Role::User).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["code"], "forbidden");
    }

    #[tokio::test]
    async fn a_staff_token_is_refused_where_a_users_or_an_admins_is_needed() {
        let (status, body) = ask(Method::GET, "/wallet", Role::Staff).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["code"], "forbidden");
        assert_eq!(problem["detail"], "staff tokens may only scan tickets");
        let (status, _) = ask(Method::GET, "/admin", Role::Staff).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            ask(Method::GET, "/wallet", Role::User).await,
            (StatusCode::OK, "User".into())
        );
    }

    #[test]
    fn operations_for_users_and_the_door_document_their_role_refusal_and_no_others() {
        let problem = serde_json::json!({"application/problem+json": {}});
        let op = |scheme: &str| {
            serde_json::json!({
                "security": [{scheme: []}],
                "responses": {"401": {"description": "Refused; `code`: `unauthorized`", "content": problem}},
            })
        };
        for scheme in ["userToken", "scannerToken"] {
            let mut operation = op(scheme);
            document_role_refusals(&mut operation);
            assert_eq!(
                operation["responses"]["403"]["description"], "Refused; `code`: `forbidden`",
                "{scheme}"
            );
        }
        let mut status = op("queueToken");
        document_role_refusals(&mut status);
        assert!(status["responses"].get("403").is_none());
    }
}
