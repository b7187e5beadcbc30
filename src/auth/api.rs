//! Bearer-token security schemes for the HTTP API. Handlers take `UserAuth`
//! or `AdminAuth` as an argument; poem-openapi runs the checker first.

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};

use super::{
    domain::{AuthError, Identity, Role},
    usecase::Verifier,
};
use crate::{kernel::SystemClock, web::problem::Problem};

/// What the security schemes need, put into the request data by the app.
#[derive(Clone)]
pub struct AuthContext {
    pub verifier: Verifier,
}

/// Any signed-in user (admins included). `Authorization: Bearer <JWT>`.
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

async fn check_user(req: &Request, bearer: Bearer) -> poem::Result<Identity> {
    check(req, &bearer.token, Role::User).await
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
            AuthError::Forbidden(_) => Problem::forbidden(err.to_string()),
        }
    }
}
