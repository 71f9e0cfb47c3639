//! OpenPGP verification of artifacts against partner certificates, with keys and
//! signatures made by real GnuPG.

use kiosk::trust::{Blob, Rejection, SignatureError, TrustStore};

use crate::common::gpg::Gpg;

const MANIFEST: &[u8] = br#"{"app":"acme/budget-pacing","version":"1.4.34"}"#;
const WASM: &[u8] = b"\0asm\x0d\0\x01\0 pretend component bytes";

fn not_signed(err: SignatureError) -> (Blob, Vec<Rejection>) {
    match err {
        SignatureError::NotSigned { blob, rejections, .. } => (blob, rejections),
        other => panic!("expected NotSigned, got {other}"),
    }
}

#[test]
fn ed25519_rsa_and_subkey_signatures_from_the_partner_verify() {
    let gpg = Gpg::new();
    let ed = gpg.generate("Acme Release <release@acme.example>", "ed25519", "sign", "1y", None);
    let rsa = gpg.generate("Acme Build <build@acme.example>", "rsa3072", "sign", "1y", None);
    let primary = gpg.generate("Acme CI <ci@acme.example>", "ed25519", "cert", "1y", None);
    gpg.add_subkey(&primary, "ed25519", "sign");
    let mut trust = TrustStore::default();
    for fpr in [&ed, &rsa, &primary] {
        assert_eq!(trust.add("acme", &gpg.export(fpr)).unwrap(), std::slice::from_ref(fpr));
    }

    // Armoured Ed25519 over the manifest, binary RSA over the component.
    let sigs = vec![gpg.sign_bytes(&ed, MANIFEST, false), gpg.sign_bytes(&rsa, WASM, true)];
    let verified = trust.verify_artifact("acme", MANIFEST, WASM, &sigs).unwrap();
    assert_eq!(verified.manifest.fingerprint, ed);
    assert_eq!(verified.component.fingerprint, rsa);
    assert_eq!(verified.component.partner, "acme");

    // A signing subkey: the signer is reported by its certificate's fingerprint.
    let sigs = vec![gpg.sign_bytes(&primary, MANIFEST, false), gpg.sign_bytes(&primary, WASM, false)];
    let verified = trust.verify_artifact("acme", MANIFEST, WASM, &sigs).unwrap();
    assert_eq!(verified.manifest.fingerprint, primary);
}

#[test]
fn each_untrusted_signature_is_refused_with_its_own_reason() {
    let gpg = Gpg::new();
    let acme = gpg.generate("Acme <release@acme.example>", "ed25519", "sign", "1y", None);
    let globex = gpg.generate("Globex <release@globex.example>", "ed25519", "sign", "1y", None);
    let stranger = gpg.generate("Stranger <x@stranger.example>", "ed25519", "sign", "1y", None);
    let expired = gpg.generate("Acme Old <old@acme.example>", "ed25519", "sign", "1d", Some("20200101T000000"));
    let revoked = gpg.generate("Acme Lost <lost@acme.example>", "ed25519", "sign", "1y", None);
    let mut trust = TrustStore::default();
    trust.add("acme", &gpg.export(&acme)).unwrap();
    trust.add("globex", &gpg.export(&globex)).unwrap();
    trust.add("acme", &gpg.export(&expired)).unwrap();
    trust.add("acme", &gpg.export(&revoked)).unwrap();
    let both = |fpr: &str| vec![gpg.sign_bytes(fpr, MANIFEST, false), gpg.sign_bytes(fpr, WASM, false)];

    // Unsigned.
    assert_eq!(trust.verify_artifact("acme", MANIFEST, WASM, &[]).unwrap_err(), SignatureError::Unsigned);

    // Unregistered key.
    let err = trust.verify_artifact("acme", MANIFEST, WASM, &both(&stranger)).unwrap_err();
    assert!(
        err.to_string().contains(&format!("signed by key {stranger}, which is not registered for any partner")),
        "{err}"
    );
    assert_eq!(not_signed(err).0, Blob::Manifest);

    // Another partner's key.
    let err = trust.verify_artifact("acme", MANIFEST, WASM, &both(&globex)).unwrap_err();
    assert!(err.to_string().contains(r#"registered for partner "globex", not for this app's partner"#), "{err}");

    // An expired certificate (signature made while it was valid, in 2020).
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), MANIFEST).unwrap();
    let old_sig = gpg.sign(&expired, file.path(), false, Some("20200101T120000"));
    std::fs::write(file.path(), WASM).unwrap();
    let old_wasm_sig = gpg.sign(&expired, file.path(), false, Some("20200101T120000"));
    let err = trust.verify_artifact("acme", MANIFEST, WASM, &[old_sig, old_wasm_sig]).unwrap_err();
    assert_eq!(not_signed(err.clone()).1, [Rejection::Expired { cert: expired.clone() }], "{err}");
    assert!(err.to_string().contains("which has expired"), "{err}");

    // A revoked certificate: signed before the revocation, which the operator imports later.
    let sigs = both(&revoked);
    assert!(trust.verify_artifact("acme", MANIFEST, WASM, &sigs).is_ok());
    gpg.revoke(&revoked);
    trust.add("acme", &gpg.export(&revoked)).unwrap();
    let err = trust.verify_artifact("acme", MANIFEST, WASM, &sigs).unwrap_err();
    assert_eq!(not_signed(err.clone()).1, [Rejection::Revoked { cert: revoked.clone() }], "{err}");

    // A good key, but the signature is over other bytes.
    let sigs = vec![gpg.sign_bytes(&acme, MANIFEST, false), gpg.sign_bytes(&acme, b"other bytes", false)];
    let err = trust.verify_artifact("acme", MANIFEST, WASM, &sigs).unwrap_err();
    let (blob, rejections) = not_signed(err.clone());
    assert_eq!(blob, Blob::Component);
    assert_eq!(rejections, [Rejection::OtherBytes { cert: acme.clone() }], "{err}");
    assert!(err.to_string().starts_with("the component (wasm blob) has no good signature"), "{err}");

    // Only the manifest signed.
    let err = trust.verify_artifact("acme", MANIFEST, WASM, &[gpg.sign_bytes(&acme, MANIFEST, true)]).unwrap_err();
    assert!(
        err.to_string().contains("component (wasm blob) has no good signature")
            && err.to_string().contains("none of the signatures covers it"),
        "{err}"
    );

    // A layer that is no signature at all.
    let err = trust.verify_artifact("acme", MANIFEST, WASM, &[b"hello".to_vec()]).unwrap_err();
    assert!(matches!(not_signed(err).1.as_slice(), [Rejection::Malformed(_)]));

    // A partner nobody registered.
    let err = trust.verify_artifact("initech", MANIFEST, WASM, &both(&acme)).unwrap_err();
    assert_eq!(err, SignatureError::UnknownPartner { partner: "initech".into() });
}

#[test]
fn secret_keys_are_not_accepted_as_partner_certificates() {
    let gpg = Gpg::new();
    let fpr = gpg.generate("Acme <release@acme.example>", "ed25519", "sign", "1y", None);
    let err = TrustStore::default().add("acme", &gpg.export_secret(&fpr)).unwrap_err();
    assert!(err.to_string().contains("contains secret key material"), "{err}");
    let err = TrustStore::default().add("acme", b"not a key").unwrap_err();
    assert!(
        err.to_string().contains("not an OpenPGP certificate") || err.to_string().contains("no certificate"),
        "{err}"
    );
}
