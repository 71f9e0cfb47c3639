//! How `kiosk admin` prints answers as tables: one row per item, cells sanitised and cut.

use std::io::IsTerminal;

use comfy_table::{ContentArrangement, Table, presets};
use serde_json::Value;

use kiosk_domain::text::sanitize_capped;

/// A table cell longer than this is cut (the JSON output is never cut).
const MAX_CELL_CHARS: usize = 80;

pub(super) fn new_table() -> Table {
    let mut table = Table::new();
    // Box drawing for people; plain ASCII when piped into another program.
    table.load_preset(if std::io::stdout().is_terminal() {
        presets::UTF8_FULL_CONDENSED
    } else {
        presets::ASCII_MARKDOWN
    });
    table.set_content_arrangement(ContentArrangement::Dynamic);
    table
}

pub(super) fn print_table(columns: &[(&str, &str)], items: &[Value]) {
    let mut table = new_table();
    table.set_header(columns.iter().map(|(header, _)| *header));
    for item in items {
        table.add_row(columns.iter().map(|(_, member)| item.get(*member).map(cell).unwrap_or_default()));
    }
    println!("{table}");
    eprintln!("({} {})", items.len(), if items.len() == 1 { "item" } else { "items" });
}

/// A JSON value as one table cell: text as is (sanitised for the terminal), other
/// values as compact JSON, cut at `MAX_CELL_CHARS`.
pub(super) fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = sanitize_capped(&text, 4096);
    if text.chars().count() > MAX_CELL_CHARS {
        let cut: String = text.chars().take(MAX_CELL_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}
