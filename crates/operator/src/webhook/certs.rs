//! Certificates of the admission webhook in self-managed mode: a private CA and a serving
//! certificate for the webhook Service, generated with rcgen, read back with x509-parser, and
//! the pure decisions about them ("is it time to renew?", "what must the caBundle hold?").
//!
//! Everything here is a function of its arguments (time included), so the rotation rules are unit
//! tests rather than waits. The I/O around it (the Secret, the MutatingWebhookConfiguration)
//! lives in [`super::maintain`].
//!
//! Layout of the stored material (a `kubernetes.io/tls` Secret): `tls.crt`/`tls.key` the serving
//! certificate and key; `ca.crt` the CA bundle clients must trust, the *signing* CA first, then
//! older CAs kept until they expire so certificates they issued stay trusted during a rotation;
//! `ca.key` the signing CA's key (older CAs' keys are dropped: they never sign again).

use base64::Engine;
use jiff::{SignedDuration, Timestamp};
use rcgen::PublicKeyData;
use rustls::pki_types::{CertificateDer, pem::PemObject};

/// Secret keys.
pub const TLS_CRT: &str = "tls.crt";
/// Serving key (PKCS#8 PEM).
pub const TLS_KEY: &str = "tls.key";
/// CA bundle (PEM, signing CA first).
pub const CA_CRT: &str = "ca.crt";
/// Signing CA key (PKCS#8 PEM).
pub const CA_KEY: &str = "ca.key";

const DAY: i64 = 24 * 3600;

/// How long certificates live and when they are replaced. One struct so tests can shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertPolicy {
    /// Validity of a new CA.
    pub ca_validity: SignedDuration,
    /// A CA with less than this left is replaced (its successor is trusted alongside it until it
    /// expires). Not below `serving_validity`, so a serving certificate never outlives its CA.
    pub ca_renew_before: SignedDuration,
    /// Validity of a new serving certificate (capped at its CA's expiry).
    pub serving_validity: SignedDuration,
    /// A serving certificate with less than this left is replaced.
    pub serving_renew_before: SignedDuration,
    /// `notBefore` is set this far back, so peers whose clocks lag ours accept a fresh
    /// certificate at once.
    pub backdate: SignedDuration,
}

impl Default for CertPolicy {
    /// CA for a year, replaced with 90 days left; serving certificates for 90 days, replaced
    /// with 30 days left: a replica that misses checks for weeks still never serves an expired
    /// certificate.
    fn default() -> Self {
        Self {
            ca_validity: SignedDuration::from_secs(365 * DAY),
            ca_renew_before: SignedDuration::from_secs(90 * DAY),
            serving_validity: SignedDuration::from_secs(90 * DAY),
            serving_renew_before: SignedDuration::from_secs(30 * DAY),
            backdate: SignedDuration::from_secs(3600),
        }
    }
}

impl CertPolicy {
    /// Rejects policies under which a fresh certificate would already be due for renewal (the
    /// maintenance loop would then regenerate forever).
    pub fn validate(&self) -> Result<(), CertError> {
        let ok = self.serving_renew_before < self.serving_validity
            && self.ca_renew_before < self.ca_validity
            && self.ca_renew_before >= self.serving_renew_before
            && !self.backdate.is_negative()
            && self.serving_renew_before.is_positive();
        if ok { Ok(()) } else { Err(CertError::Policy(format!("{self:?}"))) }
    }
}

/// Why certificate material could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused to build a certificate or key.
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Stored material that cannot be used (names the part and why).
    #[error("{what}: {why}")]
    Invalid {
        /// Which part (`tls.crt`, `ca.key`, ...).
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the certificate or key.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A time outside what certificates can express.
    #[error("time {0} cannot be put in a certificate")]
    Time(Timestamp),
    /// A [`CertPolicy`] that would renew forever.
    #[error("inconsistent certificate policy {0}")]
    Policy(String),
}

fn invalid(what: &'static str, why: impl std::fmt::Display) -> CertError {
    CertError::Invalid { what, why: why.to_string() }
}

/// The PEM texts of one stored certificate set (the Secret's data).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Material {
    /// `ca.crt`: signing CA first, then older CAs still trusted.
    pub ca_bundle: String,
    /// `ca.key`: the signing CA's key.
    pub ca_key: String,
    /// `tls.crt`: the serving certificate (chain).
    pub cert: String,
    /// `tls.key`: the serving key.
    pub key: String,
}

