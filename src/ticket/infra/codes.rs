//! Ticket codes: a compact JWS signed with Ed25519 (`alg: EdDSA`, the key's
//! RFC 7638 thumbprint as `kid`) that a door scanner checks offline with
//! the public keys of `GET /v1/tickets/keys`.
//!
//! Rotation: a signer holds one current key, which signs, and the keys it
//! replaced, which still verify (their tickets stay valid) until retired.

use std::sync::Arc;

use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding},
};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    jwk::{
        AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, KeyAlgorithm,
        OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
    },
};

use crate::{
    kernel::StoreError,
    ticket::{
        domain::{KeyRecord, PublicKey, SignedCode, TicketClaims},
        ports::TicketCodes,
    },
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not an Ed25519 private key in PKCS#8 PEM: {0}")]
    NotEd25519(String),
}

/// A code this server did not sign, or not with a key it still trusts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("forged or unreadable ticket code")]
pub struct Forged;

/// A key's public half: what scanners get and what verifies.
#[derive(Clone)]
pub struct PublicTicketKey {
    kid: String,
    x: String,
    decoding: DecodingKey,
}

impl PublicTicketKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn public_key(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            x: self.x.clone(),
        }
    }
}

/// A signing key and its public half.
#[derive(Clone)]
pub struct TicketKey {
    signing: SigningKey,
    encoding: EncodingKey,
    public: PublicTicketKey,
}

impl TicketKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        Self::from_seed(rand::random())
    }

    /// The key of a 32-byte Ed25519 seed (RFC 8032's private key).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self::from_signing(SigningKey::from_bytes(&seed))
    }

    /// A PKCS#8 PEM file as `openssl genpkey -algorithm ed25519` writes it.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(Self::from_signing)
            .map_err(|error| KeyError::NotEd25519(error.to_string()))
    }

    /// The private key as PKCS#8 PEM, as stored.
    pub fn to_pem(&self) -> String {
        self.signing
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .expect("an Ed25519 key always encodes as PKCS#8")
    }

    fn from_signing(signing: SigningKey) -> Self {
        let der = signing
            .to_pkcs8_der()
            .expect("an Ed25519 key always encodes as PKCS#8");
        let x = base64url(signing.verifying_key().as_bytes());
        // jsonwebtoken's `Jwk::from_encoding_key` panics for Ed keys: the
        // JWK is written out, only to take its thumbprint.
        let jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                ..CommonParameters::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: x.clone(),
            }),
        };
        let decoding =
            DecodingKey::from_ed_components(&x).expect("the key's own x is valid base64url");
        Self {
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            public: PublicTicketKey {
                kid: jwk.thumbprint(ThumbprintHash::SHA256),
                x,
                decoding,
            },
            signing,
        }
    }

    pub fn public(&self) -> &PublicTicketKey {
        &self.public
    }
}

/// Signs codes with the current key; reads codes of any key it holds.
#[derive(Clone)]
pub struct TicketSigner {
    current: TicketKey,
    older: Vec<PublicTicketKey>,
    validation: Validation,
}

impl TicketSigner {
    /// Signs with `current`; codes of the `older` keys still read.
    pub fn new(current: TicketKey, older: Vec<PublicTicketKey>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // A ticket is good until the show, which the door checks against
        // the schedule; the code itself carries no expiry.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        Self {
            current,
            older,
            validation,
        }
    }

    /// The signer after a rotation to `next`: it signs from now on, and
    /// every key this one trusts still verifies.
    pub fn rotate(&self, next: TicketKey) -> Self {
        let older = self.keys().cloned().collect();
        Self::new(next, older)
    }

    pub fn current_kid(&self) -> &str {
        self.current.public.kid()
    }

    pub fn sign(&self, claims: &TicketClaims) -> SignedCode {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.current_kid().to_owned());
        let code = jsonwebtoken::encode(&header, claims, &self.current.encoding)
            .expect("an Ed25519 key signs any claims");
        SignedCode {
            code,
            kid: self.current_kid().to_owned(),
        }
    }

    /// The claims of a code this server signed with a key it still holds.
    pub fn read(&self, code: &str) -> Result<TicketClaims, Forged> {
        let header = jsonwebtoken::decode_header(code).map_err(|_| Forged)?;
        let kid = header.kid.ok_or(Forged)?;
        let key = self.keys().find(|key| key.kid() == kid).ok_or(Forged)?;
        jsonwebtoken::decode::<TicketClaims>(code, &key.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| Forged)
    }

    /// Every key that verifies, current first.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys().map(PublicTicketKey::public_key).collect()
    }

    fn keys(&self) -> impl Iterator<Item = &PublicTicketKey> {
        std::iter::once(&self.current.public).chain(&self.older)
    }
}

