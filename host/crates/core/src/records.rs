//! The records the use cases return, as the store keeps them: front ends read and render
//! them but cannot reach the store itself (`Kiosk`'s store is private to the core).

pub use kiosk_store::export::{LedgerEvent, Parked, SinkState};
pub use kiosk_store::logs::LogLineRow;
pub use kiosk_store::{
    AuditRow, EgressPolicyRow, EntitlementRow, InstallationRow, LimitLayerRow, PartnerSummary, Principal, TagOutcome,
    TagOutcomeRow, TenantSummary, TokenRow, UsageWindowRow, VersionRow, VersionState, WatchRow,
};