/// What the decisions need to know about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DER encoding (identity: two certificates are the same if these are).
    pub der: Vec<u8>,
    /// Subject common name, for logs.
    pub common_name: String,
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// Whether basic constraints make it a CA.
    pub is_ca: bool,
}

impl CertInfo {
    /// Reads one DER certificate.
    pub fn from_der(der: &[u8], what: &'static str) -> Result<Self, CertError> {
        let (_, x) = x509_parser::parse_x509_certificate(der).map_err(|e| invalid(what, e))?;
        let validity = x.validity();
        let ts = |t: &x509_parser::time::ASN1Time| Timestamp::from_second(t.timestamp()).map_err(|e| invalid(what, e));
        let dns_names = match x.subject_alternative_name().map_err(|e| invalid(what, e))? {
            Some(san) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        // rcgen's issuer reconstruction requires every RDN of a CA's subject to be non-empty.
        if x.is_ca() && x.subject().iter().any(|rdn| rdn.iter().next().is_none()) {
            return Err(invalid(what, "CA subject has an empty relative distinguished name"));
        }
        Ok(Self {
            der: der.to_vec(),
            common_name: x.subject().iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or("").to_owned(),
            not_before: ts(&validity.not_before)?,
            not_after: ts(&validity.not_after)?,
            dns_names,
            is_ca: x.is_ca(),
        })
    }

    /// Whether this certificate's signature verifies with `issuer`'s key and names it as issuer.
    pub fn signed_by(&self, issuer: &CertInfo) -> bool {
        let (Ok((_, leaf)), Ok((_, ca))) =
            (x509_parser::parse_x509_certificate(&self.der), x509_parser::parse_x509_certificate(&issuer.der))
        else {
            return false;
        };
        leaf.issuer().as_raw() == ca.subject().as_raw() && leaf.verify_signature(Some(ca.public_key())).is_ok()
    }

    fn spki(&self) -> Vec<u8> {
        x509_parser::parse_x509_certificate(&self.der).map(|(_, x)| x.public_key().raw.to_vec()).unwrap_or_default()
    }

    /// Whether it has expired at `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        now >= self.not_after
    }

    /// PEM encoding.
    pub fn pem(&self) -> String {
        pem_encode(&self.der)
    }
}

/// PEM-encodes one DER certificate (64-column base64, as openssl writes it).
pub fn pem_encode(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Every certificate in a PEM text, in order.
pub fn parse_pem_certs(pem: &[u8], what: &'static str) -> Result<Vec<CertInfo>, CertError> {
    let mut out = Vec::new();
    for der in CertificateDer::pem_slice_iter(pem) {
        let der = der.map_err(|e| invalid(what, e))?;
        out.push(CertInfo::from_der(&der, what)?);
    }
    if out.is_empty() {
        return Err(invalid(what, "no certificate"));
    }
    Ok(out)
}

/// Concatenated PEM of a bundle.
pub fn bundle_pem(certs: &[CertInfo]) -> String {
    certs.iter().map(CertInfo::pem).collect()
}

/// Stored material, read and cross-checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// The trusted CAs, signing CA first.
    pub bundle: Vec<CertInfo>,
    /// The serving certificate (chain's first).
    pub leaf: CertInfo,
    /// The material itself.
    pub material: Material,
}

impl Inspected {
    /// The CA new serving certificates are issued by.
    pub fn signing_ca(&self) -> &CertInfo {
        &self.bundle[0]
    }
}

fn key_spki(pem: &str, what: &'static str) -> Result<Vec<u8>, CertError> {
    let key = rcgen::KeyPair::from_pem(pem).map_err(|e| invalid(what, e))?;
    Ok(key.subject_public_key_info())
}

/// Reads stored material; an error means it cannot be used and must be replaced.
pub fn inspect(m: &Material) -> Result<Inspected, CertError> {
    let bundle = parse_pem_certs(m.ca_bundle.as_bytes(), "ca.crt")?;
    if !bundle[0].is_ca {
        return Err(invalid("ca.crt", "the first certificate is not a CA"));
    }
    if key_spki(&m.ca_key, "ca.key")? != bundle[0].spki() {
        return Err(invalid("ca.key", "does not match the first certificate of ca.crt"));
    }
    let leaf = parse_pem_certs(m.cert.as_bytes(), "tls.crt")?.swap_remove(0);
    if key_spki(&m.key, "tls.key")? != leaf.spki() {
        return Err(invalid("tls.key", "does not match tls.crt"));
    }
    Ok(Inspected { bundle, leaf, material: m.clone() })
}

