//! OCI documents, references and a registry's challenge (`kiosk_distribution::artifact`
//! and `registry`): what a registry or a layout directory hands Kiosk.
//!
//! - `oci_manifest`: an OCI image manifest, parsed alone (round trip, digests checked
//!   well-formed) and as the tag's manifest of an in-memory source holding a real signed
//!   artifact (fixtures, signed with gpg) and decoys (another version, another app, a
//!   component signed alone, an unsigned one): `fetch_verified` never panics, and what
//!   it accepts is exactly the signed manifest and a signed component, under the digest
//!   of the bytes served; its refusals carry no control character.
//! - `oci_index`: an OCI layout's `index.json`, read by `LayoutSource` from a directory
//!   holding the same artifacts: accepted only as the real artifact.
//! - `reference`: `ArtifactRef::parse` and `parse_repository`, `Digest::parse`: a parsed
//!   reference prints back to text that parses to the same reference, both grammars
//!   agree, and every accepted part is valid.
//! - `challenge`: `WWW-Authenticate` challenges: never panics; a challenge printed with
//!   quoted parameters parses back to itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde::{Deserialize, Serialize};

use kiosk_distribution::artifact::{
    self, ArtifactError, ArtifactRef, BlobSource, Descriptor, LayoutSource, OCI_MANIFEST, OciManifest, Part, SizeCaps,
};
use kiosk_distribution::registry::parse_challenge;
use kiosk_distribution::trust::{Blob, TrustStore};
use kiosk_domain::digest::Digest;

use crate::harness::{fuzz, fuzz_dir, json_value, mutated, text};

const APP: &str = "acme/budget-pacing";
const TAG: &str = "1.4.34";

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fuzz_dir().join("fixtures").join(name)).unwrap()
}

/// `sha256:` and 64 lowercase hex digits, checked by hand.
fn well_formed(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The real artifact and its decoys, every blob by digest, and the partner's trust.
struct Artifacts {
    trust: TrustStore,
    blobs: HashMap<String, Vec<u8>>,
    /// The real artifact's OCI manifest.
    oci: Vec<u8>,
    manifest: Vec<u8>,
    /// Components that carry a good signature of the partner.
    signed_components: Vec<Vec<u8>>,
    /// The OCI manifests of the decoys (each refused as a whole).
    decoys: Vec<(String, kiosk_distribution::publish::ArtifactBlobs)>,
}

fn artifacts() -> Artifacts {
    use kiosk_distribution::publish::assemble;
    let mut trust = TrustStore::default();
    trust.add("acme", &std::fs::read(fuzz_dir().join("corpus/openpgp_cert/ed25519.asc")).unwrap()).unwrap();
    let sig = |name: &str| fixture(&format!("{name}.sig"));
    let real =
        assemble(&fixture("payload.json"), &fixture("component.wasm"), &[sig("payload.json"), sig("component.wasm")]);
    let decoys = vec![
        // Signed, but version 1.5.0 (and a component signed alone).
        (
            "1.5.0".to_string(),
            assemble(
                &fixture("payload-1.5.0.json"),
                &fixture("component-other.wasm"),
                &[sig("payload-1.5.0.json"), sig("component-other.wasm")],
            ),
        ),
        // Signed, but another app.
        (
            "other-app".to_string(),
            assemble(
                &fixture("payload-other-app.json"),
                &fixture("component.wasm"),
                &[sig("payload-other-app.json"), sig("component.wasm")],
            ),
        ),
        // An unsigned component.
        (
            "unsigned".to_string(),
            assemble(&fixture("payload.json"), &fixture("component-unsigned.wasm"), &[sig("payload.json")]),
        ),
    ];
    let mut blobs = HashMap::new();
    for a in std::iter::once(&real).chain(decoys.iter().map(|(_, a)| a)) {
        blobs.insert(a.config.digest.clone(), a.config_bytes.clone());
        for (d, bytes) in &a.layers {
            blobs.insert(d.digest.clone(), bytes.clone());
        }
        blobs.insert(a.manifest_digest.to_string(), a.manifest.clone());
    }
    Artifacts {
        trust,
        blobs,
        oci: real.manifest.clone(),
        manifest: fixture("payload.json"),
        signed_components: vec![fixture("component.wasm"), fixture("component-other.wasm")],
        decoys,
    }
}

/// A registry in memory: the tag's manifest is the case's bytes; blobs by digest.
struct MemorySource<'a> {
    oci: &'a [u8],
    blobs: &'a HashMap<String, Vec<u8>>,
}

