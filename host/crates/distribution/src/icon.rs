//! The optional icon layer of an artifact (SPEC §3, catalog metadata): one OCI layer of
//! media type `image/png` or `image/jpeg`, size-capped before download
//! (`SizeCaps::icon_bytes`), signed by the partner like the manifest and the component,
//! and exactly one image of the declared type: its structure is walked from the first
//! byte to the end marker (PNG: signature, IHDR first, chunk CRCs, IDAT, IEND; JPEG: SOI,
//! segments, a frame header, scans, EOI), so nothing can follow the image (polyglots:
//! HTML or ZIP appended), its dimensions are the header's, and SVG (a document that can
//! carry script) or markup is refused whatever the layer says it is, as is an image
//! with an HTML, SVG or script element inside.
//!
//! The walk is written here rather than taken from an image crate: it reads no pixel
//! data, allocates nothing, and the end-of-image position it yields is what the
//! trailing-data rule needs (decoders stop at the end marker and ignore the rest).

use crate::artifact::Descriptor;
use crate::trust::Signer;
use kiosk_domain::digest::Digest;

pub const PNG_MEDIA_TYPE: &str = "image/png";
pub const JPEG_MEDIA_TYPE: &str = "image/jpeg";
pub const SVG_MEDIA_TYPE: &str = "image/svg+xml";

/// Default cap of the icon layer, bytes: a 512 px PNG icon is 20-150 KiB, and the
/// catalog serves icons to every tenant's browser.
pub const DEFAULT_ICON_BYTES: u64 = 256 * 1024;

/// Smallest side of an icon, px: anything smaller is a blur at catalog-card size.
pub const MIN_SIDE: u32 = 16;

/// Largest side of an icon, px: shown at most a few hundred px wide, so larger only
/// costs the browser memory (a 1024 px RGBA image decodes to 4 MiB).
pub const MAX_SIDE: u32 = 1024;

/// An icon's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IconFormat {
    Png,
    Jpeg,
}

impl IconFormat {
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            PNG_MEDIA_TYPE => Some(Self::Png),
            JPEG_MEDIA_TYPE => Some(Self::Jpeg),
            _ => None,
        }
    }

    /// The format a file name's extension says (`.png`, `.jpg`, `.jpeg`, any case).
    pub fn from_file_name(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(Self::Png),
            "jpg" | "jpeg" => Some(Self::Jpeg),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Self::Png => PNG_MEDIA_TYPE,
            Self::Jpeg => JPEG_MEDIA_TYPE,
        }
    }

    /// The layer's file name (`org.opencontainers.image.title`) and the one served.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Png => "icon.png",
            Self::Jpeg => "icon.jpg",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Png => "PNG",
            Self::Jpeg => "JPEG",
        }
    }
}

/// What the icon's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IconInfo {
    pub format: IconFormat,
    pub width: u32,
    pub height: u32,
}

/// An icon whose layer was signed by the partner and whose bytes are one image.
#[derive(Debug, Clone)]
pub struct VerifiedIcon {
    pub info: IconInfo,
    pub digest: Digest,
    pub bytes: Vec<u8>,
    pub signer: Signer,
}

impl VerifiedIcon {
    pub fn media_type(&self) -> &'static str {
        self.info.format.media_type()
    }
}

/// Why an icon was refused: each names the icon layer and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IconError {
    #[error("the artifact has {found} icon layers: at most one ({PNG_MEDIA_TYPE} or {JPEG_MEDIA_TYPE}) is allowed")]
    Several { found: usize },
    #[error(
        "the icon layer is {SVG_MEDIA_TYPE}: SVG icons are refused (an SVG document can carry script); ship a PNG \
         or JPEG"
    )]
    Svg,
    #[error("the icon layer is {found}: an icon is {PNG_MEDIA_TYPE} or {JPEG_MEDIA_TYPE}")]
    MediaType { found: String },
    #[error(
        "the icon layer ({declared}) holds markup (SVG, XML, HTML or script), not an image: an icon is one PNG or \
         JPEG image"
    )]
    Markup { declared: &'static str },
    #[error("the icon layer is declared {declared} but holds {found}: the media type must match the bytes")]
    Mismatch { declared: &'static str, found: &'static str },
    #[error("the icon layer ({declared}) is not a valid {format}: {reason}")]
    Malformed { declared: &'static str, format: &'static str, reason: String },
    #[error(
        "the icon layer ({declared}) has {extra} bytes after the end of its image ({end}): an icon is exactly one \
         image, with nothing appended"
    )]
    Trailing { declared: &'static str, extra: usize, end: &'static str },
    #[error("the icon is {width}x{height} px: each side must be {MIN_SIDE}-{MAX_SIDE} px")]
    Size { width: u32, height: u32 },
    #[error("the icon is {width}x{height} px: it must be square (its sides within 5:4 of each other)")]
    NotSquare { width: u32, height: u32 },
}

