//! Catalog metadata (SPEC §3): the manifest's publisher and changelog, and the icon
//! layer — signed like the manifest and the component, exactly one PNG or JPEG image of
//! bounded size and shape, served as it was signed with headers that keep a browser from
//! reading it as anything else. Real gpg keys, a real registry, both databases; the test
//! images are made here (PNG with CRC-32 and a stored zlib stream, baseline JPEG).

use std::path::Path;

use kiosk::artifact::{ARTIFACT_TYPE, Descriptor, OCI_MANIFEST, OciManifest};
use kiosk::digest::Digest;
use kiosk::publish::{ArtifactBlobs, assemble, assemble_with_icon, push, sign_detached};
use kiosk::registry::{Registry, RegistrySettings, TransferSettings};
use kiosk_distribution::icon::IconFormat;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common;
use crate::common::api::{TestServer, kind};
use crate::common::gpg::Gpg;
use crate::common::registry::{Mode, TestRegistry};
use crate::common::{guest_bytes, manifest_json};

const OPERATOR: &str = "operator-token-for-catalog-metadata";
const APP: &str = "acme/budget-pacing";

// --- test images ------------------------------------------------------------------------

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

/// A valid 8-bit greyscale PNG (a diagonal gradient), its pixels in stored deflate blocks.
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0); // filter: none
        raw.extend((0..width).map(|x| ((x + y) * 255 / (width + height)) as u8));
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend(len.to_le_bytes());
        zlib.extend((!len).to_le_bytes());
        zlib.extend(*block);
    }
    zlib.extend(adler32(&raw).to_be_bytes());
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A valid baseline greyscale JPEG (mid grey; sides multiples of 8): one-symbol Huffman
/// tables, every block "DC difference 0, end of block".
fn jpeg(width: u16, height: u16) -> Vec<u8> {
    let segment = |out: &mut Vec<u8>, marker: u8, data: &[u8]| {
        out.extend([0xFF, marker]);
        out.extend(((data.len() + 2) as u16).to_be_bytes());
        out.extend(data);
    };
    let mut out = vec![0xFF, 0xD8];
    segment(&mut out, 0xDB, &[[0u8].as_slice(), &[1; 64]].concat());
    let [h0, h1] = height.to_be_bytes();
    let [w0, w1] = width.to_be_bytes();
    segment(&mut out, 0xC0, &[8, h0, h1, w0, w1, 1, 1, 0x11, 0]);
    let one_code = |class: u8| [[class].as_slice(), &[1], &[0; 15], &[0]].concat();
    segment(&mut out, 0xC4, &one_code(0x00));
    segment(&mut out, 0xC4, &one_code(0x10));
    segment(&mut out, 0xDA, &[1, 1, 0x00, 0, 63, 0]);
    let bits = usize::from(width / 8) * usize::from(height / 8) * 2;
    out.extend(vec![0u8; bits / 8]);
    if bits % 8 != 0 {
        out.push(0xFF >> (bits % 8)); // padded with 1s
    }
    out.extend([0xFF, 0xD9]);
    out
}

/// An image layer: media type, bytes, whether a signature covers it.
type Image<'a> = (&'a str, &'a [u8], bool);

const SVG: &[u8] = br#"<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><script>alert(1)</script></svg>"#;

// --- the world --------------------------------------------------------------------------

struct World {
    s: TestServer,
    registry: TestRegistry,
    pusher: Registry,
    gpg: Gpg,
    secret: Vec<u8>,
    acme: String,
    tenant: String,
}

async fn world(database: Option<String>) -> World {
    let registry = TestRegistry::start(Mode::Plain);
    let s = TestServer::fresh(database, &format!("[server]\noperator-token = \"{OPERATOR}\"\n")).await;
    s.create_partner(OPERATOR, "acme").await;
    s.create_tenant(OPERATOR, "t1").await;
    let gpg = Gpg::new();
    let key = gpg.generate("Acme <release@acme.example>", "ed25519", "sign", "1y", None);
    let cert = String::from_utf8(gpg.export(&key)).unwrap();
    let (st, b) = s
        .call(Some(OPERATOR), Method::POST, "/v1/partners/acme/certificates", Some(json!({"certificate": cert})))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let reg = json!({"insecure": true, "partners": {"acme": ["acme/"]}});
    let (st, b) = s.call(Some(OPERATOR), Method::PUT, &format!("/v1/registries/{}", registry.host), Some(reg)).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let acme = s.create_token(OPERATOR, "partner", Some("acme")).await.token;
    let tenant = s.create_token(OPERATOR, "tenant", Some("t1")).await.token;
    let settings = RegistrySettings { host: registry.host.clone(), insecure: true, ..Default::default() };
    let pusher = Registry::new(&settings, TransferSettings::default()).unwrap();
    let secret = gpg.export_secret(&key);
    World { s, registry, pusher, gpg, secret, acme, tenant }
}

