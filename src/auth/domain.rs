use serde::{Deserialize, Serialize};

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

impl Identity {
    /// Admins may do everything a user may.
    pub fn has(&self, required: Role) -> bool {
        match required {
            Role::User => true,
            Role::Admin => self.role == Role::Admin,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the token is malformed or its signature does not match")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("this operation needs the {0:?} role")]
    Forbidden(Role),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

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
