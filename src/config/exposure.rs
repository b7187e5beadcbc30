//! Which secrets a server may start with: the public development secret
//! and a random queue-token key only on a developer's machine (the
//! embedded default on loopback), strong and distinct secrets elsewhere.

use super::Settings;

/// Signs development tokens when no secret is configured. Anyone can read
/// it here, so only the embedded default listening on a loopback address
/// may use it (see [`Settings::check_exposure`]).
pub const DEV_JWT_SECRET: &str = "boxoffice-development-secret-do-not-use-in-production";

/// The shortest secret a server reachable from elsewhere accepts: 256 bits,
/// as HS256 needs to be as strong as its hash.
pub const MIN_SECRET_BYTES: usize = 32;

impl Settings {
    /// Whether identity tokens are checked with the public development
    /// secret (no key set, no public key, no secret of its own).
    pub fn uses_dev_secret(&self) -> bool {
        self.identity_secret() == DEV_JWT_SECRET && !self.uses_identity_provider_keys()
    }

    /// The HS256 secret of identity tokens: the configured one, else the
    /// development secret ([`Settings::check_exposure`] decides whether
    /// this server may use it).
    pub fn identity_secret(&self) -> &str {
        self.jwt_secret.as_deref().unwrap_or(DEV_JWT_SECRET)
    }

    /// The key queue tokens are signed with: the configured secret, else a
    /// random one made now (one process's tokens; the embedded default
    /// only, as [`Settings::check_exposure`] enforces).
    pub fn queue_token_key(&self) -> Vec<u8> {
        match &self.queue_token_secret {
            Some(secret) => secret.as_bytes().to_vec(),
            None => rand::random::<[u8; MIN_SECRET_BYTES]>().to_vec(),
        }
    }

    /// Whether the listen address is reachable from this machine only.
    pub fn listens_on_loopback(&self) -> bool {
        match self.listen.parse::<std::net::SocketAddr>() {
            Ok(addr) => addr.ip().is_loopback(),
            Err(_) => self
                .listen
                .rsplit_once(':')
                .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
        }
    }

    /// The embedded default on a loopback address: a developer's machine,
    /// where the built-in development secret and printed tokens are safe.
    pub fn is_local_development(&self) -> bool {
        self.is_embedded_default() && self.listens_on_loopback()
    }