/// Whether a layer of `media_type` is an image (an icon candidate, checked by
/// [`icon_layer`]) rather than an undeclared layer.
pub fn is_image(media_type: &str) -> bool {
    media_type.starts_with("image/")
}

/// The icon among the artifact's image layers: none, or one PNG or JPEG. SVG, another
/// image type and a second icon are refused before anything is downloaded.
pub fn icon_layer<'a>(images: &[&'a Descriptor]) -> Result<Option<(&'a Descriptor, IconFormat)>, IconError> {
    if images.iter().any(|d| d.media_type == SVG_MEDIA_TYPE) {
        return Err(IconError::Svg);
    }
    match images {
        [] => Ok(None),
        [one] => match IconFormat::from_media_type(&one.media_type) {
            Some(format) => Ok(Some((one, format))),
            None => Err(IconError::MediaType { found: crate::artifact::shown_media_type(&one.media_type) }),
        },
        more => Err(IconError::Several { found: more.len() }),
    }
}

/// Checks that `bytes`, declared as `format`, are exactly one image of that format with
/// acceptable dimensions (see the module documentation).
pub fn check_icon(format: IconFormat, bytes: &[u8]) -> Result<IconInfo, IconError> {
    let declared = format.media_type();
    if starts_as_markup(bytes) {
        return Err(IconError::Markup { declared });
    }
    let found = sniff(bytes);
    if let Some(found) = found.filter(|f| *f != format.name()) {
        return Err(IconError::Mismatch { declared, found: article(found) });
    }
    let malformed = |reason: String| IconError::Malformed { declared, format: format.name(), reason };
    let (width, height, end) = match format {
        IconFormat::Png => png(bytes).map_err(malformed)?,
        IconFormat::Jpeg => jpeg(bytes).map_err(malformed)?,
    };
    if end < bytes.len() {
        let end_marker = if format == IconFormat::Png { "its IEND chunk" } else { "its EOI marker" };
        return Err(IconError::Trailing { declared, extra: bytes.len() - end, end: end_marker });
    }
    if holds_markup(bytes) {
        return Err(IconError::Markup { declared });
    }
    if !(MIN_SIDE..=MAX_SIDE).contains(&width) || !(MIN_SIDE..=MAX_SIDE).contains(&height) {
        return Err(IconError::Size { width, height });
    }
    let (long, short) = (width.max(height) as u64, width.min(height) as u64);
    if long * 4 > short * 5 {
        return Err(IconError::NotSquare { width, height });
    }
    Ok(IconInfo { format, width, height })
}

/// The icon of a verified artifact: its layer `desc`, signed (by `signer`) and checked.
pub fn verified(
    desc: &Descriptor,
    format: IconFormat,
    bytes: Vec<u8>,
    signer: Signer,
) -> Result<VerifiedIcon, IconError> {
    let info = check_icon(format, &bytes)?;
    let digest = Digest::of(&bytes);
    debug_assert_eq!(digest.as_str(), desc.digest, "fetched blobs are checked against their digest");
    Ok(VerifiedIcon { info, digest, bytes, signer })
}

fn article(format: &str) -> &'static str {
    match format {
        "PNG" => "a PNG image",
        "JPEG" => "a JPEG image",
        "GIF" => "a GIF image",
        "WebP" => "a WebP image",
        "BMP" => "a BMP image",
        "ZIP" => "a ZIP archive",
        "PDF" => "a PDF document",
        _ => "other content",
    }
}

