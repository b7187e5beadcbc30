//! Bearer-token security schemes for the HTTP API. Handlers take `UserAuth`
//! or `AdminAuth` as an argument; poem-openapi runs the checker first.

use std::sync::Arc;

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};

use super::{
    domain::{AuthError, Identity, Role},
    ports::TokenCodec,
    usecase,
};
use crate::{kernel::SystemClock, web::problem::Problem};

/// What the security schemes need, put into the request data by the app.
#[derive(Clone)]
pub struct AuthContext {
    pub codec: Arc<dyn TokenCodec>,
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
    check(req, &bearer.token, Role::User)
}

async fn check_admin(req: &Request, bearer: Bearer) -> poem::Result<Identity> {
    check(req, &bearer.token, Role::Admin)
}

fn check(req: &Request, token: &str, required: Role) -> poem::Result<Identity> {
    let context = req.data::<AuthContext>().ok_or_else(|| {
        tracing::error!("AuthContext missing from request data");
        Problem::internal()
    })?;
    usecase::authenticate(context.codec.as_ref(), &SystemClock, token, required)
        .map_err(|err| Problem::from(err).into())
}

impl From<AuthError> for Problem {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Invalid | AuthError::Expired => Problem::unauthorized(err.to_string()),
            AuthError::Forbidden(_) => Problem::forbidden(err.to_string()),
            AuthError::Unexpected(cause) => {
                tracing::error!(error = ?cause, "authentication failed unexpectedly");
                Problem::internal()
            }
        }
    }
}
