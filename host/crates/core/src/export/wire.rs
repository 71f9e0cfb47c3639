//! What a sink's receiver is sent: per kind, the body of one batch, and the signature
//! every kind carries. Ids are deterministic (a UUIDv5 of the ledger's key of the event),
//! so a resend, a replay or another replica's push is the same event to the receiver.

use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

use kiosk_store::export::LedgerEvent;

use super::settings::{SinkKind, SinkSettings};

/// Kiosk's namespace for event ids (a UUIDv5 of the DNS name `usage.kiosk`).
fn namespace() -> uuid::Uuid {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, b"usage.kiosk")
}

/// The id of `event` in every sink: stable across resends, replays and replicas.
pub fn event_id(event: &LedgerEvent) -> String {
    uuid::Uuid::new_v5(&namespace(), format!("{}/{}", event.source, event.idem_key).as_bytes()).to_string()
}

/// RFC 3339 of a Unix time in milliseconds (UTC).
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// The id of an aggregate: stable for a customer, meter and period of a given length.
pub fn aggregate_id(customer: &str, meter: &str, period_start_ms: i64, period_ms: i64) -> String {
    let key = format!("period/{period_ms}/{period_start_ms}/{}/{customer}/{meter}", customer.len());
    uuid::Uuid::new_v5(&namespace(), key.as_bytes()).to_string()
}

/// One record a receiver is sent: an event, or the sum of a customer's events of one
/// meter in one period. Its customer and meter were checked before.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub id: String,
    pub customer: &'a str,
    pub meter: &'a str,
    pub quantity: i64,
    /// The event's time, or the period's start.
    pub time_ms: i64,
    /// The event (a record of one event); none for an aggregate.
    pub event: Option<&'a LedgerEvent>,
    /// The ledger events it stands for (`seq`).
    pub seqs: Vec<i64>,
}

impl<'a> Record<'a> {
    /// The record of one event.
    pub fn of_event(event: &'a LedgerEvent, customer: &'a str, meter: &'a str) -> Self {
        Record {
            id: event_id(event),
            customer,
            meter,
            quantity: event.quantity,
            time_ms: event.at_ms,
            event: Some(event),
            seqs: vec![event.seq],
        }
    }
}

