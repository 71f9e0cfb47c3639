//! One request to a sink's receiver and what its answer means, per kind. The receiver's
//! words are never kept: only its status and, for AWS, the status token of each record
//! from a closed list.

use serde_json::Value;

use super::Active;
use super::client;
use super::settings::SinkKind;
use super::wire::{self, Record};
use kiosk_domain::metering::now_ms;

/// The most of an answer read (AWS's names every record: 25 of them fit in a few KiB).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// What came of one request.
pub(super) enum Sent {
    /// Per record: `None` acknowledged, `Some(reason)` refused for good.
    Answered(Vec<Option<String>>),
    /// The receiver refused the request as a whole for what it carries (400, 413 or
    /// 422): it is split to find the records at fault.
    Refused(u16),
    /// Out of reach, failing, or asking to wait: retried later, the cursor waits.
    Failed(String),
}

/// POSTs `records` to `sink`'s receiver.
pub(super) async fn send(sink: &Active, records: &[Record<'_>]) -> Sent {
    let settings = &sink.settings;
    let (body, content_type) = wire::body(settings, records);
    let mut request = sink
        .http
        .post(&settings.endpoint)
        .header("content-type", content_type)
        .header("kiosk-sink", settings.name.as_str());
    request = match settings.kind {
        // Stripe authenticates by its secret key; the event's id keys the request too, so a
        // resend within Stripe's 24 hours gets the first answer.
        SinkKind::Stripe => {
            let id = records.first().map_or(String::new(), |r| r.id.clone());
            request.bearer_auth(String::from_utf8_lossy(&sink.key)).header("idempotency-key", id)
        }
        SinkKind::AwsMarketplace => request
            .header("x-amz-target", "AWSMPMeteringService.BatchMeterUsage")
            .header("kiosk-signature", wire::signature(&sink.key, now_ms() as i64 / 1000, &body)),
        SinkKind::Cloudevents | SinkKind::Webhook => {
            request.header("kiosk-signature", wire::signature(&sink.key, now_ms() as i64 / 1000, &body))
        }
    };
    let response = match request.body(body).send().await {
        Ok(response) => response,
        Err(e) => return Sent::Failed(client::describe(&e)),
    };
    let status = response.status().as_u16();
    match status {
        200..=299 if settings.kind == SinkKind::AwsMarketplace => match bounded(response).await {
            Ok(answer) => aws_answer(&answer, records),
            Err(why) => Sent::Failed(why),
        },
        200..=299 => Sent::Answered(vec![None; records.len()]),
        408 | 429 => Sent::Failed(format!("the receiver asked to wait (HTTP {status})")),
        300..=399 => Sent::Failed(format!("the receiver redirected (HTTP {status}), which Kiosk never follows")),
        // What the records themselves can cause: the request is split to find them.
        400 | 413 | 422 => Sent::Refused(status),
        // A wrong key, path or method refuses every request alike: the sink's setting is
        // at fault, not the records, so nothing is parked and the cursor waits.
        _ => Sent::Failed(format!("the receiver answered HTTP {status}")),
    }
}

/// The answer's body, at most `MAX_ANSWER_BYTES`.
async fn bounded(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_ANSWER_BYTES => body.extend_from_slice(&chunk),
            Ok(Some(_)) => return Err(format!("the receiver's answer is over {MAX_ANSWER_BYTES} bytes")),
            Ok(None) => return Ok(body),
            Err(e) => return Err(client::describe(&e)),
        }
    }
}

/// `BatchMeterUsage`'s answer: each record's `Status` in `Results` (found by customer,
/// dimension and timestamp); one in `UnprocessedRecords`, or not named at all, makes the
/// request a failure to retry (a record acknowledged now is acknowledged again then,
/// with the same quantity).
fn aws_answer(answer: &[u8], records: &[Record<'_>]) -> Sent {
    let Ok(answer) = serde_json::from_slice::<Value>(answer) else {
        return Sent::Failed("the receiver's answer is not BatchMeterUsage's JSON".into());
    };
    if answer["UnprocessedRecords"].as_array().is_some_and(|u| !u.is_empty()) {
        return Sent::Failed("the receiver left records unprocessed".into());
    }
    let results = answer["Results"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut outcome = Vec::with_capacity(records.len());
    for record in records {
        let key = wire::aws_record(record);
        let named = results.iter().find(|r| {
            let u = &r["UsageRecord"];
            // AWS may write the timestamp as a float (`1.6094592E9`): compared as a number.
            let same_time = u["Timestamp"].as_f64().is_some_and(|t| Some(t) == key["Timestamp"].as_f64());
            same_time && ["CustomerIdentifier", "Dimension"].iter().all(|f| u[f] == key[f])
        });
        let Some(result) = named else {
            return Sent::Failed("the receiver's answer does not name every record".into());
        };
        outcome.push(match result["Status"].as_str() {
            Some("Success") => None,
            // A changed quantity for an hour already metered, or a customer who left.
            Some(status @ ("DuplicateRecord" | "CustomerNotSubscribed")) => {
                Some(format!("the receiver answered {status}"))
            }
            _ => return Sent::Failed("the receiver answered a status Kiosk does not know".into()),
        });
    }
    Sent::Answered(outcome)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(customer: &'static str, quantity: i64) -> Record<'static> {
        Record { id: "id".into(), customer, meter: "rows", quantity, time_ms: 3_600_000, event: None, seqs: vec![1] }
    }

    #[test]
    fn aws_answers_are_read_record_by_record() {
        let records = [record("a", 1), record("b", 2)];
        let usage = |c: &str| json!({"CustomerIdentifier": c, "Dimension": "rows", "Timestamp": 3600, "Quantity": 1});
        let answer = json!({"Results": [
            {"UsageRecord": usage("b"), "Status": "DuplicateRecord"},
            {"UsageRecord": usage("a"), "Status": "Success", "MeteringRecordId": "m1"},
        ], "UnprocessedRecords": []});
        let Sent::Answered(outcome) = aws_answer(answer.to_string().as_bytes(), &records) else { panic!() };
        assert_eq!(outcome, vec![None, Some("the receiver answered DuplicateRecord".to_string())]);
        let float = br#"{"Results": [{"UsageRecord": {"CustomerIdentifier": "a", "Dimension": "rows",
            "Timestamp": 3.6E3}, "Status": "Success"}]}"#;
        assert!(matches!(aws_answer(float, &records[..1]), Sent::Answered(_)), "a timestamp written as a float");
        let unprocessed = json!({"Results": [], "UnprocessedRecords": [usage("a")]});
        assert!(matches!(aws_answer(unprocessed.to_string().as_bytes(), &records), Sent::Failed(_)));
        let partial = json!({"Results": [{"UsageRecord": usage("a"), "Status": "Success"}]});
        assert!(matches!(aws_answer(partial.to_string().as_bytes(), &records), Sent::Failed(_)));
        let odd = json!({"Results": [{"UsageRecord": usage("a"), "Status": "<script>"}]});
        let Sent::Failed(why) = aws_answer(odd.to_string().as_bytes(), &records[..1]) else { panic!() };
        assert!(!why.contains("script"), "the receiver's words are never kept: {why}");
        assert!(matches!(aws_answer(b"not json", &records), Sent::Failed(_)));
    }
}
