//! The CrowdSec Local API client: one HTTP/1.1 exchange per connection
//! (`Connection: close`) spoken by hyper, over a tokio `TcpStream` for `http://`
//! or rustls for `https://` (see [`super::tls`]), bounded in time and size.
//!
//! Connecting and the TLS handshake stay ours (hyper's client connection API
//! takes any stream), so each failure keeps a kind of its own ([`HttpError`]):
//! the callers tell an untrusted certificate from a Local API that is down.

use std::{error::Error as StdError, fmt, io, sync::Arc, time::Duration};

use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::{
    Method, Request,
    body::Bytes,
    client::conn::http1,
    header::{ACCEPT, CONNECTION, CONTENT_TYPE, HOST, USER_AGENT},
};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, pki_types::ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

pub use super::endpoint::Endpoint;

/// Largest response accepted (a startup stream with a big community blocklist is
/// a few MiB).
pub const MAX_RESPONSE: usize = 64 << 20;

const USER_AGENT_VALUE: &str = concat!("scan-guard/", env!("CARGO_PKG_VERSION"));

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

    /// One request (a JSON body if any); the whole exchange (connect, TLS
    /// handshake, answer) is bounded by `limit`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        limit: Duration,
    ) -> Result<Response, HttpError> {
        let req = self.build(method, path, headers, body)?;
        let exchange = async {
            let tcp = TcpStream::connect((self.ep.host.as_str(), self.ep.port))
                .await
                .map_err(HttpError::Connect)?;
            match &self.tls {
                None => exchange(tcp, req).await,
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| HttpError::Tls(e.into()))?;
                    exchange(tls, req).await
                }
            }
        };
        tokio::time::timeout(limit, exchange)
            .await
            .unwrap_or(Err(HttpError::Timeout(limit)))
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Request<Full<Bytes>>, HttpError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.ep.prefix))
            .header(HOST, &self.ep.authority)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header(ACCEPT, "application/json")
            .header(CONNECTION, "close");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        // hyper adds Content-Length for a body of known size.
        let body = Full::new(Bytes::copy_from_slice(body.unwrap_or_default()));
        req.body(body).map_err(|e| HttpError::Request(chain(&e)))
    }
}

/// Sends `req` on `stream` and reads the whole answer.
async fn exchange<S>(stream: S, req: Request<Full<Bytes>>) -> Result<Response, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(classify)?;
    let answer = async move {
        let resp = sender.send_request(req).await.map_err(classify)?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(body_error)?
            .to_bytes();
        Ok(Response { status, body })
    };
    tokio::pin!(conn, answer);
    // The connection is driven beside the exchange. A failure while reading the
    // head reaches the answer; one while reading the body reaches the answer only
    // as "connection error", and the connection holds its cause.
    tokio::select! {
        biased;
        r = &mut answer => r,
        done = &mut conn => match (answer.await, done) {
            (Err(_), Err(cause)) => Err(classify(cause)),
            (r, _) => r,
        },
    }
}

/// A complete response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
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

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Could not connect (the Local API is down or restarting, wrong address).
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// The connection broke while talking.
    #[error("connection failed: {}", chain(.0.as_ref()))]
    Io(Box<dyn StdError + Send + Sync>),
    /// The TLS handshake failed (an untrusted or mismatched server certificate,
    /// a client certificate the server refused, not a TLS server at all).
    #[error(
        "TLS failed: {} (check crowdsec.ca_cert, the client certificate if one is set, and the Local API's certificate)",
        chain(.0.as_ref())
    )]
    Tls(Box<dyn StdError + Send + Sync>),
    #[error("no complete answer within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("response larger than {} MiB", MAX_RESPONSE >> 20)]
    TooLarge,
    /// Not an HTTP response we understand.
    #[error("malformed HTTP response: {}", chain(.0))]
    Malformed(hyper::Error),
    /// A header we were given cannot be sent (e.g. a key with a control
    /// character in it).
    #[error("cannot build the request: {0}")]
    Request(String),
}

/// Sorts a failure of hyper's by its cause. TLS alerts after the handshake (TLS
/// 1.3 reports a refused client certificate only then) are TLS failures too.
fn classify(e: hyper::Error) -> HttpError {
    if caused_by_tls(&e) {
        HttpError::Tls(e.into())
    } else if e.is_parse() || e.is_parse_status() {
        HttpError::Malformed(e)
    } else {
        HttpError::Io(e.into())
    }
}

fn body_error(e: Box<dyn StdError + Send + Sync>) -> HttpError {
    if e.is::<LengthLimitError>() {
        return HttpError::TooLarge;
    }
    // Limited over hyper's body fails with hyper's errors or its own, no others.
    match e.downcast::<hyper::Error>() {
        Ok(e) => classify(*e),
        Err(e) => HttpError::Io(e),
    }
}

fn caused_by_tls(e: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let io_inner = err
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<rustls::Error>());
        if err.is::<rustls::Error>() || io_inner {
            return true;
        }
        cur = err.source();
    }
    false
}

/// An error and its causes, as one line (hyper's own text names only its part).
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cur = cause.source();
    }
    text
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.ep.url)
    }
}
