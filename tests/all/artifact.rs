//! The artifact contract of SPEC §2 over an OCI image layout: real component, real gpg
//! signatures, every rejection with its own reason.

use std::path::Path;
use std::sync::Arc;

use kiosk::artifact::{ArtifactError, LayoutSource, Part, SizeCaps, fetch_verified};
use kiosk::limits::SandboxLimits;
use kiosk::runtime::Installation;
use kiosk::trust::{SignatureError, TrustStore};
use kiosk::world::HOST_API_VERSION;

use crate::common::gpg::Gpg;
use crate::common::{Harness, guest_bytes, manifest_path};

struct Partner {
    gpg: Gpg,
    key: String,
    trust: TrustStore,
}

fn partner() -> Partner {
    let gpg = Gpg::new();
    let key = gpg.generate("Acme Release <release@acme.example>", "ed25519", "sign", "1y", None);
    let mut trust = TrustStore::default();
    trust.add("acme", &gpg.export(&key)).unwrap();
    Partner { gpg, key, trust }
}

fn publish(p: &Partner, dir: &Path, tag: &str, manifest: &[u8], wasm: &[u8]) {
    let sigs = vec![p.gpg.sign_bytes(&p.key, manifest, false), p.gpg.sign_bytes(&p.key, wasm, true)];
    LayoutSource::new(dir).write(tag, manifest, wasm, &sigs).unwrap();
}

async fn verify(
    p: &Partner,
    dir: &Path,
    tag: &str,
    caps: SizeCaps,
) -> Result<kiosk::artifact::VerifiedArtifact, ArtifactError> {
    fetch_verified(&LayoutSource::new(dir), "acme/budget-pacing", tag, &p.trust, &caps, &HOST_API_VERSION, None).await
}

/// Rewrites the OCI manifest behind `tag` with `edit`, as a hostile registry could.
fn edit_oci_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(&digest)).unwrap()).unwrap();
    edit(&mut manifest);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let new = kiosk::digest::Digest::of(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(new.hex()), &bytes).unwrap();
    index["manifests"][0]["digest"] = new.to_string().into();
    index["manifests"][0]["size"] = bytes.len().into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

