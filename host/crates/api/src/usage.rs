//! Usage documents (SPEC §7): a partner's batch and its per-record results, and the
//! usage reads of tenants, partners and the operator.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most records in one partner batch (SPEC §7: every source has a cap). A day of a
/// busy partner's batches fits; one batch is validated and committed in well under 2 s.
pub const MAX_BATCH_RECORDS: usize = 20_000;

/// A batch of usage records (at most 20,000). Each record is checked on its own: one
/// that does not hold is refused in its result, never the batch.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PartnerUsageBatch {
    /// Raw records: each is parsed on its own so that one malformed record is refused in
    /// its result rather than failing the batch.
    #[schema(value_type = Vec<PartnerUsageRecord>, max_items = 20000)]
    pub records: Vec<serde_json::Value>,
}

/// One unit of usage a partner reports for one of its apps installed by a tenant.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PartnerUsageRecord {
    /// Tenant id.
    pub tenant: String,
    /// `partner/name`, one of the partner's apps.
    pub app: String,
    /// A SKU the installed version declares.
    pub sku: String,
    /// 1 to 2^53 - 1.
    #[schema(value_type = u64, minimum = 1, maximum = 9007199254740991_u64)]
    pub quantity: serde_json::Value,
    /// Milliseconds since the Unix epoch; within the acceptance window, at most 5 minutes ahead.
    #[schema(minimum = 0)]
    pub timestamp_ms: i64,
    /// 1-128 bytes; the same key and quantity again is a duplicate, counted once.
    #[schema(min_length = 1)]
    pub idempotency_key: String,
    /// The installation the usage belongs to; needed when the tenant has several.
    #[serde(default)]
    pub installation: Option<String>,
}

/// What became of one record of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RecordStatus {
    Recorded,
    Duplicate,
    Conflict,
    Refused,
}

/// The result of the record at `index`: `reason` for a conflict or a refusal; a conflict
/// also gives the quantity recorded before under that key.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordResult {
    pub index: usize,
    pub status: RecordStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_quantity: Option<u64>,
}

/// One result per record, in order.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageResults {
    pub results: Vec<RecordResult>,
}

/// One (tenant, app, SKU, period) of a usage read. Quantities are summed in `u128`: a sum
/// of stored quantities (each below 2^64) never wraps. `id` is deterministic: the same
/// period and SKU give the same id.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    pub id: String,
    pub period_start_ms: i64,
    pub tenant: String,
    pub app: String,
    pub sku: String,
    #[schema(value_type = u64)]
    pub quantity: u128,
}

/// Usage in `[fromMs, toMs)` by period, with totals by SKU.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub from_ms: i64,
    pub to_ms: i64,
    pub usage: Vec<UsageRecord>,
    #[schema(value_type = BTreeMap<String, u64>)]
    pub totals: BTreeMap<String, u128>,
}