    /// Refuses a server that anyone could forge tokens for: outside local
    /// development, identity tokens need a secret of their own (or an
    /// identity provider's keys) and queue tokens a different one, each
    /// at least [`MIN_SECRET_BYTES`] long. The queue secret is never the
    /// identity secret, even locally. One line, naming the variable.
    pub fn check_exposure(&self) -> Result<(), String> {
        if self.uses_identity_provider_keys()
            && (self.jwt_issuer.is_none() || self.jwt_audience.is_none())
        {
            return Err(
                "BOXOFFICE_JWT_ISSUER and BOXOFFICE_JWT_AUDIENCE (--jwt-issuer, --jwt-audience) are required with an identity provider's keys: without them a token the provider signed for another application would be accepted"
                    .into(),
            );
        }
        let local = self.is_local_development();
        let why_not_local =
            "a server with PostgreSQL or Redis, or listening beyond loopback, needs one";
        let strong = |secret: &str| secret.len() >= MIN_SECRET_BYTES && secret != DEV_JWT_SECRET;
        if !local {
            // A secret is refused when it is missing (where it is required)
            // or weak; `missing` and `weak` say which variable and why.
            let check = |secret: Option<&String>, required: bool, missing: String, weak: String| {
                match secret {
                    None if required => Err(missing),
                    Some(secret) if !strong(secret) => Err(weak),
                    _ => Ok(()),
                }
            };
            check(
                self.jwt_secret.as_ref(),
                !self.uses_identity_provider_keys(),
                format!(
                    "BOXOFFICE_JWT_SECRET (--jwt-secret) is not set and the built-in development secret is public: {why_not_local} of at least {MIN_SECRET_BYTES} bytes (or an identity provider's keys)"
                ),
                format!(
                    "BOXOFFICE_JWT_SECRET (--jwt-secret) is shorter than {MIN_SECRET_BYTES} bytes or the public development secret: {why_not_local} of at least {MIN_SECRET_BYTES} random bytes"
                ),
            )?;
            check(
                self.queue_token_secret.as_ref(),
                true,
                format!(
                    "BOXOFFICE_QUEUE_TOKEN_SECRET (--queue-token-secret) is not set: {why_not_local} of at least {MIN_SECRET_BYTES} bytes, shared by every instance (BOXOFFICE_JWT_SECRET signs identity tokens only)"
                ),
                format!(
                    "BOXOFFICE_QUEUE_TOKEN_SECRET (--queue-token-secret) is shorter than {MIN_SECRET_BYTES} bytes: {why_not_local} of at least {MIN_SECRET_BYTES} random bytes"
                ),
            )?;
        }
        if self.queue_token_secret.is_some()
            && self.queue_token_secret.as_deref() == Some(self.identity_secret())
        {
            return Err(
                "BOXOFFICE_QUEUE_TOKEN_SECRET is the same as BOXOFFICE_JWT_SECRET: queue tokens need a key of their own"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether an identity provider's public keys check identity tokens.
    pub fn uses_identity_provider_keys(&self) -> bool {
        self.jwt_jwks_file.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwt_jwks_url.is_some()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::Cli;

    fn exposed(args: &[&str]) -> Result<(), String> {
        let mut argv = vec!["boxoffice"];
        argv.extend_from_slice(args);
        Cli::parse_from(argv).settings.check_exposure()
    }

    const STRONG: &str = "0123456789abcdef0123456789abcdef";
    const OTHER: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn the_embedded_default_on_loopback_may_use_the_development_secrets() {
        assert_eq!(exposed(&[]), Ok(()));
        assert_eq!(exposed(&["--listen", "localhost:9000"]), Ok(()));
        assert_eq!(
            exposed(&["--listen", "[::1]:0", "--jwt-secret", "short"]),
            Ok(())
        );
        let settings = Settings::defaults();
        assert!(settings.uses_dev_secret() && settings.seeds_demo());
        assert_ne!(
            settings.queue_token_key(),
            settings.queue_token_key(),
            "no constant signs queue tokens"
        );
    }

    #[test]
    fn a_server_anyone_can_reach_refuses_public_or_short_secrets() {
        let postgres = ["--database-url", "postgres://u@localhost/db"];
        let on_postgres = |args: &[&'static str]| [&postgres[..], args].concat();
        let refused = |args: &[&str], names: &str| {
            let err = exposed(args).expect_err("must refuse to start");
            assert!(err.contains(names), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        };
        refused(&postgres, "BOXOFFICE_JWT_SECRET");
        refused(&["--listen", "0.0.0.0:8080"], "BOXOFFICE_JWT_SECRET");
        refused(
            &["--redis-url", "redis://127.0.0.1/"],
            "BOXOFFICE_JWT_SECRET",
        );
        refused(
            &on_postgres(&["--jwt-secret", "too-short"]),
            "BOXOFFICE_JWT_SECRET",
        );
        refused(
            &on_postgres(&["--jwt-secret", DEV_JWT_SECRET]),
            "BOXOFFICE_JWT_SECRET",
        );
        refused(
            &on_postgres(&["--jwt-secret", STRONG]),
            "BOXOFFICE_QUEUE_TOKEN_SECRET",
        );
        refused(
            &on_postgres(&["--jwt-secret", STRONG, "--queue-token-secret", "short"]),
            "BOXOFFICE_QUEUE_TOKEN_SECRET",
        );
        refused(
            &on_postgres(&["--jwt-secret", STRONG, "--queue-token-secret", STRONG]),
            "BOXOFFICE_QUEUE_TOKEN_SECRET",
        );
        assert_eq!(
            exposed(&on_postgres(&[
                "--jwt-secret",
                STRONG,
                "--queue-token-secret",
                OTHER
            ])),
            Ok(())
        );
        assert_eq!(
            exposed(&on_postgres(&[
                "--jwt-jwks-file",
                "keys.json",
                "--jwt-issuer",
                "https://idp.example/",
                "--jwt-audience",
                "boxoffice",
                "--queue-token-secret",
                OTHER
            ])),
            Ok(()),
            "an identity provider's keys need no HS256 secret"
        );
        refused(
            &on_postgres(&["--jwt-jwks-file", "keys.json", "--jwt-audience", "bo"]),
            "BOXOFFICE_JWT_ISSUER",
        );
        assert!(
            exposed(&[
                "--jwt-public-key-file",
                "idp.pem",
                "--jwt-issuer",
                "https://idp/"
            ])
            .is_err(),
            "required locally too"
        );
    }

    #[test]
    fn the_queue_secret_is_never_the_identity_secret_even_locally() {
        assert!(exposed(&["--jwt-secret", "same", "--queue-token-secret", "same"]).is_err());
        assert!(exposed(&["--queue-token-secret", DEV_JWT_SECRET]).is_err());
    }
}