#[tokio::test]
async fn a_signed_artifact_verifies_then_compiles_and_runs() {
    let p = partner();
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read(manifest_path("budget-pacing")).unwrap();
    let wasm = guest_bytes("budget-pacing");
    publish(&p, dir.path(), "1.4.34", &manifest, &wasm);
    let artifact = verify(&p, dir.path(), "1.4.34", SizeCaps::default()).await.unwrap();
    assert_eq!(artifact.manifest.app, "acme/budget-pacing");
    assert_eq!(artifact.signers.component.fingerprint, p.key);
    assert_eq!(artifact.component_digest, kiosk::digest::Digest::of(&wasm));

    let h = Harness::new(SandboxLimits::default());
    let component = h.runtime.load(&artifact.component).unwrap();
    let app = h.runtime.prepare(artifact.manifest, Arc::new(component));
    let inst = Installation::new("t1", "i1");
    h.runtime.install(&app, &inst, r#"{"apiKey":"k","threshold":0.1}"#).await.unwrap().result.unwrap();
    let out = h
        .runtime
        .invoke(&app, &inst, "evaluate", r#"{"campaignId":"c","budget":30,"flightDays":30,"dailySpend":[1]}"#)
        .await;
    assert!(out.unwrap().result.unwrap().contains(r#""status":"on-track""#));
}

#[tokio::test]
async fn every_broken_artifact_is_refused_with_its_own_reason() {
    let p = partner();
    let manifest = std::fs::read(manifest_path("budget-pacing")).unwrap();
    let wasm = guest_bytes("budget-pacing");
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        publish(&p, dir.path(), "1.4.34", &manifest, &wasm);
        dir
    };

    // Unsigned.
    let dir = tempfile::tempdir().unwrap();
    LayoutSource::new(dir.path()).write("1.4.34", &manifest, &wasm, &[]).unwrap();
    let err = verify(&p, dir.path(), "1.4.34", SizeCaps::default()).await.unwrap_err();
    assert!(matches!(err, ArtifactError::Signature(SignatureError::Unsigned)), "{err}");

    // The component tampered with in the registry's storage.
    let dir = fresh();
    let wasm_digest = kiosk::digest::Digest::of(&wasm);
    let blob = dir.path().join("blobs/sha256").join(wasm_digest.hex());
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let err = verify(&p, dir.path(), "1.4.34", SizeCaps::default()).await.unwrap_err();
    assert!(matches!(err, ArtifactError::DigestMismatch { part: Part::Component, .. }), "{err}");
    assert!(err.to_string().contains("does not match its digest"), "{err}");

    // Over the caps, refused from the descriptor before reading.
    let dir = fresh();
    let small = SizeCaps { app_manifest_bytes: 100, ..SizeCaps::default() };
    let err = verify(&p, dir.path(), "1.4.34", small).await.unwrap_err();
    assert!(matches!(err, ArtifactError::TooLarge { part: Part::AppManifest, cap: 100, .. }), "{err}");
    let small = SizeCaps { component_bytes: 1024, ..SizeCaps::default() };
    let err = verify(&p, dir.path(), "1.4.34", small).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("component (wasm layer) is {} bytes, over the operator's cap of 1024", wasm.len())),
        "{err}"
    );

    // Version differs from the tag.
    let dir = tempfile::tempdir().unwrap();
    publish(&p, dir.path(), "1.4.35", &manifest, &wasm);
    let err = verify(&p, dir.path(), "1.4.35", SizeCaps::default()).await.unwrap_err();
    assert_eq!(err.to_string(), r#"manifest version 1.4.34 does not equal the tag "1.4.35""#);

    // Registered under another app name of the same partner.
    let dir = fresh();
    let err = fetch_verified(
        &LayoutSource::new(dir.path()),
        "acme/other",
        "1.4.34",
        &p.trust,
        &SizeCaps::default(),
        &HOST_API_VERSION,
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ArtifactError::AppMismatch { .. }), "{err}");

    // Undeclared layer media type; a second wasm layer; another artifactType; absent artifactType is fine.
    let dir = fresh();
    edit_oci_manifest(dir.path(), |m| m["layers"][1]["mediaType"] = "application/octet-stream".into());
    let err = verify(&p, dir.path(), "1.4.34", SizeCaps::default()).await.unwrap_err();
    assert!(err.to_string().contains(r#"undeclared media type "application/octet-stream""#), "{err}");
    let dir = fresh();
    edit_oci_manifest(dir.path(), |m| {
        let wasm_layer = m["layers"][0].clone();
        m["layers"].as_array_mut().unwrap().push(wasm_layer);
    });
    let err = verify(&p, dir.path(), "1.4.34", SizeCaps::default()).await.unwrap_err();
    assert!(matches!(err, ArtifactError::WasmLayers { found: 2 }), "{err}");
    let dir = fresh();
    edit_oci_manifest(dir.path(), |m| m["artifactType"] = "application/vnd.other+type".into());
    let err = verify(&p, dir.path(), "1.4.34", SizeCaps::default()).await.unwrap_err();
    assert!(matches!(err, ArtifactError::ArtifactType { .. }), "{err}");
    let dir = fresh();
    edit_oci_manifest(dir.path(), |m| {
        m.as_object_mut().unwrap().remove("artifactType");
    });
    verify(&p, dir.path(), "1.4.34", SizeCaps::default()).await.expect("absent artifactType is accepted");
    let dir = fresh();
    edit_oci_manifest(dir.path(), |m| m["config"]["mediaType"] = "application/json".into());
    let err = verify(&p, dir.path(), "1.4.34", SizeCaps::default()).await.unwrap_err();
    assert!(matches!(err, ArtifactError::MediaType { part: Part::AppManifest, .. }), "{err}");

    // Unknown tag.
    let err = verify(&p, dir.path(), "9.9.9", SizeCaps::default()).await.unwrap_err();
    assert!(err.to_string().starts_with(r#"tag "9.9.9" not found in oci-layout:"#), "{err}");
}
