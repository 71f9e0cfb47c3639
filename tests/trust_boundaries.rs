//! Trust boundaries of distribution (SPEC §2 step 5, issue 9). Layouts: every digest
//! read from `index.json` or a manifest is checked before it becomes a path, and a
//! document that does not parse is described, never quoted.

#![allow(clippy::unwrap_used)]

mod common;

use common::{guest_bytes, manifest_json};
use kiosk::artifact::{ArtifactError, BlobSource, LayoutSource, Part, SizeCaps, fetch_verified};
use kiosk::trust::TrustStore;
use kiosk::world::HOST_API_VERSION;
use serde_json::Value;

/// Text that must never come back in an error.
const MARKER: &str = "db_password=hunter2";

#[tokio::test]
async fn crafted_layouts_never_turn_digests_into_paths() {
    let dir = tempfile::tempdir().unwrap();
    let layout_dir = dir.path().join("layout");
    let layout = LayoutSource::new(&layout_dir);
    let (m, w) = (serde_json::to_vec(&manifest_json("budget-pacing")).unwrap(), guest_bytes("budget-pacing"));
    layout.write("1.4.34", &m, &w, &[]).unwrap();
    // A file the traversal would reach.
    std::fs::write(dir.path().join("secret"), MARKER).unwrap();
    let trust = TrustStore::default();
    let caps = SizeCaps::default();

    // index.json pointing outside the layout.
    let index_path = layout_dir.join("index.json");
    let good_index = std::fs::read_to_string(&index_path).unwrap();
    let mut index: Value = serde_json::from_str(&good_index).unwrap();
    for digest in ["sha256:../../secret", "sha256:../../../../../../etc/passwd", "sha256:ABCDEF", "md5:abc"] {
        index["manifests"][0]["digest"] = digest.into();
        std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
        let err = fetch_verified(&layout, "acme/budget-pacing", "1.4.34", &trust, &caps, &HOST_API_VERSION, None)
            .await
            .unwrap_err();
        assert!(matches!(err, ArtifactError::BadDigest { part: Part::OciManifest, .. }), "{digest}: {err}");
        assert!(!err.to_string().contains(MARKER) && !err.to_string().contains("Not a directory"), "{err}");
    }
    // A manifest whose layers point outside the layout: refused before any blob is read.
    std::fs::write(&index_path, &good_index).unwrap();
    let index: Value = serde_json::from_str(&good_index).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let manifest_file = layout_dir.join("blobs/sha256").join(manifest_digest.trim_start_matches("sha256:"));
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&manifest_file).unwrap()).unwrap();
    manifest["layers"][0]["digest"] = "sha256:../../../secret".into();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let crafted = kiosk::digest::Digest::of(&bytes);
    std::fs::write(layout_dir.join("blobs/sha256").join(crafted.hex()), &bytes).unwrap();
    let mut index = index;
    index["manifests"][0]["digest"] = crafted.as_str().into();
    index["manifests"][0]["size"] = bytes.len().into();
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let err = fetch_verified(&layout, "acme/budget-pacing", "1.4.34", &trust, &caps, &HOST_API_VERSION, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactError::BadDigest { part: Part::Component, .. }), "{err}");
    // The source refuses such a descriptor on its own too.
    let desc = kiosk::artifact::Descriptor {
        media_type: "application/wasm".into(),
        digest: "sha256:../../../secret".into(),
        size: MARKER.len() as u64,
        annotations: Default::default(),
    };
    let err = layout.fetch(Part::Component, &desc, 1 << 20).await.unwrap_err();
    assert!(matches!(err, ArtifactError::BadDigest { .. }), "{err}");

    // index.json that is not an index: described, never quoted.
    std::fs::write(&index_path, format!(r#"{{"schemaVersion": "{MARKER}"}}"#)).unwrap();
    let err = layout.resolve("1.4.34", 1 << 20).await.unwrap_err().to_string();
    assert!(
        err.contains("index.json has a missing field or a field of the wrong type") && !err.contains(MARKER),
        "{err}"
    );
}
