//! Text that came from a guest, a partner or a registry, made safe to show.

/// Removes control characters (ANSI escapes, bells, newlines, NUL) and the Unicode
/// bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C) so a
/// line can be shown in a terminal, a log file or a web page without letting the guest
/// forge or visually reorder output.
pub fn sanitize(message: &str) -> String {
    message.chars().filter(|c| !is_hidden(*c)).collect()
}

/// `sanitize`, then cut to at most `max_bytes` (on a character boundary), marking a cut
/// with `…`. Guest text shown anywhere goes through this.
pub fn sanitize_capped(message: &str, max_bytes: usize) -> String {
    let clean = sanitize(message);
    if clean.len() <= max_bytes {
        return clean;
    }
    let marker = '…';
    let mut end = max_bytes.saturating_sub(marker.len_utf8());
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = clean[..end].to_string();
    cut.push(marker);
    cut
}

fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_stripped() {
        assert_eq!(sanitize("a\u{1b}[31mred\u{7}\nnext\tline"), "a[31mrednextline");
    }

    #[test]
    fn bidi_overrides_are_stripped_and_long_text_is_capped_on_a_char_boundary() {
        assert_eq!(sanitize("abc\u{202E}fed\u{2066}x\u{0}"), "abcfedx");
        let capped = sanitize_capped(&"é".repeat(10), 8);
        assert!(capped.len() <= 8, "{capped}");
        assert_eq!(capped, "éé…");
        assert_eq!(sanitize_capped("short", 8), "short");
    }
}
