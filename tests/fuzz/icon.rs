//! An artifact's icon layer (`kiosk_distribution::icon::check_icon`), walked byte by byte
//! by Kiosk's own PNG and JPEG readers before the catalog serves it to browsers.
//!
//! Invariants: nothing panics; bytes are accepted as at most one of the two formats; an
//! accepted icon starts with its format's signature and ends at its end marker (IEND,
//! EOI), its sides are 16-1024 px and within 5:4 of each other, and a PNG's are the ones
//! its IHDR chunk states; no accepted icon holds an HTML, SVG or script tag (the rule
//! of `holds_markup`, checked here at every position).

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseResult;

use kiosk_distribution::icon::{IconFormat, MAX_SIDE, MIN_SIDE, check_icon};

use crate::harness::{fuzz, mutated};

#[rustfmt::skip]
const TOKENS: &[&[u8]] = &[
    b"\x89PNG\r\n\x1a\n", b"IHDR", b"IDAT", b"IEND\xaeB`\x82", b"\x00\x00\x00\x00", b"\xff\xd8", b"\xff\xd9",
    b"\xff\xc0\x00\x11\x08", b"\xff\xda", b"\xff\x00", b"\xff\xd0", b"<svg", b"<svg>", b"<script>", b"<html ", b"GIF89a",
];

/// The documented rule, at every position: an HTML, SVG or script tag followed by white
/// space, `>` or `/`.
fn holds_tag(bytes: &[u8]) -> bool {
    const TAGS: [&[u8]; 6] = [b"<svg", b"<html", b"<script", b"<iframe", b"<body", b"<!doctype"];
    (0..bytes.len()).any(|i| {
        let rest = &bytes[i..];
        TAGS.iter().any(|tag| {
            rest.len() > tag.len()
                && rest[..tag.len()].eq_ignore_ascii_case(tag)
                && matches!(rest[tag.len()], b' ' | b'\t' | b'\n' | b'\r' | b'>' | b'/')
        })
    })
}

fn check(bytes: &[u8]) -> TestCaseResult {
    let png = check_icon(IconFormat::Png, bytes);
    let jpeg = check_icon(IconFormat::Jpeg, bytes);
    prop_assert!(!(png.is_ok() && jpeg.is_ok()), "accepted as both PNG and JPEG");
    for (format, got) in [(IconFormat::Png, png), (IconFormat::Jpeg, jpeg)] {
        let Ok(info) = got else { continue };
        prop_assert_eq!(info.format, format);
        let (w, h) = (info.width, info.height);
        prop_assert!((MIN_SIDE..=MAX_SIDE).contains(&w) && (MIN_SIDE..=MAX_SIDE).contains(&h), "{}x{}", w, h);
        prop_assert!(u64::from(w.max(h)) * 4 <= u64::from(w.min(h)) * 5, "not square: {}x{}", w, h);
        prop_assert!(!holds_tag(bytes), "accepted an image holding markup");
        match format {
            IconFormat::Png => {
                prop_assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.ends_with(b"IEND\xaeB`\x82"));
                prop_assert_eq!(&bytes[12..16], b"IHDR");
                let be32 = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
                prop_assert_eq!((be32(16), be32(20)), (w, h), "sizes other than the IHDR's");
            }
            IconFormat::Jpeg => prop_assert!(bytes.starts_with(b"\xff\xd8") && bytes.ends_with(b"\xff\xd9")),
        }
    }
    Ok(())
}

/// CRC-32 (ISO-HDLC), as PNG chunks carry it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A corpus PNG whose chunks are edited (data changed, a chunk added, dropped or
/// repeated, lengths lied about) with their CRCs made right again, so that the walk goes
/// past the CRC check.
fn png_edits() -> BoxedStrategy<Vec<u8>> {
    let pngs: Vec<Vec<u8>> = crate::harness::corpus("icon").into_iter().filter(|b| b.starts_with(b"\x89PNG")).collect();
    #[derive(Debug, Clone)]
    enum Edit {
        Data(Index, Vec<u8>),
        Insert(Index, [u8; 4], Vec<u8>),
        Remove(Index),
        Repeat(Index),
        Length(Index, u32),
    }
    let kind = prop::sample::select(vec![*b"IHDR", *b"IDAT", *b"IEND", *b"tEXt", *b"PLTE", *b"iCCP", *b"zzzz"]);
    let edit = prop_oneof![
        (any::<Index>(), proptest::collection::vec(any::<u8>(), 0..24)).prop_map(|(i, d)| Edit::Data(i, d)),
        (
            any::<Index>(),
            kind,
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..16),
                Just(b"<svg>".to_vec()),
                Just(b"x <script>".to_vec())
            ]
        )
            .prop_map(|(i, k, d)| Edit::Insert(i, k, d)),
        any::<Index>().prop_map(Edit::Remove),
        any::<Index>().prop_map(Edit::Repeat),
        (any::<Index>(), prop_oneof![Just(0u32), Just(u32::MAX), Just(0x7FFF_FFFF), any::<u32>()])
            .prop_map(|(i, n)| Edit::Length(i, n)),
    ];
    (0..pngs.len(), proptest::collection::vec(edit, 1..4))
        .prop_map(move |(file, edits)| {
            let png = &pngs[file];
            // (kind, data) of each chunk; a lied-about length is applied when written.
            let mut chunks: Vec<([u8; 4], Vec<u8>, Option<u32>)> = Vec::new();
            let mut at = 8;
            while at + 12 <= png.len() {
                let len = u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]) as usize;
                let kind = [png[at + 4], png[at + 5], png[at + 6], png[at + 7]];
                chunks.push((kind, png[at + 8..at + 8 + len].to_vec(), None));
                at += 12 + len;
            }
            for edit in edits {
                let n = chunks.len();
                match edit {
                    Edit::Data(i, d) if n > 0 => chunks[i.index(n)].1 = d,
                    Edit::Insert(i, k, d) => chunks.insert(i.index(n + 1), (k, d, None)),
                    Edit::Remove(i) if n > 0 => {
                        chunks.remove(i.index(n));
                    }
                    Edit::Repeat(i) if n > 0 => {
                        let c = chunks[i.index(n)].clone();
                        chunks.insert(i.index(n), c);
                    }
                    Edit::Length(i, len) if n > 0 => chunks[i.index(n)].2 = Some(len),
                    _ => {}
                }
            }
            let mut out = png[..8].to_vec();
            for (kind, data, len) in chunks {
                out.extend(len.unwrap_or(data.len() as u32).to_be_bytes());
                let start = out.len();
                out.extend(kind);
                out.extend(&data);
                let crc = crc32(&out[start..]);
                out.extend(crc.to_be_bytes());
            }
            out
        })
        .boxed()
}

#[test]
fn icon() {
    let strategy = prop_oneof![
        6 => mutated("icon", TOKENS),
        3 => png_edits(),
        1 => proptest::collection::vec(any::<u8>(), 0..128),
    ];
    fuzz("icon", strategy, |bytes| check(&bytes));
}