/// The one time rule: a certificate is due for renewal once less than `window` of it is left.
pub fn renewal_due(not_after: Timestamp, now: Timestamp, window: SignedDuration) -> bool {
    match not_after.checked_sub(window) {
        Ok(renew_at) => now >= renew_at,
        Err(_) => true,
    }
}

/// When [`renewal_due`] turns true (what a loop sleeps until).
pub fn renew_at(not_after: Timestamp, window: SignedDuration) -> Timestamp {
    not_after.checked_sub(window).unwrap_or(Timestamp::MIN)
}

/// What to do with the stored material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing usable is stored: a new CA and a serving certificate.
    Generate,
    /// The signing CA is near its end: a new signing CA, trusted alongside the old ones. The
    /// serving certificate stays until the new CA is in the caBundle (the next action then
    /// reissues it), so no client ever sees a certificate from a CA it does not trust.
    RotateCa,
    /// A new serving certificate from the signing CA (reason for logs).
    IssueServing(&'static str),
    /// Drop expired CAs from the bundle.
    Prune,
    /// All good.
    Keep,
}

/// Decides what the stored material needs at `now` for a Service reached by `names`.
/// `None`: nothing stored (or nothing usable).
pub fn decide(stored: Option<&Inspected>, names: &[String], now: Timestamp, policy: &CertPolicy) -> Action {
    let Some(s) = stored else { return Action::Generate };
    let ca = s.signing_ca();
    if renewal_due(ca.not_after, now, policy.ca_renew_before) {
        return Action::RotateCa;
    }
    if !s.leaf.signed_by(ca) {
        return Action::IssueServing("issued by another CA");
    }
    let mut have = s.leaf.dns_names.clone();
    let mut want = names.to_vec();
    have.sort();
    want.sort();
    if have != want {
        return Action::IssueServing("names changed");
    }
    if renewal_due(s.leaf.not_after, now, policy.serving_renew_before) {
        return Action::IssueServing("expires soon");
    }
    if s.bundle.iter().skip(1).any(|c| c.expired(now)) {
        return Action::Prune;
    }
    Action::Keep
}

/// The earliest time [`decide`] may answer something other than `Keep` for this material.
pub fn next_due(s: &Inspected, policy: &CertPolicy) -> Timestamp {
    let mut due = renew_at(s.signing_ca().not_after, policy.ca_renew_before)
        .min(renew_at(s.leaf.not_after, policy.serving_renew_before));
    for old in s.bundle.iter().skip(1) {
        due = due.min(old.not_after);
    }
    due
}

fn offset(t: Timestamp) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|_| CertError::Time(t))
}

fn shifted(t: Timestamp, d: SignedDuration) -> Result<Timestamp, CertError> {
    t.checked_add(d).map_err(|_| CertError::Time(t))
}

/// A new self-signed CA: (certificate PEM, key PEM).
pub fn new_ca(now: Timestamp, policy: &CertPolicy) -> Result<(String, String), CertError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    // Unique per CA (as kube's `<name>-ca@<unix time>`), so old and new CAs in one bundle never
    // share a subject.
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("omniscale-webhook-ca@{}", now.as_millisecond()));
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "omniscale");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset(shifted(now, -policy.backdate)?)?;
    params.not_after = offset(shifted(now, policy.ca_validity)?)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `names` signed by the CA (`ca_pem`, `ca_key_pem`), valid until
/// `policy.serving_validity` from now or the CA's own end, whichever is first: (PEM, key PEM).
pub fn issue_serving(
    ca_pem: &str,
    ca_key_pem: &str,
    names: &[String],
    now: Timestamp,
    policy: &CertPolicy,
) -> Result<(String, String), CertError> {
    let ca = parse_pem_certs(ca_pem.as_bytes(), "ca.crt")?.swap_remove(0);
    let ca_key = rcgen::KeyPair::from_pem(ca_key_pem).map_err(|e| invalid("ca.key", e))?;
    let issuer = rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(ca.der.as_slice()), ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, names.first().cloned().unwrap_or_default());
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature, rcgen::KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(shifted(now, -policy.backdate)?)?;
    params.not_after = offset(shifted(now, policy.serving_validity)?.min(ca.not_after))?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Fresh material: a new CA and a serving certificate from it.
