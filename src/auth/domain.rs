use serde::{Deserialize, Serialize};

use crate::kernel::Fault;
use crate::kernel::UserId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

/// Who is calling, as proven by a verified token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub user_id: UserId,
    pub role: Role,
}

impl Role {
    /// Whether this role may do what `required` may: admins may do
    /// everything a user may.
    pub fn grants(self, required: Role) -> bool {
        match required {
            Role::User => true,
            Role::Admin => self == Role::Admin,
        }
    }
}

impl Identity {
    pub fn has(&self, required: Role) -> bool {
        self.role.grants(required)
    }
}

/// The longest `sub` an identity provider's token may carry (Auth0's
/// `auth0|…`, Keycloak's and Cognito's UUIDs are far shorter).
pub const MAX_SUBJECT_BYTES: usize = 255;

/// Whom a verified token names, before it is mapped to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// boxoffice's own tokens (`boxoffice token`, development): the user id.
    User(UserId),
    /// An identity provider's subject, any string of 1 to
    /// [`MAX_SUBJECT_BYTES`] bytes: mapped to a user id kept for it.
    External(String),
}

impl Subject {
    /// A provider's `sub` claim, refused when empty or too long.
    pub fn external(sub: &str) -> Option<Self> {
        (!sub.is_empty() && sub.len() <= MAX_SUBJECT_BYTES).then(|| Self::External(sub.to_owned()))
    }
}

/// What a token's signature and claims vouch for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub subject: Subject,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token is malformed or its signature does not match")]
    Invalid,
    /// The token names a signing key (`kid`) the identity provider's key
    /// set does not have, as far as this server knows: the provider may
    /// have rotated its keys, so the set is worth fetching again.
    #[error("the token is signed with a key this server does not know")]
    UnknownKey,
    #[error("the token has expired")]
    Expired,
    #[error("this operation needs the {0:?} role")]
    Forbidden(Role),
    #[error(transparent)]
    Fault(Fault),
}

crate::kernel::module_error!(AuthError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_external_subject_is_one_to_255_bytes() {
        assert_eq!(
            Subject::external("auth0|5f1c"),
            Some(Subject::External("auth0|5f1c".into()))
        );
        assert!(Subject::external(&"x".repeat(MAX_SUBJECT_BYTES)).is_some());
        assert_eq!(Subject::external(&"x".repeat(MAX_SUBJECT_BYTES + 1)), None);
        assert_eq!(Subject::external(""), None);
    }

    #[test]
    fn admin_has_every_role_user_only_its_own() {
        let user = Identity {
            user_id: UserId(1),
            role: Role::User,
        };
        let admin = Identity {
            user_id: UserId(2),
            role: Role::Admin,
        };
        assert!(user.has(Role::User));
        assert!(!user.has(Role::Admin));
        assert!(admin.has(Role::User));
        assert!(admin.has(Role::Admin));
    }
}
