//! OpenPGP as Kiosk uses it (`kiosk_distribution::trust`): certificates an operator (or a
//! tenant) uploads and the detached signatures of an artifact. The corpus was made with
//! real gpg (an Ed25519 and an RSA-2048 key, never expiring; see tests/fuzz/README.md).
//!
//! - `openpgp_cert`: `TrustStore::add`, `parse_upload`, `cert_state`, `user_ids`,
//!   `armored`, `merge` and `apply_revocation` never panic; an accepted certificate holds
//!   no secret key and reads back from its armour with the same fingerprint; a bare
//!   signature is taken only as a key revocation, and revokes the corpus certificate only
//!   if it is, cryptographically, gpg's revocation of it; what is accepted, merged or
//!   revoked can be stored (armoured).
//! - `openpgp_signature`: `verify_blobs` never panics; a signature layer verifies the
//!   payload only if it holds one of the good signatures (compared ignoring the unhashed
//!   area, which no signature covers); a good signature verifies no other payload.

use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use sequoia_openpgp as openpgp;

use openpgp::packet::{Packet, Signature};
use openpgp::parse::{PacketParser, PacketParserResult, Parse};

use kiosk_distribution::trust::{self, Blob, CertState, SignatureError, TrustStore, Upload};

use crate::harness::{fuzz, fuzz_dir, mutated};

fn corpus_file(path: &str) -> Vec<u8> {
    std::fs::read(fuzz_dir().join("corpus").join(path)).unwrap()
}

/// Every signature packet in `bytes` (armoured or binary); what parses before an error.
fn signatures(bytes: &[u8]) -> Vec<Signature> {
    let mut out = Vec::new();
    let Ok(mut ppr) = PacketParser::from_bytes(bytes) else { return out };
    while let PacketParserResult::Some(pp) = ppr {
        let Ok((packet, next)) = pp.next() else { break };
        if let Packet::Signature(sig) = packet {
            out.push(sig);
        }
        ppr = next;
    }
    out
}

/// The same signature, cryptographically: what the signature covers and its value. The
/// unhashed area and the two-byte digest prefix are covered by nothing (a changed prefix
/// still verifies), so they do not count.
fn same_signature(a: &Signature, b: &Signature) -> bool {
    a.version() == b.version()
        && a.typ() == b.typ()
        && a.pk_algo() == b.pk_algo()
        && a.hash_algo() == b.hash_algo()
        && a.hashed_area() == b.hashed_area()
        && a.mpis() == b.mpis()
}

const FPR_ED25519: &str = "AA9984718BF4B172CF1E02C19085822B9307195F";
const FPR_RSA: &str = "C436407EB9AC773DC2D6B13589F81E829C59BE20";

#[rustfmt::skip]
const PGP_TOKENS: &[&[u8]] = &[
    b"-----BEGIN PGP SIGNATURE-----\n\n", b"-----END PGP SIGNATURE-----\n", b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n",
    b"-----END PGP PUBLIC KEY BLOCK-----\n", b":-----BEGIN PGP", b"=", b"\n", b"\xc2\x01", b"\x88\x75\x04\x00",
    b"\x98\x33\x04", b"\xb4\x05x <y>", b"\xff\xff\xff\xff", b"\x00\x00",
];

fn trust() -> TrustStore {
    let mut trust = TrustStore::default();
    trust.add("acme", &corpus_file("openpgp_cert/ed25519.asc")).unwrap();
    trust.add("acme", &corpus_file("openpgp_cert/rsa2048.asc")).unwrap();
    trust
}

/// The gpg-made corpus is what the targets assume: good signatures verify, the rest not.
#[test]
fn gpg_corpus_verifies_as_made() {
    let trust = trust();
    let payload = std::fs::read(fuzz_dir().join("fixtures/payload.json")).unwrap();
    let verify = |sig: &str| {
        trust.verify_blobs("acme", &[(Blob::Manifest, &payload)], &[corpus_file(&format!("openpgp_signature/{sig}"))])
    };
    for (sig, fpr) in [
        ("ed25519.asc", FPR_ED25519),
        ("ed25519.sig", FPR_ED25519),
        ("rsa2048.asc", FPR_RSA),
        ("two-signers.sig", FPR_ED25519),
    ] {
        let signers = verify(sig).unwrap_or_else(|e| panic!("{sig}: {e}"));
        assert_eq!(signers[0].fingerprint, fpr, "{sig}");
        assert_eq!(signers[0].partner, "acme");
    }
    for (sig, why) in [
        ("ed25519-sha1.sig", "refused by policy"),
        ("ed25519-other-data.sig", "over other bytes"),
        ("ed25519-inline.asc", "not an OpenPGP signature"),
    ] {
        let e = verify(sig).unwrap_err();
        assert!(e.to_string().contains(why), "{sig}: {e}");
    }
    // Another partner's trust does not count.
    let e = trust
        .verify_blobs("other", &[(Blob::Manifest, &payload)], &[corpus_file("openpgp_signature/ed25519.asc")])
        .unwrap_err();
    assert!(matches!(e, SignatureError::UnknownPartner { .. }), "{e}");
    // gpg's revocation certificate revokes the Ed25519 certificate.
    let Upload::Revocations(sigs) = trust::parse_upload(&corpus_file("openpgp_cert/ed25519-revocation.rev")).unwrap()
    else {
        panic!("a revocation certificate")
    };
    let Upload::Certs(certs) = trust::parse_upload(&corpus_file("openpgp_cert/ed25519.asc")).unwrap() else { panic!() };
    let revoked = trust::apply_revocation(certs[0].clone(), sigs[0].clone()).unwrap();
    assert!(matches!(trust::cert_state(&revoked, std::time::SystemTime::now()), CertState::Revoked { .. }));
    assert_eq!(trust::cert_state(&certs[0], std::time::SystemTime::now()), CertState::Valid);
}