fn manifest(version: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut m = manifest_json("budget-pacing");
    m["version"] = version.into();
    edit(&mut m);
    serde_json::to_vec_pretty(&m).unwrap()
}

impl World {
    fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        sign_detached(&self.secret, bytes).unwrap().0
    }

    /// The artifact with image layers `images` (media type, bytes, whether signed) after
    /// the wasm layer, assembled by hand (any media type, any number).
    fn artifact(&self, manifest: &[u8], images: &[Image]) -> ArtifactBlobs {
        let wasm = guest_bytes("budget-pacing");
        let mut sigs = vec![self.sign(manifest), self.sign(&wasm)];
        sigs.extend(images.iter().filter(|(_, _, signed)| *signed).map(|(_, bytes, _)| self.sign(bytes)));
        let mut blobs = assemble(manifest, &wasm, &sigs);
        for (i, (media_type, bytes, _)) in images.iter().enumerate() {
            let desc = Descriptor {
                media_type: media_type.to_string(),
                digest: Digest::of(bytes).to_string(),
                size: bytes.len() as u64,
                annotations: Default::default(),
            };
            blobs.layers.insert(1 + i, (desc, bytes.to_vec()));
        }
        let oci = OciManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: Some(ARTIFACT_TYPE.into()),
            config: blobs.config.clone(),
            layers: blobs.layers.iter().map(|(d, _)| d.clone()).collect(),
            annotations: Default::default(),
        };
        blobs.manifest = serde_json::to_vec(&oci).unwrap();
        blobs.manifest_digest = Digest::of(&blobs.manifest);
        blobs
    }

    /// The artifact as `kiosk publish --icon` assembles it.
    fn published(&self, manifest: &[u8], icon: Option<(IconFormat, &[u8])>) -> ArtifactBlobs {
        let wasm = guest_bytes("budget-pacing");
        let mut sigs = vec![self.sign(manifest), self.sign(&wasm)];
        sigs.extend(icon.map(|(_, bytes)| self.sign(bytes)));
        assemble_with_icon(manifest, &wasm, icon, &sigs)
    }

    /// Pushes `blobs` as `tag` and registers it as the partner: the answer.
    async fn register(&self, tag: &str, blobs: &ArtifactBlobs) -> (StatusCode, Value) {
        push(&self.pusher, "acme/budget-pacing", tag, blobs, |_| {}).await.unwrap();
        let reference = format!("{}/acme/budget-pacing:{tag}", self.registry.host);
        let path = "/v1/partners/acme/apps/budget-pacing/versions";
        self.s.call(Some(&self.acme), Method::POST, path, Some(json!({"reference": reference}))).await
    }

    /// Registers `blobs` as `tag`, which must be refused with `slug`, its detail holding
    /// every one of `words`, and leave every table as it was.
    async fn refused(&self, tag: &str, blobs: &ArtifactBlobs, slug: &str, words: &[&str]) {
        let before = self.s.store().table_counts().await.unwrap();
        let (status, problem) = self.register(tag, blobs).await;
        assert_eq!((status, kind(&problem)), (StatusCode::UNPROCESSABLE_ENTITY, slug), "{tag}: {problem}");
        assert_eq!(problem["field"], "reference", "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        for word in words {
            assert!(detail.contains(word), "{tag}: {word:?} not in {detail:?}");
        }
        assert_eq!(self.s.store().table_counts().await.unwrap(), before, "{tag}: a refusal changes nothing");
    }

    async fn get(&self, token: Option<&str>, path: &str) -> (StatusCode, Value) {
        self.s.call(token, Method::GET, path, None).await
    }
}

#[tokio::test]
async fn catalog_metadata_on_sqlite() {
    journey(None).await;
}

#[tokio::test]
async fn catalog_metadata_on_postgresql() {
    journey(Some(common::fresh_postgres_database().await)).await;
}

async fn journey(database: Option<String>) {
    let w = world(database).await;
    refusals(&w).await;
    accepted_and_served(&w).await;
}