pub fn generate(names: &[String], now: Timestamp, policy: &CertPolicy) -> Result<Material, CertError> {
    let (ca_bundle, ca_key) = new_ca(now, policy)?;
    let (cert, key) = issue_serving(&ca_bundle, &ca_key, names, now, policy)?;
    Ok(Material { ca_bundle, ca_key, cert, key })
}

/// The material after `action`. Expired non-signing CAs are dropped on every change.
pub fn apply(
    action: &Action,
    stored: Option<&Inspected>,
    names: &[String],
    now: Timestamp,
    policy: &CertPolicy,
) -> Result<Material, CertError> {
    let Some(s) = stored else { return generate(names, now, policy) };
    let kept =
        |from: usize| -> Vec<CertInfo> { s.bundle.iter().skip(from).filter(|c| !c.expired(now)).cloned().collect() };
    let mut m = s.material.clone();
    match action {
        Action::Generate => return generate(names, now, policy),
        Action::Keep => {}
        Action::RotateCa => {
            let (ca, ca_key) = new_ca(now, policy)?;
            // The outgoing signing CA stays trusted while the serving certificate it issued is
            // still in use (it is reissued only once the new CA is published).
            m.ca_bundle = ca + &bundle_pem(&kept(0));
            m.ca_key = ca_key;
        }
        Action::IssueServing(_) => {
            let ca = s.signing_ca().pem();
            let (cert, key) = issue_serving(&ca, &s.material.ca_key, names, now, policy)?;
            m.ca_bundle = ca + &bundle_pem(&kept(1));
            m.cert = cert;
            m.key = key;
        }
        Action::Prune => m.ca_bundle = s.signing_ca().pem() + &bundle_pem(&kept(1)),
    }
    Ok(m)
}