/// What the first bytes say the content is.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    let starts = |prefix: &[u8]| bytes.starts_with(prefix);
    if starts(&PNG_SIGNATURE) {
        Some("PNG")
    } else if starts(&[0xFF, 0xD8, 0xFF]) {
        Some("JPEG")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some("GIF")
    } else if starts(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        Some("WebP")
    } else if starts(b"BM") {
        Some("BMP")
    } else if starts(b"PK\x03\x04") {
        Some("ZIP")
    } else if starts(b"%PDF") {
        Some("PDF")
    } else {
        None
    }
}

/// Whether the content starts as markup: after a UTF-8 or UTF-16 byte-order mark and
/// white space, a `<` (`<svg`, `<?xml`, `<!DOCTYPE html>`, `<html>`, `<script>`, any tag).
fn starts_as_markup(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    for bom in [&[0xEF, 0xBB, 0xBF][..], &[0xFE, 0xFF], &[0xFF, 0xFE]] {
        if let Some(r) = rest.strip_prefix(bom) {
            rest = r;
            break;
        }
    }
    rest.iter().find(|b| !b.is_ascii_whitespace() && **b != 0) == Some(&b'<')
}

/// Whether an image holds an HTML or SVG root or a script element anywhere (a document
/// hidden in a chunk or segment, for a browser that would sniff it). The tags are
/// matched with the character after them, so image data matches by chance about once
/// in 2^40 bytes.
fn holds_markup(bytes: &[u8]) -> bool {
    const TAGS: [&[u8]; 6] = [b"<svg", b"<html", b"<script", b"<iframe", b"<body", b"<!doctype"];
    // Every position, to the end: a tag in the last bytes (before a JPEG's EOI) counts too.
    (0..bytes.len()).any(|at| {
        let w = &bytes[at..];
        TAGS.iter().any(|tag| {
            w.len() > tag.len()
                && w[..tag.len()].eq_ignore_ascii_case(tag)
                && matches!(w[tag.len()], b' ' | b'\t' | b'\n' | b'\r' | b'>' | b'/')
        })
    })
}

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Walks a PNG: (width, height, the offset just after IEND).
fn png(b: &[u8]) -> Result<(u32, u32, usize), String> {
    if !b.starts_with(&PNG_SIGNATURE) {
        return Err("it does not start with the PNG signature".into());
    }
    let (mut at, mut size, mut idat) = (PNG_SIGNATURE.len(), None, false);
    loop {
        if at + 8 > b.len() {
            return Err("it ends before its IEND chunk".into());
        }
        let len = be32(b, at) as usize;
        let kind = &b[at + 4..at + 8];
        let name = String::from_utf8_lossy(kind).into_owned();
        if !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err(format!("a chunk type at byte {} is not four letters", at + 4));
        }
        let end = at.checked_add(12).and_then(|n| n.checked_add(len)).filter(|end| *end <= b.len());
        let Some(end) = end else {
            return Err(format!("chunk {name} runs past the end of the file"));
        };
        if crc32(&b[at + 4..end - 4]) != be32(b, end - 4) {
            return Err(format!("chunk {name} fails its CRC"));
        }
        let data = &b[at + 8..end - 4];
        match (kind, size) {
            (b"IHDR", None) => size = Some(ihdr(data)?),
            (b"IHDR", Some(_)) => return Err("it has a second IHDR chunk".into()),
            (_, None) => return Err(format!("its first chunk is {name}, not IHDR")),
            (b"IDAT", _) => idat = true,
            (b"IEND", Some((width, height))) => {
                if !idat {
                    return Err("it has no IDAT chunk (no image data)".into());
                }
                if len != 0 {
                    return Err("its IEND chunk is not empty".into());
                }
                return Ok((width, height, end));
            }
            _ => {}
        }
        at = end;
    }
}

/// The IHDR chunk's width and height, after checking its fields.
fn ihdr(data: &[u8]) -> Result<(u32, u32), String> {
    if data.len() != 13 {
        return Err(format!("its IHDR chunk is {} bytes, not 13", data.len()));
    }
    let (width, height) = (be32(data, 0), be32(data, 4));
    if width == 0 || height == 0 || width > i32::MAX as u32 || height > i32::MAX as u32 {
        return Err(format!("its IHDR gives a size of {width}x{height}"));
    }
    let (depth, color) = (data[8], data[9]);
    let valid_depth = match color {
        0 => matches!(depth, 1 | 2 | 4 | 8 | 16),
        3 => matches!(depth, 1 | 2 | 4 | 8),
        2 | 4 | 6 => matches!(depth, 8 | 16),
        _ => false,
    };
    if !valid_depth {
        return Err(format!("its IHDR gives colour type {color} with bit depth {depth}, which PNG does not define"));
    }
    if data[10] != 0 || data[11] != 0 || data[12] > 1 {
        return Err("its IHDR names an unknown compression, filter or interlace method".into());
    }
    Ok((width, height))
}