/// The body of one request and its content type.
pub fn body(sink: &SinkSettings, records: &[Record<'_>]) -> (Vec<u8>, &'static str) {
    match sink.kind {
        SinkKind::Cloudevents => {
            let batch: Vec<Value> = records.iter().map(|r| cloudevent(sink, r)).collect();
            (Value::Array(batch).to_string().into_bytes(), "application/cloudevents-batch+json")
        }
        SinkKind::Webhook => {
            let records: Vec<Value> = records.iter().map(|r| webhook_record(sink, r)).collect();
            (json!({"sink": sink.name, "records": records}).to_string().into_bytes(), "application/json")
        }
        SinkKind::Stripe => {
            // One event a request (`SinkKind::max_batch`).
            let mut form = form_urlencoded::Serializer::new(String::new());
            if let Some(r) = records.first() {
                form.append_pair("event_name", r.meter)
                    .append_pair("identifier", &r.id)
                    .append_pair("timestamp", &r.time_ms.div_euclid(1000).to_string())
                    .append_pair("payload[stripe_customer_id]", r.customer)
                    .append_pair("payload[value]", &r.quantity.to_string());
            }
            (form.finish().into_bytes(), "application/x-www-form-urlencoded")
        }
        SinkKind::AwsMarketplace => {
            let usage: Vec<Value> = records.iter().map(aws_record).collect();
            let product = sink.product_code.as_deref().unwrap_or_default();
            (
                json!({"ProductCode": product, "UsageRecords": usage}).to_string().into_bytes(),
                "application/x-amz-json-1.1",
            )
        }
    }
}

/// A `BatchMeterUsage` usage record (`Timestamp` in seconds); the answer names it by
/// customer, dimension and timestamp.
pub fn aws_record(r: &Record<'_>) -> Value {
    json!({
        "Timestamp": r.time_ms.div_euclid(1000),
        "CustomerIdentifier": r.customer,
        "Dimension": r.meter,
        "Quantity": r.quantity,
    })
}

fn cloudevent(sink: &SinkSettings, r: &Record<'_>) -> Value {
    match r.event {
        Some(e) => json!({
            "specversion": "1.0",
            "id": r.id,
            "source": format!("kiosk/installations/{}", e.installation),
            "type": "kiosk.usage",
            "subject": r.customer,
            "time": rfc3339(r.time_ms),
            "datacontenttype": "application/json",
            "data": {
                "meter": r.meter,
                "quantity": r.quantity,
                "tenant": e.tenant,
                "app": e.app,
                "version": e.version,
                "sku": e.sku,
                "usageSource": e.source,
            },
        }),
        None => json!({
            "specversion": "1.0",
            "id": r.id,
            "source": format!("kiosk/sinks/{}", sink.name),
            "type": "kiosk.usage.aggregate",
            "subject": r.customer,
            "time": rfc3339(r.time_ms),
            "datacontenttype": "application/json",
            "data": {
                "meter": r.meter,
                "quantity": r.quantity,
                "periodSeconds": sink.period_ms() / 1000,
                "events": r.seqs.len(),
            },
        }),
    }
}

fn webhook_record(sink: &SinkSettings, r: &Record<'_>) -> Value {
    match r.event {
        Some(e) => json!({
            "id": r.id,
            "customer": r.customer,
            "meter": r.meter,
            "quantity": r.quantity,
            "at": rfc3339(r.time_ms),
            "tenant": e.tenant,
            "installation": e.installation,
            "app": e.app,
            "version": e.version,
            "sku": e.sku,
            "usageSource": e.source,
        }),
        None => json!({
            "id": r.id,
            "customer": r.customer,
            "meter": r.meter,
            "quantity": r.quantity,
            "at": rfc3339(r.time_ms),
            "periodSeconds": sink.period_ms() / 1000,
            "events": r.seqs.len(),
        }),
    }
}

/// `Kiosk-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, so a
/// receiver can refuse a forged body and an old replay (Stripe's webhook scheme).
pub fn signature(key: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix_seconds},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event(source: &str, key: &str) -> LedgerEvent {
        LedgerEvent {
            seq: 1,
            source: source.into(),
            idem_key: key.into(),
            tenant: "t".into(),
            installation: "i".into(),
            app: "a/b".into(),
            version: "1.0.0".into(),
            sku: "s".into(),
            quantity: 3,
            at_ms: 1_700_000_000_123,
            recorded_ms: 1_700_000_000_200,
        }
    }

    #[test]
    fn ids_are_the_ledger_key_and_nothing_else() {
        let a = event("host", "k1");
        let mut moved = a.clone();
        moved.seq = 99;
        moved.recorded_ms += 5;
        assert_eq!(event_id(&a), event_id(&moved));
        assert_ne!(event_id(&a), event_id(&event("guest", "k1")));
        assert_ne!(event_id(&a), event_id(&event("host", "k2")));
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    fn settings(kind: &str) -> SinkSettings {
        let text = format!("name = \"om\"\nkind = \"{kind}\"\nendpoint = \"https://b.example/\"\nsecret-env = \"K\"\n");
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn each_kind_carries_id_customer_meter_and_quantity() {
        let e = event("report", "inst-1/report/w1");
        let mapped = [Record::of_event(&e, "cus_1", "rows")];
        let (bytes, content_type) = body(&settings("cloudevents"), &mapped);
        assert_eq!(content_type, "application/cloudevents-batch+json");
        let batch: Value = serde_json::from_slice(&bytes).unwrap();
        let one = &batch[0];
        assert_eq!(one["specversion"], "1.0");
        assert_eq!(one["id"], event_id(&e));
        assert_eq!(one["source"], "kiosk/installations/i");
        assert_eq!(one["subject"], "cus_1");
        assert_eq!(one["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(one["data"]["meter"], "rows");
        assert_eq!(one["data"]["quantity"], 3);
        assert_eq!(one["data"]["usageSource"], "report");
        let (bytes, content_type) = body(&settings("webhook"), &mapped);
        assert_eq!(content_type, "application/json");
        let hook: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(hook["sink"], "om");
        let record = &hook["records"][0];
        assert_eq!(record["id"], event_id(&e));
        assert_eq!(record["customer"], "cus_1");
        assert_eq!(record["meter"], "rows");
        assert_eq!(record["quantity"], 3);
        assert_eq!(record["installation"], "i");
        let (bytes, content_type) = body(&settings("stripe"), &mapped);
        assert_eq!(content_type, "application/x-www-form-urlencoded");
        let form: std::collections::BTreeMap<String, String> =
            form_urlencoded::parse(&bytes).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        assert_eq!(form["event_name"], "rows");
        assert_eq!(form["identifier"], event_id(&e));
        assert_eq!(form["timestamp"], "1700000000");
        assert_eq!(form["payload[stripe_customer_id]"], "cus_1");
        assert_eq!(form["payload[value]"], "3");
    }

    #[test]
    fn an_aggregate_names_its_period() {
        let mut aws = settings("aws-marketplace");
        aws.product_code = Some("prod1".into());
        let hour = 1_700_000_000_000 / 3_600_000 * 3_600_000;
        let id = aggregate_id("cus_1", "rows", hour, 3_600_000);
        assert_eq!(id, aggregate_id("cus_1", "rows", hour, 3_600_000), "the same every time");
        assert_ne!(id, aggregate_id("cus_1", "rows", hour + 3_600_000, 3_600_000));
        assert_ne!(id, aggregate_id("cus_1", "rows", hour, 60_000));
        assert_ne!(aggregate_id("a/b", "c", hour, 60_000), aggregate_id("a", "b/c", hour, 60_000));
        let record =
            Record { id, customer: "cus_1", meter: "rows", quantity: 7, time_ms: hour, event: None, seqs: vec![1, 2] };
        let (bytes, content_type) = body(&aws, std::slice::from_ref(&record));
        assert_eq!(content_type, "application/x-amz-json-1.1");
        let call: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(call["ProductCode"], "prod1");
        assert_eq!(
            call["UsageRecords"][0],
            json!({"Timestamp": hour / 1000, "CustomerIdentifier": "cus_1", "Dimension": "rows", "Quantity": 7})
        );
        let (bytes, _) = body(&settings("cloudevents"), &[record]);
        let event: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(event[0]["source"], "kiosk/sinks/om");
        assert_eq!(event[0]["data"]["events"], 2);
    }

    #[test]
    fn the_signature_covers_time_and_body() {
        let s = signature(b"0123456789abcdef", 1, b"{}");
        assert!(s.starts_with("t=1,v1=") && s.len() == "t=1,v1=".len() + 64, "{s}");
        assert_ne!(s, signature(b"0123456789abcdef", 2, b"{}"));
        assert_ne!(s, signature(b"0123456789abcdef", 1, b"[]"));
    }
}