/// The caBundle to publish in a webhook whose current bundle is `published`, given this
/// replica's view of the Secret (`secret_bundle`, signing CA first).
///
/// Normally exactly the Secret's bundle. The exception protects rotations from a replica with
/// a stale view: CAs in `published` that are newer than this replica's signing CA and still
/// valid came from a Secret it has not read yet, and stay (removing them could break the
/// serving certificate another replica has just issued). Once this replica reads that Secret,
/// the bundles agree again.
pub fn bundle_to_publish(secret_bundle: &[CertInfo], published: &[CertInfo], now: Timestamp) -> Vec<CertInfo> {
    let mut out = secret_bundle.to_vec();
    let Some(signing) = secret_bundle.first() else { return out };
    for c in published {
        let newer = c.is_ca && c.not_before > signing.not_before && !c.expired(now);
        if newer && !out.iter().any(|o| o.der == c.der) {
            out.push(c.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    fn names() -> Vec<String> {
        ["omniscale-webhook.omniscale-system.svc", "omniscale-webhook.omniscale-system.svc.cluster.local"]
            .map(String::from)
            .to_vec()
    }

    fn t0() -> Timestamp {
        "2026-03-01T00:00:00Z".parse().unwrap()
    }

    fn days(n: i64) -> SignedDuration {
        SignedDuration::from_secs(n * DAY)
    }

    #[test]
    fn renewal_is_due_once_less_than_the_window_is_left() {
        let not_after = t0() + days(90);
        let window = days(30);
        assert!(!renewal_due(not_after, t0(), window));
        assert!(!renewal_due(not_after, t0() + days(59), window));
        assert!(renewal_due(not_after, t0() + days(60), window), "exactly 30 days left");
        assert!(renewal_due(not_after, t0() + days(100), window), "expired");
        assert_eq!(renew_at(not_after, window), t0() + days(60));
        // A window larger than time can express: always due, never panics.
        assert!(renewal_due(Timestamp::MIN, t0(), days(1)));
    }

    #[test]
    fn policies_that_would_renew_forever_are_rejected() {
        assert!(CertPolicy::default().validate().is_ok());
        let p = CertPolicy { serving_renew_before: days(90), ..CertPolicy::default() };
        assert!(p.validate().is_err());
        let p = CertPolicy { ca_renew_before: days(10), ..CertPolicy::default() };
        assert!(p.validate().is_err(), "CA renewed later than serving certificates");
    }

    #[test]
    fn generated_certificates_have_the_service_names_and_chain_to_the_ca() {
        let m = generate(&names(), t0(), &CertPolicy::default()).unwrap();
        let s = inspect(&m).unwrap();
        assert_eq!(s.bundle.len(), 1);
        assert!(s.signing_ca().is_ca && !s.leaf.is_ca);
        assert!(s.signing_ca().common_name.starts_with("omniscale-webhook-ca@"));
        assert_eq!(s.leaf.dns_names, names());
        assert!(s.leaf.signed_by(s.signing_ca()));
        assert_eq!(s.leaf.not_before, t0() - SignedDuration::from_hours(1));
        assert_eq!(s.leaf.not_after, t0() + days(90));
        assert_eq!(s.signing_ca().not_after, t0() + days(365));

        // What a TLS client does: verify the chain for the Service name against the CA alone
        // (on the wall clock, so generated for now).
        let now = Timestamp::now();
        let m = generate(&names(), now, &CertPolicy::default()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(m.ca_bundle.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
                .build()
                .unwrap();
        let leaf = CertificateDer::from_pem_slice(m.cert.as_bytes()).unwrap();
        let at = rustls::pki_types::UnixTime::now();
        for name in names() {
            let sn = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier.verify_server_cert(&leaf, &[], &sn, &[], at).unwrap();
        }
        let other = rustls::pki_types::ServerName::try_from("other.omniscale-system.svc").unwrap();
        assert!(verifier.verify_server_cert(&leaf, &[], &other, &[], at).is_err());
        // Another CA does not verify it.
        let stranger = generate(&names(), now, &CertPolicy::default()).unwrap();
        let stranger = inspect(&stranger).unwrap();
        assert!(!inspect(&m).unwrap().leaf.signed_by(stranger.signing_ca()));
    }

    #[test]
    fn unusable_material_is_reported_by_part() {
        let m = generate(&names(), t0(), &CertPolicy::default()).unwrap();
        let other = generate(&names(), t0(), &CertPolicy::default()).unwrap();
        let cases = [
            (Material { ca_bundle: String::new(), ..m.clone() }, "ca.crt"),
            (Material { ca_key: other.ca_key.clone(), ..m.clone() }, "ca.key"),
            (Material { key: other.key.clone(), ..m.clone() }, "tls.key"),
            (Material { cert: "garbage".into(), ..m.clone() }, "tls.crt"),
            (Material { ca_bundle: m.cert.clone(), ..m.clone() }, "ca.crt"),
        ];
        for (bad, part) in cases {
            match inspect(&bad) {
                Err(CertError::Invalid { what, .. }) => assert_eq!(what, part),
                other => panic!("{part}: {other:?}"),
            }
        }
        assert_eq!(decide(None, &names(), t0(), &CertPolicy::default()), Action::Generate);
    }

    #[test]
    fn decisions_follow_the_certificates_ages() {
        let p = CertPolicy::default();
        let m = generate(&names(), t0(), &p).unwrap();
        let s = inspect(&m).unwrap();
        assert_eq!(decide(Some(&s), &names(), t0(), &p), Action::Keep);
        assert_eq!(next_due(&s, &p), t0() + days(60));
        assert_eq!(decide(Some(&s), &names(), t0() + days(59), &p), Action::Keep);
        assert_eq!(decide(Some(&s), &names(), t0() + days(60), &p), Action::IssueServing("expires soon"));
        let mut more = names();
        more.push("omniscale-webhook.omniscale-system".into());
        assert_eq!(decide(Some(&s), &more, t0(), &p), Action::IssueServing("names changed"));
        // The CA has 90 days left at day 275: rotate it first, whatever the serving cert says.
        assert_eq!(decide(Some(&s), &names(), t0() + days(275), &p), Action::RotateCa);
    }

    #[test]
    fn renewing_the_serving_certificate_keeps_the_ca() {
        let p = CertPolicy::default();
        let s = inspect(&generate(&names(), t0(), &p).unwrap()).unwrap();
        let now = t0() + days(61);
        let action = decide(Some(&s), &names(), now, &p);
        let renewed = inspect(&apply(&action, Some(&s), &names(), now, &p).unwrap()).unwrap();
        assert_eq!(renewed.bundle, s.bundle);
        assert_ne!(renewed.leaf, s.leaf);
        assert_eq!(renewed.leaf.not_after, now + days(90));
        assert!(renewed.leaf.signed_by(renewed.signing_ca()));
        assert_eq!(decide(Some(&renewed), &names(), now, &p), Action::Keep);
    }

    #[test]
    fn ca_rotation_keeps_the_old_ca_trusted_until_it_expires() {
        let p = CertPolicy::default();
        let s = inspect(&generate(&names(), t0(), &p).unwrap()).unwrap();
        let now = t0() + days(280);
        assert_eq!(decide(Some(&s), &names(), now, &p), Action::RotateCa);
        let rotated = inspect(&apply(&Action::RotateCa, Some(&s), &names(), now, &p).unwrap()).unwrap();
        // New signing CA first, old one still trusted, serving certificate untouched.
        assert_eq!(rotated.bundle.len(), 2);
        assert_eq!(rotated.bundle[1], s.bundle[0]);
        assert_eq!(rotated.leaf, s.leaf);
        assert_eq!(rotated.signing_ca().not_after, now + days(365));
        // Then the serving certificate is reissued by the new CA...
        assert_eq!(decide(Some(&rotated), &names(), now, &p), Action::IssueServing("issued by another CA"));
        let reissued = apply(&Action::IssueServing("x"), Some(&rotated), &names(), now, &p).unwrap();
        let reissued = inspect(&reissued).unwrap();
        assert!(reissued.leaf.signed_by(reissued.signing_ca()));
        assert_eq!(reissued.bundle, rotated.bundle, "the old CA stays while it is valid");
        assert_eq!(decide(Some(&reissued), &names(), now, &p), Action::Keep);
        // The next renewal (60 days on) comes before the old CA expires: it stays trusted...
        assert_eq!(next_due(&reissued, &p), now + days(60));
        let at = now + days(60);
        let renewed = apply(&decide(Some(&reissued), &names(), at, &p), Some(&reissued), &names(), at, &p).unwrap();
        let renewed = inspect(&renewed).unwrap();
        assert_eq!(renewed.bundle, reissued.bundle);
        // ...until it expires, which is the next thing due; then it leaves the bundle.
        assert_eq!(next_due(&renewed, &p), t0() + days(365));
        let later = t0() + days(366);
        assert_eq!(decide(Some(&renewed), &names(), later, &p), Action::Prune);
        let pruned = inspect(&apply(&Action::Prune, Some(&renewed), &names(), later, &p).unwrap()).unwrap();
        assert_eq!(pruned.bundle, renewed.bundle[..1]);
        assert_eq!(pruned.leaf, renewed.leaf);
        assert_eq!(decide(Some(&pruned), &names(), later, &p), Action::Keep);
    }

    #[test]
    fn a_stale_replica_never_unpublishes_a_newer_ca() {
        let p = CertPolicy::default();
        let old = inspect(&generate(&names(), t0(), &p).unwrap()).unwrap();
        let rotated = inspect(&apply(&Action::RotateCa, Some(&old), &names(), t0() + days(280), &p).unwrap()).unwrap();
        let now = t0() + days(280);
        // The stale replica (old view) meets the published [new, old]: the new CA stays.
        let published = bundle_to_publish(&old.bundle, &rotated.bundle, now);
        assert_eq!(published.len(), 2);
        assert!(published.iter().any(|c| c.der == rotated.signing_ca().der));
        // The up-to-date replica publishes exactly its bundle, dropping strangers older than it.
        let stranger = inspect(&generate(&names(), t0() - days(1), &p).unwrap()).unwrap();
        let mut seen = rotated.bundle.clone();
        seen.push(stranger.bundle[0].clone());
        assert_eq!(bundle_to_publish(&rotated.bundle, &seen, now), rotated.bundle);
    }

    #[test]
    fn serving_certificates_never_outlive_their_ca() {
        let p = CertPolicy::default();
        let s = inspect(&generate(&names(), t0(), &p).unwrap()).unwrap();
        let now = t0() + days(300);
        let m = apply(&Action::IssueServing("x"), Some(&s), &names(), now, &p).unwrap();
        assert_eq!(inspect(&m).unwrap().leaf.not_after, t0() + days(365));
    }

    #[test]
    fn pem_round_trips() {
        let m = generate(&names(), t0(), &CertPolicy::default()).unwrap();
        let certs = parse_pem_certs(m.ca_bundle.as_bytes(), "ca.crt").unwrap();
        assert_eq!(bundle_pem(&certs), m.ca_bundle);
    }
}