fn check_cert(bytes: &[u8], base: &openpgp::Cert, revocation: &Signature) -> TestCaseResult {
    let now = std::time::SystemTime::now();
    let mut store = TrustStore::default();
    if let Ok(fprs) = store.add("acme", bytes) {
        prop_assert!(!fprs.is_empty());
        for fpr in &fprs {
            prop_assert!(fpr.len() >= 40 && fpr.bytes().all(|b| b.is_ascii_hexdigit()), "{}", fpr);
            let (partner, cert) = store.find(fpr).ok_or_else(|| TestCaseError::fail("added, not found"))?;
            prop_assert_eq!(partner, "acme");
            prop_assert!(!cert.is_tsk());
        }
    }
    match trust::parse_upload(bytes) {
        Ok(Upload::Certs(certs)) => {
            prop_assert!(!certs.is_empty());
            for cert in certs {
                prop_assert!(!cert.is_tsk(), "a secret key was accepted");
                let _ = trust::cert_state(&cert, now);
                for id in trust::user_ids(&cert) {
                    prop_assert!(!id.chars().any(char::is_control), "user id {:?}", id);
                }
                let armour = trust::armored(&cert).map_err(|e| TestCaseError::fail(e.to_string()))?;
                match trust::parse_upload(&armour) {
                    Ok(Upload::Certs(again)) => {
                        prop_assert_eq!(again.len(), 1);
                        prop_assert_eq!(again[0].fingerprint(), cert.fingerprint());
                    }
                    other => return Err(TestCaseError::fail(format!("armoured certificate reads back as {other:?}"))),
                }
                if cert.fingerprint() == base.fingerprint() {
                    let merged =
                        trust::merge(base.clone(), cert.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(merged.fingerprint(), base.fingerprint());
                    prop_assert!(trust::armored(&merged).is_ok(), "a merged certificate Kiosk cannot store");
                }
            }
        }
        Ok(Upload::Revocations(sigs)) => {
            prop_assert!(!sigs.is_empty());
            for sig in sigs {
                prop_assert_eq!(sig.typ(), openpgp::types::SignatureType::KeyRevocation);
                if let Ok(revoked) = trust::apply_revocation(base.clone(), sig.clone()) {
                    prop_assert!(matches!(trust::cert_state(&revoked, now), CertState::Revoked { .. }), "not revoked");
                    prop_assert!(
                        same_signature(&sig, revocation),
                        "another signature revoked the certificate: {:?}",
                        sig
                    );
                    prop_assert!(trust::armored(&revoked).is_ok(), "a revoked certificate Kiosk cannot store");
                }
            }
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

#[test]
fn openpgp_cert() {
    let Upload::Certs(certs) = trust::parse_upload(&corpus_file("openpgp_cert/ed25519.asc")).unwrap() else { panic!() };
    let base = certs[0].clone();
    let Upload::Revocations(revocations) =
        trust::parse_upload(&corpus_file("openpgp_cert/ed25519-revocation.rev")).unwrap()
    else {
        panic!("gpg's revocation certificate")
    };
    let revocation = revocations[0].clone();
    let strategy = prop_oneof![
        6 => mutated("openpgp_cert", PGP_TOKENS),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ];
    fuzz("openpgp_cert", strategy, |bytes| check_cert(&bytes, &base, &revocation));
}

fn check_signature(
    bytes: &[u8],
    trust: &TrustStore,
    payload: &[u8],
    good: &[Signature],
    good_layer: &[u8],
) -> TestCaseResult {
    match trust.verify_blobs("acme", &[(Blob::Manifest, payload)], &[bytes.to_vec()]) {
        Ok(signers) => {
            let found = signatures(bytes);
            prop_assert!(
                found.iter().any(|s| good.iter().any(|g| same_signature(s, g))),
                "a signature layer that holds no good signature verified: {:?}",
                found
            );
            prop_assert!([FPR_ED25519, FPR_RSA].contains(&signers[0].fingerprint.as_str()));
        }
        Err(e) => {
            let text = e.to_string();
            prop_assert!(!text.is_empty());
        }
    }
    // The same bytes as a payload: the good signature covers only the real one.
    if trust.verify_blobs("acme", &[(Blob::Manifest, bytes)], &[good_layer.to_vec()]).is_ok() {
        prop_assert_eq!(bytes, payload, "a good signature verified another payload");
    }
    Ok(())
}

#[test]
fn openpgp_signature() {
    let trust = trust();
    let payload = std::fs::read(fuzz_dir().join("fixtures/payload.json")).unwrap();
    let mut good = Vec::new();
    for sig in ["ed25519.asc", "ed25519.sig", "rsa2048.asc", "two-signers.sig"] {
        good.extend(signatures(&corpus_file(&format!("openpgp_signature/{sig}"))));
    }
    let good_layer = corpus_file("openpgp_signature/ed25519.sig");
    let strategy = prop_oneof![
        6 => mutated("openpgp_signature", PGP_TOKENS),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ];
    fuzz("openpgp_signature", strategy, |bytes| check_signature(&bytes, &trust, &payload, &good, &good_layer));
}