async fn refusals(w: &World) {
    let m = |v: &str| manifest(v, |_| {});
    let good = png(64, 64);
    // (a) SVG: as its own media type, and as bytes declared PNG.
    let svg_layer = w.artifact(&m("2.0.1"), &[("image/svg+xml", SVG, true)]);
    w.refused("2.0.1", &svg_layer, "icon-refused", &["image/svg+xml", "SVG icons are refused"]).await;
    let svg_as_png = w.artifact(&m("2.0.2"), &[("image/png", SVG, true)]);
    w.refused("2.0.2", &svg_as_png, "icon-refused", &["icon layer (image/png)", "holds markup"]).await;
    // (b) Polyglots: a valid PNG with HTML, or a ZIP archive, after its IEND chunk.
    let html = [good.as_slice(), b"<html><script>window.__pwned=1</script></html>"].concat();
    let polyglot = w.artifact(&m("2.0.3"), &[("image/png", &html, true)]);
    w.refused("2.0.3", &polyglot, "icon-refused", &["bytes after the end of its image (its IEND chunk)"]).await;
    let archive = b"PK\x03\x04\x14\x00\x00\x00\x08\x00payload.txtPK\x05\x06";
    let zip = [good.as_slice(), archive].concat();
    let polyglot = w.artifact(&m("2.0.4"), &[("image/png", &zip, true)]);
    let words = format!("has {} bytes after the end of its image", archive.len());
    w.refused("2.0.4", &polyglot, "icon-refused", &[words.as_str()]).await;
    let jpeg_html = [jpeg(32, 32).as_slice(), b"<script>alert(1)</script>"].concat();
    let polyglot = w.artifact(&m("2.0.5"), &[("image/jpeg", &jpeg_html, true)]);
    w.refused("2.0.5", &polyglot, "icon-refused", &["after the end of its image (its EOI marker)"]).await;
    // (c) Over the cap (256 KiB by default), refused before it is downloaded.
    let big = png(1024, 1024);
    assert!(big.len() > 256 * 1024);
    let oversized = w.published(&m("2.0.6"), Some((IconFormat::Png, &big)));
    w.refused("2.0.6", &oversized, "artifact-refused", &["icon (image layer) is", "cap of 262144 bytes"]).await;
    // (d) Declared image/png, JPEG bytes (and the other way round).
    let mislabelled = w.artifact(&m("2.0.7"), &[("image/png", &jpeg(32, 32), true)]);
    w.refused("2.0.7", &mislabelled, "icon-refused", &["declared image/png but holds a JPEG image"]).await;
    let mislabelled = w.artifact(&m("2.0.8"), &[("image/jpeg", &good, true)]);
    w.refused("2.0.8", &mislabelled, "icon-refused", &["declared image/jpeg but holds a PNG image"]).await;
    // (e) An icon layer no signature covers.
    let unsigned = w.artifact(&m("2.0.9"), &[("image/png", &good, false)]);
    w.refused("2.0.9", &unsigned, "signature-refused", &["the icon (image layer) has no good signature"]).await;
    // Signed by a key no one registered.
    let stranger = w.gpg.generate("Mallory <m@evil.example>", "ed25519", "sign", "1y", None);
    let mut forged = w.artifact(&m("2.0.10"), &[("image/png", &good, false)]);
    let forged_sig = sign_detached(&w.gpg.export_secret(&stranger), &good).unwrap().0;
    forged.layers.push((
        Descriptor {
            media_type: "application/pgp-signature".into(),
            digest: Digest::of(&forged_sig).to_string(),
            size: forged_sig.len() as u64,
            annotations: Default::default(),
        },
        forged_sig,
    ));
    let oci = OciManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: forged.config.clone(),
        layers: forged.layers.iter().map(|(d, _)| d.clone()).collect(),
        annotations: Default::default(),
    };
    forged.manifest = serde_json::to_vec(&oci).unwrap();
    forged.manifest_digest = Digest::of(&forged.manifest);
    w.refused("2.0.10", &forged, "signature-refused", &["icon (image layer)", "not registered for any partner"]).await;
    // A document hidden in a chunk; shape, size, count and type.
    let mut with_script = good[..good.len() - 12].to_vec();
    chunk(&mut with_script, b"tEXt", b"Comment\0<script>window.__pwned=1</script>");
    chunk(&mut with_script, b"IEND", &[]);
    let cases: [(&str, &[Image], &str, &str); 6] = [
        ("2.0.11", &[("image/png", &png(64, 16), true)], "icon-refused", "64x16 px: it must be square"),
        ("2.0.12", &[("image/png", &png(8, 8), true)], "icon-refused", "8x8 px: each side must be 16-1024 px"),
        ("2.0.13", &[("image/png", &good, true), ("image/jpeg", &jpeg(32, 32), true)], "icon-refused", "at most one"),
        ("2.0.14", &[("image/gif", b"GIF89a....", true)], "icon-refused", "the icon layer is image/gif"),
        ("2.0.15", &[("image/png", &good[..good.len() - 12], true)], "icon-refused", "ends before its IEND chunk"),
        ("2.0.16", &[("image/png", &with_script, true)], "icon-refused", "holds markup"),
    ];
    for (tag, images, slug, words) in cases {
        w.refused(tag, &w.artifact(&m(tag), images), slug, &[words]).await;
    }
    // Publisher links: https only, named by their field.
    for (tag, field, link) in [
        ("2.1.0", "homepage", "http://acme.example"),
        ("2.1.1", "homepage", "javascript:alert(1)"),
        ("2.1.2", "support", "https://user:pw@acme.example/help"),
    ] {
        let bad = manifest(tag, |m| m["publisher"] = json!({"name": "Acme", field: link}));
        let words = [format!("manifest field `publisher.{field}`")];
        w.refused(tag, &w.published(&bad, None), "manifest-invalid", &[words[0].as_str()]).await;
    }
    let bad = manifest("2.1.3", |m| m["changelog"] = "fixed\u{0}".into());
    w.refused("2.1.3", &w.published(&bad, None), "manifest-invalid", &["`changelog`", "U+0000"]).await;
    let bad = manifest("2.1.4", |m| m["publisher"] = json!({"name": "Acme", "logo": "x.png"}));
    w.refused("2.1.4", &w.published(&bad, None), "manifest-invalid", &["publisher", "logo"]).await;
}

