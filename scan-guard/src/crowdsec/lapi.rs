//! A minimal HTTP/1.1 client for the CrowdSec Local API: `http://` over a tokio
//! `TcpStream`, or `https://` through rustls (see [`super::tls`]), one connection
//! per request (`Connection: close`), bounded in time and size. Responses with
//! `Content-Length`, chunked transfer encoding or neither (read to the end) are
//! understood.

use std::{fmt, io, sync::Arc, time::Duration};

use rustls::{ClientConfig, pki_types::ServerName};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

/// Largest response accepted (a startup stream with a big community blocklist is
/// a few MiB).
pub const MAX_RESPONSE: usize = 64 << 20;

/// Where the Local API is: `http(s)://HOST[:PORT][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://`.
    tls: bool,
    /// Host name or address, without brackets.
    host: String,
    port: u16,
    /// `HOST:PORT` as written (brackets kept), for the `Host` header.
    authority: String,
    /// Path prefix without a trailing slash (usually empty).
    prefix: String,
    /// The URL as given, for messages.
    url: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let (tls, rest) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            _ => {
                return Err(format!(
                    "{url:?} is not an http://HOST:PORT or https://HOST:PORT URL"
                ));
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url:?}: expected http(s)://HOST:PORT"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the address"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{url:?}: expected :PORT after ]"))?,
                ),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains(':') && !authority.starts_with('[') {
            return Err(format!(
                "{url:?}: bad host (write IPv6 addresses as [ADDR]:PORT)"
            ));
        }
        let port = match port {
            None if tls => 443,
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{url:?}: bad port {p:?}"))?,
        };
        if path.contains(['?', '#']) {
            return Err(format!("{url:?}: no query or fragment expected"));
        }
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            prefix: path.trim_end_matches('/').to_string(),
            url: url.to_string(),
        })
    }

    /// The URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `https://`: needs a TLS configuration ([`Client::new`]).
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

/// The Local API and how to reach it: plain TCP, or TLS with the server's name
/// (a DNS name or an address, checked against its certificate).
#[derive(Clone)]
pub struct Client {
    ep: Endpoint,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Client {
    /// `tls` must be given exactly for `https://` endpoints.
    pub fn new(ep: Endpoint, tls: Option<Arc<ClientConfig>>) -> Result<Self, String> {
        let tls = match (ep.tls, tls) {
            (false, None) => None,
            (true, Some(cfg)) => {
                let name = ServerName::try_from(ep.host.clone())
                    .map_err(|e| format!("{:?}: host {:?}: {e}", ep.url, ep.host))?;
                Some((TlsConnector::from(cfg), name))
            }
            (true, None) => return Err(format!("{:?}: https without TLS settings", ep.url)),
            (false, Some(_)) => return Err(format!("{:?}: TLS settings for plain http", ep.url)),
        };
        Ok(Self { ep, tls })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// One request; the whole exchange (connect, TLS handshake, answer) is
    /// bounded by `limit`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        limit: Duration,
    ) -> Result<Response, HttpError> {
        let req = request_bytes(&self.ep, method, path, headers, body);
        let exchange = async {
            let tcp = TcpStream::connect((self.ep.host.as_str(), self.ep.port))
                .await
                .map_err(HttpError::Connect)?;
            match &self.tls {
                None => exchange(tcp, &req).await,
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(HttpError::Tls)?;
                    exchange(tls, &req).await
                }
            }
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(limit)),
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.ep.url)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// A complete response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The body's end was announced (`Content-Length` or chunked), not just
    /// the end of the connection.
    pub framed: bool,
}

impl Response {
    /// The Local API's error text (`{"message": ...}`), else the start of the body.
    pub fn message(&self) -> String {
        let text = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        let text = text.trim();
        match text.char_indices().nth(200) {
            Some((i, _)) => format!("{}...", &text[..i]),
            None => text.to_string(),
        }
    }
}

