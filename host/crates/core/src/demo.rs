//! The demo seed (`kiosk serve --demo-app`): the given builds signed with a demo partner
//! key and registered through the same verification path as a partner's registry
//! reference, the demo tenant created, and one token per role issued.

use std::path::Path;

use kiosk_store::Principal;

use crate::lifecycle::Kiosk;

/// What the seed registered and the tokens it issued (secrets, shown once).
#[derive(Debug)]
pub struct DemoSeed {
    /// `app@version` of each registered build.
    pub registered: Vec<String>,
    /// The OCI layout the builds were written to.
    pub layout_dir: std::path::PathBuf,
    pub operator_token: String,
    pub partner_token: String,
    pub tenant_token: String,
}

/// Demo tenant id; its partner is the examples' (`acme`).
const TENANT: &str = "demo";
const PARTNER: &str = "acme";
const ACTOR: &str = "demo";

impl Kiosk {
    /// Registers each `(manifest, component)` build signed with the demo key kept under
    /// `data_dir/demo`, creates the demo tenant, and issues tokens.
    pub async fn seed_demo(&self, builds: &[(Vec<u8>, Vec<u8>)], data_dir: &Path) -> anyhow::Result<DemoSeed> {
        let key_dir = data_dir.join("demo");
        let mut registered = Vec::new();
        for (manifest, wasm) in builds {
            let row = crate::local::register_local_build(self, manifest, wasm, &key_dir, ACTOR).await?;
            registered.push(format!("{}@{}", row.app, row.version));
        }
        self.ensure_tenant(TENANT, "Demo tenant", ACTOR).await?;
        let operator = self.issue_token(&Principal::Operator, "demo operator", ACTOR).await?;
        let tenant = self.issue_token(&Principal::Tenant(TENANT.into()), "demo tenant", ACTOR).await?;
        let partner = self.issue_token(&Principal::Partner(PARTNER.into()), "demo partner", ACTOR).await?;
        Ok(DemoSeed {
            registered,
            layout_dir: key_dir.join("layout"),
            operator_token: operator.secret,
            partner_token: partner.secret,
            tenant_token: tenant.secret,
        })
    }

    /// Stops taking calls (new ones answer 503 with `Retry-After`, `/readyz` 503) while
    /// calls in flight run on: the first step of a graceful stop.
    pub fn drain(&self) {
        self.runtime.drain();
    }

    /// Resolves once no call runs (after `drain`, nothing starts one again). Looked at
    /// every 10 ms: a stop is not on any call's path.
    pub async fn calls_finished(&self) {
        while !self.runtime.is_idle() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Stops taking calls: calls in flight stop now (their requests answer 503).
    pub fn shut_down(&self) {
        self.runtime.shut_down();
    }

    /// Gives the usage sinks' leases back and closes the database pool (after the server
    /// drained).
    pub async fn close(&self) {
        self.release_sinks().await;
        self.store.close().await;
    }
}