/// CRC-32 (ISO-HDLC, as PNG uses it).
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

/// Walks a JPEG: (width, height, the offset just after EOI).
fn jpeg(b: &[u8]) -> Result<(u32, u32, usize), String> {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return Err("it does not start with a JPEG SOI marker".into());
    }
    let (mut at, mut size) = (2, None);
    loop {
        if at >= b.len() {
            return Err("it ends before its EOI marker".into());
        }
        if b[at] != 0xFF {
            return Err(format!("byte {at} should start a marker"));
        }
        while at < b.len() && b[at] == 0xFF {
            at += 1; // fill bytes
        }
        let Some(&marker) = b.get(at) else {
            return Err("it ends before its EOI marker".into());
        };
        at += 1;
        match marker {
            0xD9 => {
                let Some((width, height)) = size else {
                    return Err("it has no frame header (SOF)".into());
                };
                return Ok((width, height, at));
            }
            0xD8 => return Err("it has a second SOI marker".into()),
            0x00 => return Err(format!("byte {} is a stray 0xFF 0x00 outside a scan", at - 2)),
            0x01 | 0xD0..=0xD7 => continue, // no length
            _ => {}
        }
        if at + 2 > b.len() {
            return Err("it ends inside a segment".into());
        }
        let len = usize::from(be16(b, at));
        if len < 2 || at + len > b.len() {
            return Err(format!("the segment of marker 0x{marker:02X} runs past the end of the file"));
        }
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            if len < 8 {
                return Err("its frame header is too short".into());
            }
            if size.is_some() {
                return Err("it has a second frame header".into());
            }
            let (height, width) = (u32::from(be16(b, at + 3)), u32::from(be16(b, at + 5)));
            if width == 0 || height == 0 {
                return Err(format!("its frame header gives a size of {width}x{height}"));
            }
            size = Some((width, height));
        }
        at += len;
        if marker == 0xDA {
            if size.is_none() {
                return Err("a scan comes before the frame header".into());
            }
            // Entropy-coded data: up to a marker other than a stuffed 0x00 or a restart.
            loop {
                if at + 1 >= b.len() {
                    return Err("it ends inside a scan".into());
                }
                if b[at] == 0xFF && !matches!(b[at + 1], 0x00 | 0xD0..=0xD7) {
                    break;
                }
                at += if b[at] == 0xFF { 2 } else { 1 };
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_one_png_uses() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn markup_is_found_at_the_start_or_as_a_root_element_anywhere() {
        assert!(starts_as_markup(b"\xEF\xBB\xBF  <svg xmlns=\"http://www.w3.org/2000/svg\"/>"));
        assert!(starts_as_markup(b"<?xml version=\"1.0\"?><x/>"));
        assert!(!starts_as_markup(b"\x89PNG....<svg>"));
        assert!(holds_markup(b"\x89PNG....<SCRIPT>alert(1)</script>"));
        assert!(!holds_markup(b"\x89PNG\r\n\x1a\n<svgx <htmlfoo"));
    }

    #[test]
    fn an_odd_image_media_type_is_named() {
        let d = Descriptor {
            media_type: "image/gif".into(),
            digest: String::new(),
            size: 1,
            annotations: Default::default(),
        };
        assert_eq!(icon_layer(&[&d]).unwrap_err(), IconError::MediaType { found: "image/gif".into() });
        let svg = Descriptor { media_type: SVG_MEDIA_TYPE.into(), ..d.clone() };
        assert_eq!(icon_layer(&[&svg]).unwrap_err(), IconError::Svg);
        let png = Descriptor { media_type: PNG_MEDIA_TYPE.into(), ..d };
        assert_eq!(icon_layer(&[&png, &png]).unwrap_err(), IconError::Several { found: 2 });
    }
}
