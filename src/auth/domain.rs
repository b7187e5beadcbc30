use serde::{Deserialize, Serialize};

use crate::kernel::Fault;
use crate::kernel::UserId;

/// A token's `role` claim (`user`, `staff`, `admin`), and what an
/// operation requires of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A buyer: their own wallet, holds, payments, coupons.
    User,
    /// Door staff: scans tickets and nothing else.
    Staff,
    /// An operator: everything.
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
    /// everything users and staff may; staff may only scan, so a staff
    /// token is no user's.
    pub fn grants(self, required: Role) -> bool {
        self == required || self == Role::Admin
    }

    /// Why this role may not do what `required` may, or `None` when it may.
    pub fn refusal(self, required: Role) -> Option<AuthError> {
        match (self, required) {
            _ if self.grants(required) => None,
            (Role::Staff, Role::User) => Some(AuthError::StaffScansOnly),
            _ => Some(AuthError::Forbidden(required)),
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
    /// A staff token where a user's is needed: staff accounts exist for
    /// the door, not to buy.
    #[error("staff tokens may only scan tickets")]
    StaffScansOnly,
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

    #[test]
    fn staff_may_scan_and_nothing_else_admins_may_scan_too() {
        let may = |role: Role, required| role.grants(required);
        assert!(may(Role::Staff, Role::Staff));
        assert!(may(Role::Admin, Role::Staff));
        assert!(!may(Role::User, Role::Staff));
        assert!(!may(Role::Staff, Role::User));
        assert!(!may(Role::Staff, Role::Admin));
    }

    #[test]
    fn a_staff_token_where_a_users_is_needed_is_told_it_only_scans() {
        assert!(matches!(
            Role::Staff.refusal(Role::User),
            Some(AuthError::StaffScansOnly)
        ));
        assert_eq!(
            AuthError::StaffScansOnly.to_string(),
            "staff tokens may only scan tickets"
        );
        assert!(matches!(
            Role::Staff.refusal(Role::Admin),
            Some(AuthError::Forbidden(Role::Admin))
        ));
        assert!(matches!(
            Role::User.refusal(Role::Staff),
            Some(AuthError::Forbidden(Role::Staff))
        ));
        for (role, required) in [
            (Role::User, Role::User),
            (Role::Staff, Role::Staff),
            (Role::Admin, Role::User),
            (Role::Admin, Role::Staff),
            (Role::Admin, Role::Admin),
        ] {
            assert!(role.refusal(required).is_none(), "{role:?} as {required:?}");
        }
    }

    #[test]
    fn roles_are_written_and_read_in_lowercase() {
        for (role, claim) in [
            (Role::User, "\"user\""),
            (Role::Staff, "\"staff\""),
            (Role::Admin, "\"admin\""),
        ] {
            assert_eq!(serde_json::to_string(&role).unwrap(), claim);
            assert_eq!(serde_json::from_str::<Role>(claim).unwrap(), role);
        }
        assert!(serde_json::from_str::<Role>("\"Staff\"").is_err());
    }
}
