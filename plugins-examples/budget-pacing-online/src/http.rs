//! A small blocking client over `wasi:http/outgoing-handler` (what a Rust app's HTTP
//! crate does underneath). The host decides where a request may go, substitutes the
//! tenant's secrets for their placeholders and bounds everything; this only speaks.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

/// The most of a response body the app reads (a month of spend rows is a few KiB).
const MAX_BODY: usize = 256 * 1024;

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends `method url` with `headers` and `body`; the response, or why there is none
/// (the host's wasi-http error code, e.g. `HttpRequestDenied`).
pub fn send(method: Method, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Result<Response, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some(("http", rest)) => (Scheme::Http, rest),
        _ => return Err(format!("{url:?} is not an http(s) URL")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields.append(name, value.as_bytes()).map_err(|e| format!("header {name}: {e:?}"))?;
    }
    // A known length (else the body goes chunked, which some webhook receivers refuse).
    if let Some(bytes) = body {
        fields.append("content-length", bytes.len().to_string().as_bytes()).map_err(|e| format!("{e:?}"))?;
    }
    let request = OutgoingRequest::new(fields);
    request.set_method(&method).map_err(|()| "the method was refused".to_string())?;
    request.set_scheme(Some(&scheme)).map_err(|()| "the scheme was refused".to_string())?;
    request.set_authority(Some(authority)).map_err(|()| format!("the host {authority:?} was refused"))?;
    request.set_path_with_query(Some(path)).map_err(|()| "the path was refused".to_string())?;
    let outgoing = request.body().map_err(|()| "no request body".to_string())?;
    let future = outgoing_handler::handle(request, None).map_err(|e| code(&e))?;
    if let Some(bytes) = body {
        let stream = outgoing.write().map_err(|()| "no request body stream".to_string())?;
        for chunk in bytes.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| stream_error(&e))?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(|e| code(&e))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(code(&e)),
        _ => return Err("no response".into()),
    };
    let status = response.status();
    let incoming = response.consume().map_err(|()| "no response body".to_string())?;
    let stream = incoming.stream().map_err(|()| "no response body stream".to_string())?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) if body.len() + chunk.len() > MAX_BODY => {
                return Err(format!("the response is larger than {} KiB", MAX_BODY / 1024));
            }
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(stream_error(&e)),
        }
    }
    Ok(Response { status, body })
}

fn stream_error(e: &StreamError) -> String {
    match e {
        StreamError::Closed => "the connection closed early".into(),
        StreamError::LastOperationFailed(err) => {
            wasip2::http::types::http_error_code(err).map_or_else(|| err.to_debug_string(), |c| code(&c))
        }
    }
}

/// The error code (the host names the limit or refusal in the installation's log).
fn code(e: &ErrorCode) -> String {
    format!("{e:?}")
}

/// `text` with every byte but RFC 3986's unreserved ones percent-encoded (a path segment).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
