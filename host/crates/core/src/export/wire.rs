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

/// An event as the sink names it: its customer and meter (both checked before).
#[derive(Debug)]
pub struct Mapped<'a> {
    pub event: &'a LedgerEvent,
    pub customer: &'a str,
    pub meter: &'a str,
}

/// The body of one batch and its content type.
pub fn body(sink: &SinkSettings, events: &[Mapped<'_>]) -> (Vec<u8>, &'static str) {
    match sink.kind {
        SinkKind::Cloudevents => {
            let batch: Vec<Value> = events
                .iter()
                .map(|m| {
                    json!({
                        "specversion": "1.0",
                        "id": event_id(m.event),
                        "source": format!("kiosk/installations/{}", m.event.installation),
                        "type": "kiosk.usage",
                        "subject": m.customer,
                        "time": rfc3339(m.event.at_ms),
                        "datacontenttype": "application/json",
                        "data": {
                            "meter": m.meter,
                            "quantity": m.event.quantity,
                            "tenant": m.event.tenant,
                            "app": m.event.app,
                            "version": m.event.version,
                            "sku": m.event.sku,
                            "usageSource": m.event.source,
                        },
                    })
                })
                .collect();
            (Value::Array(batch).to_string().into_bytes(), "application/cloudevents-batch+json")
        }
        SinkKind::Webhook => {
            let records: Vec<Value> = events
                .iter()
                .map(|m| {
                    json!({
                        "id": event_id(m.event),
                        "customer": m.customer,
                        "meter": m.meter,
                        "quantity": m.event.quantity,
                        "at": rfc3339(m.event.at_ms),
                        "tenant": m.event.tenant,
                        "installation": m.event.installation,
                        "app": m.event.app,
                        "version": m.event.version,
                        "sku": m.event.sku,
                        "usageSource": m.event.source,
                    })
                })
                .collect();
            (json!({"sink": sink.name, "records": records}).to_string().into_bytes(), "application/json")
        }
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
        let mapped = [Mapped { event: &e, customer: "cus_1", meter: "rows" }];
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
    }

    #[test]
    fn the_signature_covers_time_and_body() {
        let s = signature(b"0123456789abcdef", 1, b"{}");
        assert!(s.starts_with("t=1,v1=") && s.len() == "t=1,v1=".len() + 64, "{s}");
        assert_ne!(s, signature(b"0123456789abcdef", 2, b"{}"));
        assert_ne!(s, signature(b"0123456789abcdef", 1, b"[]"));
    }
}
