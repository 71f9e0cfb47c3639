//! The operator's layer of apps' outbound HTTP set over the API: for every partner or
//! for one, egress off or hosts denied. It only narrows the config file's `[egress]`
//! (which alone opens private addresses or plain HTTP); each call reads it with its
//! call context, so a change applies from the next call on every replica.

use kiosk_domain::net::HostPattern;
use kiosk_store::EgressPolicyRow;

use crate::error::{Failure, Kind};
use crate::lifecycle::Kiosk;

type Result<T, E = Failure> = std::result::Result<T, E>;

/// Most hosts one policy row may deny (a deny list, not a DNS zone).
pub const MAX_DENIED_HOSTS: usize = 256;

impl Kiosk {
    /// Every policy set over the API, the every-partner one (scope "") first.
    pub async fn egress_policies(&self) -> Result<Vec<EgressPolicyRow>> {
        Ok(self.store.egress_policies().await?)
    }

    /// Sets the policy for every partner (`partner` `None`) or for one partner's apps.
    /// Each denied host is checked (a host name, `*.` at most first); an error names
    /// the entry. Audited (`egress.policy`).
    pub async fn set_egress_policy(
        &self,
        partner: Option<&str>,
        enabled: bool,
        deny: Vec<String>,
        actor: &str,
    ) -> Result<EgressPolicyRow> {
        if let Some(name) = partner
            && self.store.partner(name).await?.is_none()
        {
            return Err(Failure::not_found(format!("no partner {:?}", kiosk_domain::text::sanitize(name))));
        }
        if deny.len() > MAX_DENIED_HOSTS {
            return Err(Failure::unprocessable(Kind::InvalidHost, format!("at most {MAX_DENIED_HOSTS} denied hosts"))
                .field("deny"));
        }
        let mut checked = Vec::with_capacity(deny.len());
        for (i, host) in deny.iter().enumerate() {
            let pattern = HostPattern::parse(host).map_err(|why| {
                Failure::unprocessable(Kind::InvalidHost, kiosk_domain::text::sanitize_capped(&why, 400))
                    .field(format!("deny/{i}"))
            })?;
            let text = pattern.to_string();
            if !checked.contains(&text) {
                checked.push(text);
            }
        }
        let row = EgressPolicyRow {
            scope: partner.unwrap_or("").to_string(),
            enabled,
            deny: checked,
            updated_ms: kiosk_domain::metering::now_ms() as i64,
        };
        self.store.put_egress_policy(&row, actor).await?;
        Ok(row)
    }

    /// Removes the policy of `partner` (`None`: the every-partner one). Audited.
    pub async fn delete_egress_policy(&self, partner: Option<&str>, actor: &str) -> Result<()> {
        if !self.store.delete_egress_policy(partner.unwrap_or(""), actor).await? {
            let whom =
                partner.map_or("every partner".to_string(), |p| format!("{:?}", kiosk_domain::text::sanitize(p)));
            return Err(Failure::not_found(format!("no egress policy is set for {whom}")));
        }
        Ok(())
    }
}