#[derive(Debug)]
pub enum HttpError {
    /// Could not connect (the Local API is down or restarting, wrong address).
    Connect(io::Error),
    /// The connection broke while talking.
    Io(io::Error),
    /// The TLS handshake failed (an untrusted or mismatched server certificate,
    /// a client certificate the server refused, not a TLS server at all).
    Tls(io::Error),
    Timeout(Duration),
    TooLarge,
    /// Not an HTTP response we understand.
    Malformed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Io(e) => write!(f, "connection failed: {e}"),
            Self::Tls(e) => write!(
                f,
                "TLS failed: {e} (check crowdsec.ca_cert, the client certificate if one is set, and the Local API's certificate)"
            ),
            Self::Timeout(t) => write!(f, "no complete answer within {}s", t.as_secs()),
            Self::TooLarge => write!(f, "response larger than {} MiB", MAX_RESPONSE >> 20),
            Self::Malformed(m) => write!(f, "malformed HTTP response: {m}"),
        }
    }
}

/// TLS alerts after the handshake (TLS 1.3 reports a refused client certificate
/// only then) are TLS failures too.
fn io_error(e: io::Error) -> HttpError {
    if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) {
        HttpError::Tls(e)
    } else {
        HttpError::Io(e)
    }
}

fn request_bytes(
    ep: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut req = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: scan-guard/{}\r\nAccept: application/json\r\nConnection: close\r\n",
        ep.prefix,
        ep.authority,
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in headers {
        req.push_str(k);
        req.push_str(": ");
        req.push_str(v);
        req.push_str("\r\n");
    }
    if let Some(b) = body {
        req.push_str("Content-Type: application/json\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    req: &[u8],
) -> Result<Response, HttpError> {
    stream.write_all(req).await.map_err(io_error)?;
    stream.flush().await.map_err(io_error)?;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut clean_end = true;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify: fine when the answer
            // says how long it is (checked by the parser), not otherwise.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                clean_end = false;
                0
            }
            Err(e) => return Err(io_error(e)),
        };
        if n == 0 {
            break;
        }
        if raw.len() + n > MAX_RESPONSE {
            return Err(HttpError::TooLarge);
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let resp = parse_response(&raw)?;
    if !clean_end && !resp.framed {
        return Err(HttpError::Malformed(
            "TLS connection closed without close_notify and the body has no length".into(),
        ));
    }
    Ok(resp)
}

/// Parses a complete HTTP/1.x response read up to the end of the connection.
pub fn parse_response(raw: &[u8]) -> Result<Response, HttpError> {
    let bad = |m: &str| HttpError::Malformed(m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers (connection closed early?)"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers are not UTF-8"))?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad(&format!("status line {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(&format!("status line {status_line:?}")))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        } else if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| bad(&format!("Content-Length {v:?}")))?,
            );
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        if rest.len() < n {
            return Err(bad(&format!(
                "body cut short: {} of {n} bytes (connection closed early?)",
                rest.len()
            )));
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        body,
        framed: chunked || length.is_some(),
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, HttpError> {
    let bad = |m: &str| HttpError::Malformed(format!("chunked body: {m}"));
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("cut short"))?;
        let line = std::str::from_utf8(&data[..eol]).map_err(|_| bad("size line"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(&format!("size {size_text:?}")))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 || &data[size..size + 2] != b"\r\n" {
            return Err(bad("cut short"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("127.0.0.1", 8080, "")
        );
        let e = Endpoint::parse("http://[::1]:8081/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str()),
            ("::1", 8081, "[::1]:8081")
        );
        let e = Endpoint::parse("HTTP://lapi.example/api/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("lapi.example", 80, "/api")
        );
        let e = Endpoint::parse("https://127.0.0.1:8443").unwrap();
        assert!(e.is_tls() && e.port == 8443);
        assert_eq!(Endpoint::parse("HTTPS://lapi.example").unwrap().port, 443);
        assert!(!Endpoint::parse("http://h").unwrap().is_tls());
        for bad in [
            "127.0.0.1:8080",
            "ftp://h:21",
            "https://",
            "http://",
            "http://:80",
            "http://h:0",
            "http://h:99999",
            "http://u@h:1",
            "http://::1:8080",
            "http://[::1",
            "http://h:1/x?y",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses() {
        let r = parse_response(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n{\"message\":\"access forbidden\"}",
        )
        .unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(r.message(), "access forbidden");
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"{\"a\":1}");
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\nto the end").unwrap();
        assert_eq!(r.body, b"to the end");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
                .is_err()
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