pub fn records(stored: &[(KeyRecord, String)]) -> Vec<KeyRecord> {
    stored.iter().map(|(record, _)| record.clone()).collect()
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// [`TicketCodes`] over one signer that does not change.
#[derive(Clone)]
pub struct SignerCodes {
    signer: Arc<TicketSigner>,
}

impl SignerCodes {
    pub fn new(signer: TicketSigner) -> Self {
        Self {
            signer: Arc::new(signer),
        }
    }

    pub fn signer(&self) -> &TicketSigner {
        &self.signer
    }
}

impl TicketCodes for SignerCodes {
    async fn sign(&self, claims: &TicketClaims) -> Result<SignedCode, StoreError> {
        Ok(self.signer.sign(claims))
    }

    async fn public_keys(&self) -> Result<Vec<PublicKey>, StoreError> {
        Ok(self.signer.public_keys())
    }

    async fn verify(&self, code: &str) -> Result<Option<TicketClaims>, StoreError> {
        Ok(self.signer.read(code).ok())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn claims() -> TicketClaims {
        TicketClaims {
            tid: 7,
            sch: 3,
            seat: 41,
            sub: 42,
            ver: 1,
        }
    }

    #[test]
    fn a_signed_code_reads_back_its_claims_and_names_its_key() {
        let key = TicketKey::from_seed([9; 32]);
        let signer = TicketSigner::new(key.clone(), vec![]);
        let signed = signer.sign(&claims());
        assert_eq!(signer.read(&signed.code), Ok(claims()));
        let header = jsonwebtoken::decode_header(&signed.code).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(key.public().kid()));
        assert_eq!(signed.kid, key.public().kid());
        assert_eq!(signed.code.split('.').count(), 3);
        let payload: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                signed.code.split('.').nth(1).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            payload,
            serde_json::json!({"tid": 7, "sch": 3, "seat": 41, "sub": 42, "ver": 1}),
            "no expiry, nothing else"
        );
    }

    #[test]
    fn a_changed_payload_or_another_servers_key_is_forged() {
        let signer = TicketSigner::new(TicketKey::from_seed([1; 32]), vec![]);
        let code = signer.sign(&claims()).code;
        let mut parts: Vec<String> = code.split('.').map(str::to_owned).collect();
        let mut changed = claims();
        changed.seat = 40;
        parts[1] = base64url(&serde_json::to_vec(&changed).unwrap());
        assert_eq!(signer.read(&parts.join(".")), Err(Forged));

        let other = TicketSigner::new(TicketKey::from_seed([2; 32]), vec![]);
        assert_eq!(signer.read(&other.sign(&claims()).code), Err(Forged));
        assert_eq!(signer.read("not a code"), Err(Forged));
    }

    #[test]
    fn after_rotation_old_codes_verify_and_new_ones_use_the_new_key() {
        let old = TicketKey::from_seed([1; 32]);
        let before = TicketSigner::new(old.clone(), vec![]);
        let old_code = before.sign(&claims()).code;
        let new = TicketKey::from_seed([2; 32]);
        let after = before.rotate(new.clone());
        assert_eq!(after.read(&old_code), Ok(claims()));
        let new_code = after.sign(&claims()).code;
        assert_eq!(before.read(&new_code), Err(Forged));
        let kids: Vec<_> = after.public_keys().into_iter().map(|key| key.kid).collect();
        assert_eq!(
            kids,
            vec![new.public().kid().to_owned(), old.public().kid().to_owned()]
        );
    }

    #[test]
    fn the_kid_is_the_rfc_7638_thumbprint() {
        let key = TicketKey::from_seed([5; 32]);
        let x = &key.public().x;
        assert_eq!(x.len(), 43);
        // RFC 7638 §3.2: the required members, sorted, without spaces.
        let members = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let digest = <sha2::Sha256 as sha2::Digest>::digest(members.as_bytes());
        assert_eq!(key.public().kid(), base64url(&digest));
    }

    #[test]
    fn a_pem_key_from_openssl_loads_and_a_stored_one_reads_back() {
        // openssl genpkey -algorithm ed25519
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";
        let key = TicketKey::from_pem(pem).unwrap();
        let signer = TicketSigner::new(key.clone(), vec![]);
        assert_eq!(signer.read(&signer.sign(&claims()).code), Ok(claims()));
        let again = TicketKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.public().kid(), key.public().kid());
        assert!(matches!(
            TicketKey::from_pem("nope"),
            Err(KeyError::NotEd25519(_))
        ));
    }
}
