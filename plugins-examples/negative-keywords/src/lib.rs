//! Negative Keywords: keeps a tenant's negative keyword lists and checks search terms
//! against them.
//!
//! Operations:
//! - `add` `{"list": "brand-safety", "keywords": ["free", "cheap"]}` stores keywords
//!   (lower-cased, deduplicated) in the installation's key-value storage.
//! - `check` `{"list": "brand-safety", "terms": ["cheap flights", "flights"]}` answers which
//!   terms contain a negative keyword.
//! - `lists` `{}` lists the stored lists with their sizes.
//!
//! The configuration's `maxKeywordsPerList` bounds each list.

// The bindings wit-bindgen generates for the canonical ABI are `unsafe` inside.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../wit/app@0.1.0",
    world: "app",
});

use std::collections::BTreeSet;

use exports::kiosk::app::{calls, lifecycle, usage};
use kiosk::app::types::{AppError, CallContext, UsageRecord, UsageWindow};
use kiosk::app::{key_value, log};
use serde::Deserialize;

struct NegativeKeywords;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    max_keywords_per_list: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddInput {
    list: String,
    keywords: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckInput {
    list: String,
    terms: Vec<String>,
}

fn err(code: &str, message: impl Into<String>) -> AppError {
    AppError { code: code.into(), message: message.into() }
}

fn kv<T>(r: Result<T, key_value::KvError>) -> Result<T, AppError> {
    r.map_err(|e| err("storage", format!("key-value storage failed: {e:?}")))
}

fn parse<'a, T: Deserialize<'a>>(what: &str, text: &'a str) -> Result<T, AppError> {
    serde_json::from_str(text).map_err(|e| err(&format!("invalid-{what}"), format!("{what} is not valid: {e}")))
}

fn parse_config(config: &str) -> Result<Config, AppError> {
    let config: Config = parse("config", config)?;
    if config.max_keywords_per_list == 0 {
        return Err(err("invalid-config", "maxKeywordsPerList must be positive"));
    }
    Ok(config)
}

const CONFIG_KEY: &str = "config";

fn list_key(list: &str) -> Result<String, AppError> {
    if list.is_empty() || list.len() > 64 || !list.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(err("invalid-input", "list names are 1-64 characters of a-z, 0-9 and '-'"));
    }
    Ok(format!("list/{list}"))
}

fn load_list(key: &str) -> Result<BTreeSet<String>, AppError> {
    match kv(key_value::get(key))? {
        Some(raw) => serde_json::from_slice(&raw).map_err(|e| err("corrupt-state", e.to_string())),
        None => Ok(BTreeSet::new()),
    }
}

fn add(input: &str) -> Result<String, AppError> {
    let raw = kv(key_value::get(CONFIG_KEY))?.ok_or_else(|| err("not-installed", "install first"))?;
    let config = parse_config(&String::from_utf8_lossy(&raw))?;
    let input: AddInput = parse("input", input)?;
    let key = list_key(&input.list)?;
    let mut list = load_list(&key)?;
    let before = list.len();
    list.extend(input.keywords.iter().map(|k| k.trim().to_lowercase()).filter(|k| !k.is_empty()));
    if list.len() > config.max_keywords_per_list {
        return Err(err(
            "list-full",
            format!(
                "list {} would hold {} keywords; the limit is {}",
                input.list,
                list.len(),
                config.max_keywords_per_list
            ),
        ));
    }
    let encoded = serde_json::to_vec(&list).map_err(|e| err("internal", e.to_string()))?;
    kv(key_value::set(&key, &encoded))?;
    log::log(log::Level::Info, &format!("list {}: {} keywords added", input.list, list.len() - before));
    Ok(serde_json::json!({"list": input.list, "added": list.len() - before, "size": list.len()}).to_string())
}

fn check(input: &str) -> Result<String, AppError> {
    let input: CheckInput = parse("input", input)?;
    let list = load_list(&list_key(&input.list)?)?;
    let blocked: Vec<_> = input
        .terms
        .iter()
        .filter_map(|term| {
            let lower = term.to_lowercase();
            list.iter().find(|k| lower.contains(k.as_str())).map(|k| serde_json::json!({"term": term, "keyword": k}))
        })
        .collect();
    Ok(serde_json::json!({"list": input.list, "blocked": blocked}).to_string())
}

fn lists() -> Result<String, AppError> {
    let mut out = serde_json::Map::new();
    for key in kv(key_value::list_keys("list/"))? {
        let size = load_list(&key)?.len();
        out.insert(key.trim_start_matches("list/").to_string(), size.into());
    }
    Ok(serde_json::Value::Object(out).to_string())
}

impl lifecycle::Guest for NegativeKeywords {
    fn install(_ctx: CallContext, config: String) -> Result<(), AppError> {
        parse_config(&config)?;
        kv(key_value::set(CONFIG_KEY, config.as_bytes()))
    }
    fn validate_config(_ctx: CallContext, config: String) -> Result<(), AppError> {
        parse_config(&config).map(|_| ())
    }
    fn configure(_ctx: CallContext, _old: String, new: String) -> Result<(), AppError> {
        parse_config(&new)?;
        kv(key_value::set(CONFIG_KEY, new.as_bytes()))
    }
    fn upgrade(_ctx: CallContext, _from: String, config: String) -> Result<(), AppError> {
        parse_config(&config)?;
        kv(key_value::set(CONFIG_KEY, config.as_bytes()))
    }
    fn uninstall(_ctx: CallContext) -> Result<(), AppError> {
        Ok(())
    }
}

impl calls::Guest for NegativeKeywords {
    fn invoke(_ctx: CallContext, operation: String, input: String) -> Result<String, AppError> {
        match operation.as_str() {
            "add" => add(&input),
            "check" => check(&input),
            "lists" => lists(),
            other => Err(err("unknown-operation", format!("no operation named {other:?}"))),
        }
    }
}

impl usage::Guest for NegativeKeywords {
    fn report(ctx: CallContext, window: UsageWindow) -> Result<Vec<UsageRecord>, AppError> {
        let lists = kv(key_value::list_keys("list/"))?.len() as u64;
        Ok(if lists == 0 {
            Vec::new()
        } else {
            vec![UsageRecord {
                sku: "stored-lists".into(),
                quantity: lists,
                idempotency_key: format!("{}:stored-lists:{}", ctx.installation_id, window.start_ms),
            }]
        })
    }
}

export!(NegativeKeywords);