impl BlobSource for MemorySource<'_> {
    fn name(&self) -> String {
        "memory".into()
    }

    async fn resolve(&self, _tag: &str, cap: u64) -> Result<(Descriptor, Vec<u8>), ArtifactError> {
        let desc = Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(self.oci).to_string(),
            size: self.oci.len() as u64,
            annotations: BTreeMap::new(),
        };
        artifact::check_cap(Part::OciManifest, &desc, cap)?;
        let bytes = artifact::read_verified(Part::OciManifest, &desc, self.oci)?;
        Ok((desc, bytes))
    }

    async fn fetch(&self, part: Part, desc: &Descriptor, cap: u64) -> Result<Vec<u8>, ArtifactError> {
        artifact::check_cap(part, desc, cap)?;
        artifact::check_digest(part, desc)?;
        let bytes = self.blobs.get(&desc.digest).ok_or_else(|| ArtifactError::Source {
            source_name: self.name(),
            message: format!("{part}: no such blob"),
        })?;
        artifact::read_verified(part, desc, &bytes[..])
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// What `fetch_verified` gave for the real artifact's tag: exactly the signed manifest and
/// a signed component, or a refusal without control characters.
fn judge(a: &Artifacts, served: &[u8], result: Result<artifact::VerifiedArtifact, ArtifactError>) -> TestCaseResult {
    match result {
        Ok(v) => {
            prop_assert_eq!(&v.digest, &Digest::of(served), "the pinned digest is the served bytes'");
            prop_assert_eq!(&v.manifest_bytes, &a.manifest, "an accepted manifest is the signed one");
            prop_assert!(a.signed_components.contains(&v.component), "an accepted component is a signed one");
            prop_assert_eq!(&v.component_digest, &Digest::of(&v.component));
            prop_assert_eq!(v.manifest.version.to_string(), TAG);
            prop_assert_eq!(v.manifest.app.as_str(), APP);
            prop_assert_eq!(v.signers.manifest.partner.as_str(), "acme");
            for (digest, bytes) in &v.blobs {
                prop_assert!(well_formed(digest) && Digest::of(bytes).as_str() == digest, "blob {}", digest);
            }
            let sigs: Vec<Vec<u8>> = a.blobs.values().cloned().collect();
            let signed = a.trust.verify_blobs(
                "acme",
                &[(Blob::Manifest, &v.manifest_bytes), (Blob::Component, &v.component)],
                &sigs,
            );
            prop_assert!(signed.is_ok(), "accepted bytes verify on their own");
        }
        Err(e) => {
            let text = e.to_string();
            prop_assert!(!text.chars().any(char::is_control), "a refusal carries control characters: {:?}", text);
        }
    }
    Ok(())
}

/// The OCI manifest alone: parse, round trip, digests.
fn check_document(bytes: &[u8]) -> TestCaseResult {
    if let Ok(m) = serde_json::from_slice::<OciManifest>(bytes) {
        let text = serde_json::to_vec(&m).unwrap();
        let again: OciManifest =
            serde_json::from_slice(&text).map_err(|e| TestCaseError::fail(format!("round trip: {e}")))?;
        prop_assert_eq!(&again.config, &m.config);
        prop_assert_eq!(&again.layers, &m.layers);
        prop_assert_eq!(serde_json::to_vec(&again).unwrap(), text);
        for d in std::iter::once(&m.config).chain(&m.layers) {
            if artifact::check_digest(Part::Component, d).is_ok() {
                prop_assert!(well_formed(&d.digest), "accepted digest {:?}", d.digest);
            } else {
                prop_assert!(!well_formed(&d.digest), "refused digest {:?}", d.digest);
            }
            let text = artifact::check_digest(Part::Component, d).err().map(|e| e.to_string()).unwrap_or_default();
            prop_assert!(!text.chars().any(char::is_control), "{:?}", text);
        }
    }
    if let Ok(d) = serde_json::from_slice::<Descriptor>(bytes) {
        let again: Descriptor = serde_json::from_slice(&serde_json::to_vec(&d).unwrap()).unwrap();
        prop_assert_eq!(again, d);
    }
    Ok(())
}

#[rustfmt::skip]
const OCI_TOKENS: &[&[u8]] = &[
    b"\"mediaType\": \"application/wasm\",", b"\"mediaType\": \"image/svg+xml\",", b"\"mediaType\": \"image/png\",",
    b"\"size\": 18446744073709551615,", b"\"size\": -1,", b"\"digest\": \"sha256:../../etc/passwd\",",
    b"\"digest\": \"md5:abc\",", b"\"artifactType\": \"application/x\",", b"\"subject\": {},",
    b"\"org.opencontainers.image.ref.name\": \"1.4.34\"", b"sha256:", b"\"layers\": [],",
];

fn oci_documents(a: &Artifacts) -> BoxedStrategy<Vec<u8>> {
    let mut bases = vec![a.oci.clone()];
    bases.extend(a.decoys.iter().map(|(_, d)| d.manifest.clone()));
    let bases = Arc::new(bases);
    prop_oneof![
        5 => mutated("oci_manifest", OCI_TOKENS),
        3 => (0..bases.len(), proptest::collection::vec((any::<prop::sample::Index>(), prop::sample::select(OCI_TOKENS)), 1..4))
            .prop_map(move |(i, edits)| {
                // A token inserted at a place of the real artifact's manifest.
                let mut out = bases[i].clone();
                for (at, token) in edits {
                    let at = at.index(out.len() + 1);
                    out.splice(at..at, token.iter().copied());
                }
                out
            }),
        2 => json_value(&["schemaVersion", "mediaType", "artifactType", "config", "layers", "digest", "size", "annotations"])
            .prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
    .boxed()
}

#[test]
fn oci_manifest() {
    let a = artifacts();
    let rt = runtime();
    let caps = SizeCaps::default();
    let host = kiosk_runtime::world::HOST_API_VERSION;
    // The real artifact verifies, its decoys do not.
    let source = MemorySource { oci: &a.oci, blobs: &a.blobs };
    let v = rt.block_on(artifact::fetch_verified(&source, APP, TAG, &a.trust, &caps, &host, None)).unwrap();
    assert_eq!(v.component, fixture("component.wasm"));
    for (name, decoy) in &a.decoys {
        let source = MemorySource { oci: &decoy.manifest, blobs: &a.blobs };
        let refused = rt.block_on(artifact::fetch_verified(&source, APP, TAG, &a.trust, &caps, &host, None));
        assert!(refused.is_err(), "decoy {name} was accepted");
    }
    fuzz("oci_manifest", oci_documents(&a), |bytes| {
        check_document(&bytes)?;
        let source = MemorySource { oci: &bytes, blobs: &a.blobs };
        let result = rt.block_on(artifact::fetch_verified(&source, APP, TAG, &a.trust, &caps, &host, None));
        judge(&a, &bytes, result)
    });
}

#[rustfmt::skip]
const INDEX_TOKENS: &[&[u8]] = &[
    b"\"org.opencontainers.image.ref.name\": \"1.4.34\"", b"\"org.opencontainers.image.ref.name\": \"1.5.0\"",
    b"\"mediaType\": \"application/vnd.oci.image.manifest.v1+json\",", b"\"digest\": \"sha256:../../../etc/passwd\",",
    b"\"size\": 0,", b"\"manifests\": [],", b"\"annotations\": {},",
];

#[test]
fn oci_index() {
    let a = artifacts();
    let rt = runtime();
    let caps = SizeCaps::default();
    let host = kiosk_runtime::world::HOST_API_VERSION;
    let dir = tempfile::tempdir().unwrap();
    let layout = LayoutSource::new(dir.path());
    for (tag, decoy) in &a.decoys {
        layout.write_artifact(tag, decoy).unwrap();
    }
    let real = kiosk_distribution::publish::assemble(
        &fixture("payload.json"),
        &fixture("component.wasm"),
        &[fixture("payload.json.sig"), fixture("component.wasm.sig")],
    );
    layout.write_artifact(TAG, &real).unwrap();
    let index = std::fs::read(dir.path().join("index.json")).unwrap();
    // The real tag verifies from the layout as written.
    rt.block_on(artifact::fetch_verified(&layout, APP, TAG, &a.trust, &caps, &host, None)).unwrap();
    let bases = Arc::new(vec![index]);
    let strategy = prop_oneof![
        3 => mutated("oci_index", INDEX_TOKENS),
        3 => (proptest::collection::vec((any::<prop::sample::Index>(), prop::sample::select(INDEX_TOKENS)), 1..4))
            .prop_map(move |edits| {
                let mut out = bases[0].clone();
                for (at, token) in edits {
                    let at = at.index(out.len() + 1);
                    out.splice(at..at, token.iter().copied());
                }
                out
            }),
        1 => json_value(&["schemaVersion", "manifests", "mediaType", "digest", "size", "annotations", "org.opencontainers.image.ref.name"])
            .prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ];
    let real_oci = real.manifest.clone();
    fuzz("oci_index", strategy, |bytes| {
        std::fs::write(dir.path().join("index.json"), &bytes).unwrap();
        let result = rt.block_on(artifact::fetch_verified(&layout, APP, TAG, &a.trust, &caps, &host, None));
        judge(&a, &real_oci, result)
    });
}

/// Regenerates the real artifact's OCI manifest and layout index in the corpus (run by
/// hand after changing the fixtures: `cargo test --release --test fuzz -- --ignored write_oci_corpus`).
#[test]
#[ignore = "writes the corpus"]
fn write_oci_corpus() {
    let a = artifacts();
    std::fs::write(fuzz_dir().join("corpus/oci_manifest/kiosk-artifact.json"), &a.oci).unwrap();
    for (name, decoy) in &a.decoys {
        std::fs::write(fuzz_dir().join(format!("corpus/oci_manifest/kiosk-decoy-{name}.json")), &decoy.manifest)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = LayoutSource::new(dir.path());
    for (tag, decoy) in &a.decoys {
        layout.write_artifact(tag, decoy).unwrap();
    }
    layout
        .write(
            "1.4.34",
            &fixture("payload.json"),
            &fixture("component.wasm"),
            &[fixture("payload.json.sig"), fixture("component.wasm.sig")],
        )
        .unwrap();
    std::fs::copy(dir.path().join("index.json"), fuzz_dir().join("corpus/oci_index/kiosk-layout-index.json")).unwrap();
}

// --- references -----------------------------------------------------------------------------

fn print(r: &ArtifactRef) -> String {
    match r {
        ArtifactRef::Layout { dir, tag } => format!("oci-layout:{}:{tag}", dir.display()),
        ArtifactRef::Registry { host, repository, tag } => format!("{host}/{repository}:{tag}"),
    }
}

fn check_reference(bytes: &[u8]) -> TestCaseResult {
    let text = String::from_utf8_lossy(bytes);
    match ArtifactRef::parse(&text) {
        Ok(r) => {
            let printed = print(&r);
            prop_assert_eq!(ArtifactRef::parse(&printed), Ok(r.clone()), "{:?} printed as {:?}", text, printed);
            prop_assert!(artifact::valid_tag(r.tag()));
            let _ = r.default_app();
            if let ArtifactRef::Registry { host, repository, .. } = &r {
                prop_assert!(artifact::valid_host(host) && artifact::valid_repository(repository));
                prop_assert_eq!(
                    ArtifactRef::parse_repository(&format!("{host}/{repository}")),
                    Ok((host.clone(), repository.clone())),
                    "the two grammars disagree"
                );
            }
        }
        Err(e) => prop_assert!(!e.is_empty()),
    }
    // `oci-layout:` starts a layout reference for `parse`; for `parse_repository` (no
    // layouts) it reads as a host with an empty port.
    if let Some((host, repository)) =
        ArtifactRef::parse_repository(&text).ok().filter(|_| !text.starts_with("oci-layout:"))
    {
        prop_assert!(artifact::valid_host(&host) && artifact::valid_repository(&repository));
        prop_assert_eq!(
            ArtifactRef::parse(&format!("{host}/{repository}:1.0.0")),
            Ok(ArtifactRef::Registry { host: host.clone(), repository: repository.clone(), tag: "1.0.0".into() }),
            "the two grammars disagree"
        );
    }
    match Digest::parse(&text) {
        Some(d) => {
            prop_assert!(well_formed(&text), "accepted digest {:?}", text);
            prop_assert_eq!(d.as_str(), &*text);
            prop_assert_eq!(d.hex().len(), 64);
        }
        None => prop_assert!(!well_formed(&text), "refused digest {:?}", text),
    }
    let of = Digest::of(bytes);
    prop_assert_eq!(Digest::parse(of.as_str()), Some(of));
    Ok(())
}

fn references() -> BoxedStrategy<Vec<u8>> {
    let host = prop_oneof![
        3 => prop::sample::select(vec![
            "registry.example", "localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:5000", "REG.example", "a..b",
            "ghcr.io", "x:y:z", "[", "a_b.example", "", "oci-layout:5000", "host/x",
        ]).prop_map(str::to_string),
        1 => "[a-z0-9.:\\[\\]-]{0,12}",
        1 => text(),
    ];
    let component = prop_oneof![
        3 => prop::sample::select(vec!["acme", "budget-pacing", "a.b", "a__b", "a___b", "a---b", "..", ".", "A", "a_", "_a", "", "a@b"]).prop_map(str::to_string),
        2 => "[a-z0-9._-]{0,8}",
        1 => text(),
    ];
    let repository = proptest::collection::vec(component, 1..4).prop_map(|c| c.join("/"));
    let tag = prop_oneof![
        3 => prop::sample::select(vec!["1.4.34", "latest", "_x", "-x", ".x", "1.0.0+build", "", "a/b"]).prop_map(str::to_string),
        2 => "[A-Za-z0-9._-]{0,10}",
        1 => Just("x".repeat(129)),
        1 => text(),
    ];
    prop_oneof![
        4 => (host.clone(), repository.clone(), tag.clone()).prop_map(|(h, r, t)| format!("{h}/{r}:{t}").into_bytes()),
        1 => (text(), tag).prop_map(|(d, t)| format!("oci-layout:{d}:{t}").into_bytes()),
        2 => (host, repository).prop_map(|(h, r)| format!("{h}/{r}").into_bytes()),
        1 => "sha256:[0-9a-fA-F]{62,66}".prop_map(String::into_bytes),
        3 => mutated("reference", &[b":", b"/", b"@", b"..", b"[", b"]", b"oci-layout:", b"sha256:", b"localhost"]),
        1 => text().prop_map(String::into_bytes),
    ]
    .boxed()
}

#[test]
fn reference() {
    fuzz("reference", references(), |bytes| check_reference(&bytes));
}

// --- WWW-Authenticate -----------------------------------------------------------------------

/// A challenge: printed from a scheme and parameters, or raw text.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChallengeCase {
    scheme: String,
    params: BTreeMap<String, String>,
    raw: String,
}

/// A corpus file is a raw header (`raw`), or a case as JSON.
impl crate::harness::Input for ChallengeCase {
    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
    fn decode(line: &str) -> Option<Self> {
        serde_json::from_str(line).ok()
    }
    fn from_file(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok().or_else(|| {
            let raw = String::from_utf8_lossy(bytes).into_owned();
            Some(Self { scheme: "Bearer".into(), params: BTreeMap::new(), raw })
        })
    }
}

fn printed(case: &ChallengeCase) -> String {
    let params: Vec<String> =
        case.params.iter().map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    if params.is_empty() { case.scheme.clone() } else { format!("{} {}", case.scheme, params.join(", ")) }
}

fn check_challenge(case: ChallengeCase) -> TestCaseResult {
    let text = printed(&case);
    let parsed = parse_challenge(&text).ok_or_else(|| TestCaseError::fail(format!("{text:?} does not parse")))?;
    prop_assert_eq!(&parsed.scheme, &case.scheme);
    prop_assert_eq!(&parsed.params, &case.params, "{:?}", text);
    if let Some(c) = parse_challenge(&case.raw) {
        prop_assert!(!c.scheme.contains(' '));
        for k in c.params.keys() {
            prop_assert_eq!(k.trim(), k.as_str());
            prop_assert_eq!(&k.to_ascii_lowercase(), k);
        }
    }
    Ok(())
}

fn challenges() -> BoxedStrategy<ChallengeCase> {
    let raw = prop_oneof![
        2 => text(),
        2 => mutated("challenge", &[b"\"", b"\\", b",", b"=", b" ", b"realm=", b"Bearer "])
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    ("[A-Za-z][A-Za-z0-9-]{0,8}", proptest::collection::btree_map("[a-z][a-z0-9_-]{0,8}", any::<String>(), 0..4), raw)
        .prop_map(|(scheme, params, raw)| ChallengeCase { scheme, params, raw })
        .boxed()
}

#[test]
fn challenge() {
    fuzz("challenge", challenges(), check_challenge);
}
