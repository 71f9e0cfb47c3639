//! Tenants' own apps (issue 30), tried as a new tenant would: the operator switches
//! private apps on for `shop`; `shop` connects a real `docker-registry` that demands a
//! client certificate (mutual TLS), adds its gpg key, registers an app it built and
//! signed with `kiosk publish`, installs it, calls it and reads its usage. Tenant `other`
//! and partner `acme` can neither see, install nor register into `shop`'s namespace;
//! every refusal names its field — on SQLite and PostgreSQL.

use std::path::Path;
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::api::{TestServer, kind};
use crate::common::gpg::Gpg;
use crate::common::registry::{Mode, TestRegistry};
use crate::common::{fresh_postgres_database, guest_path, manifest_json};

const OPERATOR: &str = "operator-token-private-apps";

/// `kiosk publish` of negative-keywords as `app@version` (its manifest edited by
/// `edit`) to `target`, signed with the secret key in `key`; the operator config
/// `config` marks the push registry as plain HTTP.
fn publish(work: &Path, config: &Path, key: &Path, app: &str, version: &str, target: &str, edit: impl Fn(&mut Value)) {
    let mut manifest = manifest_json("negative-keywords");
    manifest["app"] = app.into();
    manifest["version"] = version.into();
    edit(&mut manifest);
    let path = work.join(format!("{}-{version}.json", app.replace(['/', '~'], "_")));
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiosk"))
        .args(["publish", path.to_str().unwrap(), guest_path("negative-keywords").to_str().unwrap(), target])
        .arg("--key")
        .arg(key)
        .arg("--operator-config")
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "kiosk publish {target}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Asserts a problem of `status` and `kind` naming `field`.
fn refused(reply: (StatusCode, Value), status: StatusCode, problem: &str, field: &str) {
    let (got, body) = reply;
    assert_eq!((got, kind(&body)), (status, problem), "{body}");
    assert_eq!(body["field"], field, "{body}");
}

#[tokio::test]
async fn a_tenant_brings_its_own_app_through_a_mutual_tls_registry_on_sqlite() {
    brings_its_own_app(None).await;
}

#[tokio::test]
async fn a_tenant_brings_its_own_app_through_a_mutual_tls_registry_on_postgresql() {
    brings_its_own_app(Some(fresh_postgres_database().await)).await;
}

async fn brings_its_own_app(database: Option<String>) {
    let registry = TestRegistry::start(Mode::MutualTls);
    let mtls = registry.mutual_tls.clone().expect("mutual TLS registry");
    let host = registry.host.clone();
    let work = tempfile::tempdir().unwrap();
    let publish_config = work.path().join("publish.toml");
    std::fs::write(
        &publish_config,
        format!(
            "data-dir = \"{}\"\n[[registries]]\nhost = \"{}\"\ninsecure = true\n",
            work.path().join("publish-data").display(),
            mtls.push_host
        ),
    )
    .unwrap();

    // The tenant's own key, made with gpg; it builds and signs with `kiosk publish`.
    let gpg = Gpg::new();
    let shop_key = gpg.generate("Shop IT <it@shop.example>", "ed25519", "sign", "1y", None);
    let secret = work.path().join("shop.sec");
    std::fs::write(&secret, gpg.export_secret(&shop_key)).unwrap();
    let push = |app: &str, version: &str, repository: &str, edit: &dyn Fn(&mut Value)| {
        let target = format!("{}/{repository}:{version}", mtls.push_host);
        publish(work.path(), &publish_config, &secret, app, version, &target, edit);
    };
    push("~shop/inventory", "1.0.0", "shop/inventory", &|_| {});

    let server = TestServer::fresh(database, &format!("[server]\noperator-token = \"{OPERATOR}\"\n")).await;
    for tenant in ["shop", "other"] {
        server.create_tenant(OPERATOR, tenant).await;
    }
    server.create_partner(OPERATOR, "acme").await;
    let shop = server.create_token(OPERATOR, "tenant", Some("shop")).await.token;
    let other = server.create_token(OPERATOR, "tenant", Some("other")).await.token;
    let acme = server.create_token(OPERATOR, "partner", Some("acme")).await.token;
    let connect = json!({
        "caPem": mtls.ca_pem,
        "clientCertificatePem": mtls.client_certificate_pem,
        "clientKeyPem": mtls.client_key_pem,
    });
    let registry_path = format!("/v1/tenants/shop/registries/{host}");

    // Off by default: nothing a tenant may connect, add or register.
    let (status, policy) = server.call(Some(&shop), Method::GET, "/v1/tenants/shop/private-apps", None).await;
    assert_eq!((status, &policy["enabled"], &policy["source"]), (StatusCode::OK, &json!(false), &json!("default")));
    refused(
        server.call(Some(&shop), Method::PUT, &registry_path, Some(connect.clone())).await,
        StatusCode::FORBIDDEN,
        "private-apps-off",
        "tenant",
    );
    let cert = String::from_utf8(gpg.export(&shop_key)).unwrap();
    refused(
        server
            .call(Some(&shop), Method::POST, "/v1/tenants/shop/certificates", Some(json!({"certificate": cert})))
            .await,
        StatusCode::FORBIDDEN,
        "private-apps-off",
        "tenant",
    );
    // Only the operator switches.
    let on = json!({"enabled": true, "maxApps": 1});
    let (status, _) = server.call(Some(&shop), Method::PUT, "/v1/tenants/shop/private-apps", Some(on.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = server.call(Some(OPERATOR), Method::PUT, "/v1/tenants/shop/private-apps", Some(on)).await;
    assert_eq!((status, &body["source"]), (StatusCode::OK, &json!("tenant")), "{body}");

    // A loopback registry without the operator's opening is refused, naming the host.
    refused(
        server.call(Some(&shop), Method::PUT, &registry_path, Some(connect.clone())).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "registry-not-allowed",
        "host",
    );
    for private in
        ["10.1.2.3:5000", "169.254.169.254", "localhost:5000", "[::1]:5000", "127.1:5000", "2130706433", "0x7f.1"]
    {
        let path = format!("/v1/tenants/shop/registries/{private}");
        refused(
            server.call(Some(&shop), Method::PUT, &path, Some(json!({}))).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "registry-not-allowed",
            "host",
        );
    }
    refused(
        server
            .call(
                Some(OPERATOR),
                Method::PUT,
                "/v1/tenants/shop/private-apps",
                Some(json!({"enabled": true, "openRanges": ["0.0.0.0/0"]})),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-private-app-policy",
        "openRanges/0",
    );
    // The operator's cap for shop's private apps is tighter than the app asks (100 ms).
    let opened = json!({"enabled": true, "maxApps": 1, "openRanges": ["127.0.0.1/32"], "limits": {"timeoutMs": 80}});
    let (status, body) = server.call(Some(OPERATOR), Method::PUT, "/v1/tenants/shop/private-apps", Some(opened)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A key without its certificate, and a key that is not the certificate's, name the field.
    let mut half = connect.clone();
    half.as_object_mut().unwrap().remove("clientKeyPem");
    refused(
        server.call(Some(&shop), Method::PUT, &registry_path, Some(half)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-registry",
        "clientKeyPem",
    );
    // Connected: the key is sealed and never comes back.
    let reply = server.send(Some(&shop), Method::PUT, &registry_path, Some(connect.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let view = reply.json();
    assert_eq!((&view["clientCertificateSet"], &view["caPemSet"]), (&json!(true), &json!(true)));
    let listed = server.send(Some(&shop), Method::GET, "/v1/tenants/shop/registries", None).await;
    let key_body = mtls.client_key_pem.lines().nth(1).unwrap();
    for text in [&reply.text, &listed.text] {
        assert!(!text.contains(key_body) && !text.contains("PRIVATE KEY"), "{text}");
    }
    let (status, added) = server
        .call(Some(&shop), Method::POST, "/v1/tenants/shop/certificates", Some(json!({"certificate": cert})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");

    // Registered from the tenant's registry, presenting the client certificate.
    let register = |name: &str, reference: String| {
        let path = format!("/v1/tenants/shop/apps/{name}/versions");
        (path, json!({"reference": reference}))
    };
    let (path, body) = register("inventory", format!("{host}/shop/inventory:1.0.0"));
    let (status, registered) = server.call(Some(&shop), Method::POST, &path, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    assert_eq!((&registered["app"], &registered["signer"]), (&json!("~shop/inventory"), &json!(shop_key)));

    // Visible to shop (and the operator), to no one else.
    let (_, catalog) = server.call(Some(&shop), Method::GET, "/v1/catalog/apps?limit=1000", None).await;
    assert!(catalog["items"].as_array().unwrap().iter().any(|a| a["app"] == "~shop/inventory"), "{catalog}");
    for token in [&other, &acme] {
        let (_, catalog) = server.call(Some(token), Method::GET, "/v1/catalog/apps?limit=1000", None).await;
        assert!(!catalog.to_string().contains("~shop"), "{catalog}");
        let (status, _) = server.call(Some(token), Method::GET, "/v1/catalog/apps/~shop/inventory", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) =
            server.call(Some(token), Method::GET, "/v1/catalog/apps/~shop/inventory/versions/1.0.0", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, _) = server.call(Some(OPERATOR), Method::GET, "/v1/catalog/apps/~shop/inventory", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, apps) = server.call(Some(OPERATOR), Method::GET, "/v1/tenants/shop/apps", None).await;
    assert_eq!((status, &apps["items"][0]["app"]), (StatusCode::OK, &json!("~shop/inventory")), "{apps}");
    let (_, partners) = server.call(Some(OPERATOR), Method::GET, "/v1/partners?limit=1000", None).await;
    assert!(!partners.to_string().contains("~shop"), "a tenant's namespace is not a partner: {partners}");

    // Other tenants and partners cannot install it nor register into shop's namespace.
    let (status, body) = server
        .call(Some(&other), Method::POST, "/v1/tenants/other/installations", Some(json!({"app": "~shop/inventory"})))
        .await;
    assert_eq!((status, kind(&body)), (StatusCode::NOT_FOUND, "not-found"), "{body}");
    let (path, body) = register("inventory", format!("{host}/shop/inventory:1.0.0"));
    for token in [&other, &acme] {
        let (status, _) = server.call(Some(token), Method::POST, &path, Some(body.clone())).await;
        assert!(status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN, "{status}");
    }
    let (status, _) =
        server.call(Some(&acme), Method::POST, "/v1/partners/~shop/apps/inventory/versions", Some(body.clone())).await;
    assert!(status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN, "{status}");
    refused(
        server
            .call(
                Some(&other),
                Method::POST,
                "/v1/tenants/other/apps/inventory/versions",
                Some(json!({"reference": format!("{host}/shop/inventory:1.0.0")})),
            )
            .await,
        StatusCode::FORBIDDEN,
        "private-apps-off",
        "tenant",
    );

    // Shop installs, calls and reads its usage.
    let installation = server.install(&shop, "shop", json!({"app": "~shop/inventory"})).await;
    let call = server
        .invoked(&shop, "shop", &installation.id, "add", json!({"list": "brand-safety", "keywords": ["free"]}))
        .await;
    assert_eq!(call.output["added"], 1, "{:?}", call.output);
    let (_, shown) = server
        .call(Some(&shop), Method::GET, &format!("/v1/tenants/shop/installations/{}", installation.id), None)
        .await;
    assert_eq!(shown["limits"]["timeoutMs"]["value"], 80, "{shown}");
    let usage = server.usage(&shop, "/v1/tenants/shop/usage").await;
    assert!(
        usage.usage.iter().any(|r| r.app == "~shop/inventory" && r.sku == "keyword-write" && r.quantity == 1),
        "{usage:?}"
    );

    // An app id in a partner's namespace, from the tenant's registry: refused, naming the manifest's app.
    push("acme/inventory", "1.1.0", "shop/inventory", &|_| {});
    let (path, body) = register("inventory", format!("{host}/shop/inventory:1.1.0"));
    let (status, problem) = server.call(Some(&shop), Method::POST, &path, Some(body)).await;
    assert_eq!((status, kind(&problem)), (StatusCode::UNPROCESSABLE_ENTITY, "artifact-refused"), "{problem}");
    assert_eq!(problem["field"], "reference", "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("\"acme/inventory\" is not the app being registered"));

    // A moved tag: the tenant's registered version is pinned to its digest.
    push("~shop/inventory", "1.0.0", "shop/inventory", &|m| m["description"] = "Rebuilt behind Kiosk's back.".into());
    let (path, body) = register("inventory", format!("{host}/shop/inventory:1.0.0"));
    let (status, problem) = server.call(Some(&shop), Method::POST, &path, Some(body)).await;
    assert_eq!((status, kind(&problem)), (StatusCode::CONFLICT, "moved-tag"), "{problem}");

    // Over the quota (one app): a second app is refused before any pull.
    let (path, body) = register("second", format!("{host}/shop/second:1.0.0"));
    refused(
        server.call(Some(&shop), Method::POST, &path, Some(body)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "private-app-quota",
        "name",
    );

    // A tenant's certificate never signs a partner's app: acme's app signed with shop's key.
    let operator_registry = json!({
        "caPem": mtls.ca_pem,
        "clientCertificatePem": mtls.client_certificate_pem,
        "clientKeyPem": mtls.client_key_pem,
        "partners": {"acme": ["acme/"]},
    });
    let (status, body) =
        server.call(Some(OPERATOR), Method::PUT, &format!("/v1/registries/{host}"), Some(operator_registry)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    push("acme/tool", "1.0.0", "acme/tool", &|_| {});
    let (status, problem) = server
        .call(
            Some(&acme),
            Method::POST,
            "/v1/partners/acme/apps/tool/versions",
            Some(json!({"reference": format!("{host}/acme/tool:1.0.0")})),
        )
        .await;
    assert_eq!((status, kind(&problem)), (StatusCode::UNPROCESSABLE_ENTITY, "signature-refused"), "{problem}");

    // The operator switching shop off stops new registrations; what is installed stays.
    let off = json!({"enabled": false});
    let (status, _) = server.call(Some(OPERATOR), Method::PUT, "/v1/tenants/shop/private-apps", Some(off)).await;
    assert_eq!(status, StatusCode::OK);
    let (path, body) = register("inventory", format!("{host}/shop/inventory:1.0.0"));
    refused(
        server.call(Some(&shop), Method::POST, &path, Some(body)).await,
        StatusCode::FORBIDDEN,
        "private-apps-off",
        "tenant",
    );
    assert!(server.audit_has(OPERATOR, "private-apps.put", "private-apps:shop").await);
    // Removing the tenant's certificate quarantines what it signed, as for a partner.
    let path = format!("/v1/tenants/shop/certificates/{shop_key}");
    let (status, removed) = server.call(Some(&shop), Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert!(removed.to_string().contains("~shop/inventory"), "{removed}");
    let (status, problem) = server
        .call(
            Some(&shop),
            Method::POST,
            "/v1/tenants/shop/installations",
            Some(json!({"app": "~shop/inventory", "version": "1.0.0"})),
        )
        .await;
    assert_eq!((status, kind(&problem)), (StatusCode::UNPROCESSABLE_ENTITY, "version-quarantined"), "{problem}");
}