async fn accepted_and_served(w: &World) {
    let base = "/v1/catalog/apps/acme/budget-pacing";
    // A version without metadata (manifests without it stay valid), one with a PNG, one
    // with a JPEG, each with a publisher and a changelog whose markup is only text.
    let (s, b) = w.register("1.4.34", &w.published(&manifest("1.4.34", |_| {}), None)).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let publisher = json!({"name": "<img src=x onerror=alert(1)>", "homepage": "https://acme.example/apps",
                           "support": "https://acme.example/support?app=budget-pacing"});
    let changelog = "Faster checks.\n\t- <script>window.__pwned=1</script> is text";
    let with_png = manifest("1.5.0", |m| {
        m["publisher"] = publisher.clone();
        m["changelog"] = changelog.into();
    });
    let icon_png = png(64, 64);
    let (s, b) = w.register("1.5.0", &w.published(&with_png, Some((IconFormat::Png, &icon_png)))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let with_jpeg = manifest("1.6.0", |m| m["publisher"] = json!({"name": "Acme Apps"}));
    let icon_jpeg = jpeg(48, 40);
    let (s, b) = w.register("1.6.0", &w.published(&with_jpeg, Some((IconFormat::Jpeg, &icon_jpeg)))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // The icons, served as signed, with the headers that keep them images.
    let t = Some(w.tenant.as_str());
    for (version, bytes, content_type, name) in
        [("1.5.0", &icon_png, "image/png", "icon.png"), ("1.6.0", &icon_jpeg, "image/jpeg", "icon.jpg")]
    {
        let path = format!("{base}/versions/{version}/icon");
        let resp = w.s.request(t, Method::GET, &path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers().clone();
        assert_eq!(h["content-type"], content_type);
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["content-security-policy"], "default-src 'none'; sandbox");
        assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
        assert_eq!(h["content-disposition"], format!("inline; filename=\"{name}\""));
        assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes.as_slice(), "{path}: the bytes pushed");
    }
    // Any token reads the catalog (the partner's too); no token, no icon; no icon, 404.
    let resp = w.s.request(Some(&w.acme), Method::GET, &format!("{base}/versions/1.5.0/icon")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, _) = w.get(None, &format!("{base}/versions/1.5.0/icon")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for path in [format!("{base}/versions/1.4.34/icon"), format!("{base}/versions/9.9.9/icon")] {
        let (s, problem) = w.get(t, &path).await;
        assert_eq!((s, kind(&problem)), (StatusCode::NOT_FOUND, "not-found"), "{path}: {problem}");
    }

    // The version view: publisher, changelog (text as written) and the icon's path.
    let (_, v) = w.get(t, &format!("{base}/versions/1.5.0")).await;
    assert_eq!(v["publisher"], publisher, "{v}");
    assert_eq!(v["changelog"], changelog);
    assert_eq!(v["iconUrl"], format!("{base}/versions/1.5.0/icon"));
    let (_, v) = w.get(t, &format!("{base}/versions/1.4.34")).await;
    assert_eq!((&v["publisher"], &v["changelog"], &v["iconUrl"]), (&Value::Null, &Value::Null, &Value::Null), "{v}");

    // The catalog lists the latest installable version's publisher and icon.
    let listed = |apps: &Value| apps["items"].as_array().unwrap().iter().find(|a| a["app"] == APP).cloned().unwrap();
    let (_, apps) = w.get(t, "/v1/catalog/apps").await;
    let app = listed(&apps);
    assert_eq!(app["publisher"], json!({"name": "Acme Apps", "homepage": null, "support": null}), "{app}");
    assert_eq!(app["iconUrl"], format!("{base}/versions/1.6.0/icon"));
    let (_, detail) = w.get(t, base).await;
    assert_eq!((&detail["latest"], &detail["iconUrl"]), (&json!("1.6.0"), &app["iconUrl"]), "{detail}");
    // Yanked, 1.6.0 is not what an install gets: 1.5.0's metadata is listed.
    let (s, b) =
        w.s.call(Some(&w.acme), Method::POST, "/v1/partners/acme/apps/budget-pacing/versions/1.6.0/yank", None).await;
    assert!(s.is_success(), "{b}");
    let (_, apps) = w.get(t, "/v1/catalog/apps").await;
    let app = listed(&apps);
    assert_eq!((&app["publisher"], &app["iconUrl"]), (&publisher, &json!(format!("{base}/versions/1.5.0/icon"))));
    let (_, detail) = w.get(t, base).await;
    assert_eq!(detail["publisher"], publisher, "{detail}");

    // The console's catalog module, under the console's CSP: images from blob: only.
    let r = w.s.http.get(w.s.url("/console/catalog.js")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/javascript; charset=utf-8");
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("img-src blob:;") && csp.contains("trusted-types 'none'"), "{csp}");
    assert!(r.text().await.unwrap().contains("export function iconImage"));

    // The core's read, as other front ends use it.
    let state = &w.s.started.state;
    let (media_type, bytes) = state.catalog_icon("acme", "budget-pacing", "1.6.0").await.unwrap().unwrap();
    assert_eq!((media_type.as_str(), bytes), ("image/jpeg", icon_jpeg));
    assert!(state.catalog_icon("acme", "budget-pacing", "1.4.34").await.unwrap().is_none());
    assert_eq!(state.catalog_icon("acme", "budget-pacing", "0.0.9").await.unwrap_err().kind.as_str(), "not-found");
}

/// `kiosk publish --icon` checks the file as registration does, signs it with the key that
/// signs the rest and ships it as the icon layer (here into an OCI layout, registered by
/// the operator's CLI path).
#[tokio::test]
async fn kiosk_publish_ships_a_checked_signed_icon() {
    let w = world(None).await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let key = file("acme.key", &w.secret);
    let manifest_file = file("manifest.json", &manifest("1.7.0", |m| m["changelog"] = "Icons.".into()));
    let wasm = common::guest_path("budget-pacing");
    let icon = png(128, 128);
    let layout = dir.path().join("layout");
    let publish = |icon: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiosk"))
            .arg("publish")
            .args([&manifest_file, &wasm])
            .arg(format!("oci-layout:{}:1.7.0", layout.display()))
            .arg("--key")
            .arg(&key)
            .arg("--icon")
            .arg(icon)
            .output()
            .unwrap()
    };
    for (name, bytes, words) in [
        ("evil.svg", SVG, "name it .png, .jpg or .jpeg"),
        ("evil.png", SVG, "holds markup"),
        ("polyglot.png", &[icon.as_slice(), b"<html>"].concat()[..], "after the end of its image"),
    ] {
        let out = publish(&file(name, bytes));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(words), "{name}: {stderr}");
    }
    let out = publish(&file("icon.png", &icon));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let registered =
        w.s.started
            .state
            .register(&kiosk::artifact::LayoutSource::new(&layout), APP, "1.7.0", "oci-layout", "operator")
            .await
            .unwrap();
    assert_eq!(registered.version, "1.7.0");
    let path = "/v1/catalog/apps/acme/budget-pacing/versions/1.7.0/icon";
    let resp = w.s.request(Some(&w.tenant), Method::GET, path).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), icon.as_slice());
}
