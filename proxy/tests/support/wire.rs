//! A buffered TCP stream with just enough HTTP/1.1 parsing for either end of a wire test.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A message head: the start line and the header fields, as received.
#[derive(Debug, Clone)]
pub struct Head {
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn parse(raw: &[u8]) -> Head {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or_default().to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Head { start, headers }
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn chunked(&self) -> bool {
        self.headers.iter().any(|(n, v)| {
            n == "transfer-encoding"
                && v.rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        })
    }

    pub fn content_length(&self) -> Option<usize> {
        self.get("content-length").and_then(|v| v.parse().ok())
    }

    /// The status code of a response head.
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

pub struct Wire {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    /// The trailer fields of the last chunked body read, as received (name lowercased).
    pub trailers: Vec<(String, String)>,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
            trailers: Vec::new(),
        }
    }

    /// Reads more bytes into the buffer; false at end of stream or on error.
    pub async fn fill(&mut self) -> bool {
        self.buf.reserve(64 * 1024);
        matches!(self.stream.read_buf(&mut self.buf).await, Ok(n) if n > 0)
    }

    /// The bytes before the next `delim`, which is consumed too; `None` if the stream ends first.
    pub async fn take_until(&mut self, delim: &[u8]) -> Option<Vec<u8>> {
        let mut from = 0;
        loop {
            if let Some(i) = self.buf[from..]
                .windows(delim.len())
                .position(|w| w == delim)
            {
                let end = from + i;
                let out = self.buf[..end].to_vec();
                self.buf.drain(..end + delim.len());
                return Some(out);
            }
            from = self.buf.len().saturating_sub(delim.len() - 1);
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Up to `n` bytes: fewer only if the stream ends first.
    pub async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if !self.fill().await {
                break;
            }
        }
        let n = n.min(self.buf.len());
        self.buf.drain(..n).collect()
    }

    /// The next message head; `None` if the stream ends before one is complete.
    pub async fn read_head(&mut self) -> Option<Head> {
        self.take_until(b"\r\n\r\n").await.map(|h| Head::parse(&h))
    }

    /// The next response (a final one: interim responses are returned too) with its decoded
    /// body and whether the body was complete by its framing. `head_request`: the request was
    /// HEAD, so the response has no body.
    pub async fn read_response(&mut self, head_request: bool) -> Option<(Head, Vec<u8>, bool)> {
        let head = self.read_head().await?;
        let framing = if head_request || matches!(head.status(), 100..=199 | 204 | 304) {
            Framing::Length(0)
        } else if head.chunked() {
            Framing::Chunked
        } else if let Some(n) = head.content_length() {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        let (body, complete) = self.read_body(framing).await;
        Some((head, body, complete))
    }

    /// The decoded body, and whether it was complete by its framing.
    pub async fn read_body(&mut self, framing: Framing) -> (Vec<u8>, bool) {
        match framing {
            Framing::Length(n) => {
                let body = self.take(n).await;
                let complete = body.len() == n;
                (body, complete)
            }
            Framing::UntilClose => {
                while self.fill().await {}
                (std::mem::take(&mut self.buf), true)
            }
            Framing::Chunked => {
                self.trailers.clear();
                let mut body = Vec::new();
                loop {
                    let Some(line) = self.take_until(b"\r\n").await else {
                        return (body, false);
                    };
                    let line = String::from_utf8_lossy(&line).into_owned();
                    let hex = line.split(';').next().unwrap_or_default().trim();
                    let Ok(size) = usize::from_str_radix(hex, 16) else {
                        return (body, false);
                    };
                    if size == 0 {
                        // Trailer fields, up to an empty line.
                        loop {
                            match self.take_until(b"\r\n").await {
                                None => return (body, false),
                                Some(l) if l.is_empty() => return (body, true),
                                Some(l) => {
                                    let Head { headers, .. } =
                                        Head::parse(&[b"\r\n", &l[..]].concat());
                                    self.trailers.extend(headers);
                                }
                            }
                        }
                    }
                    let data = self.take(size).await;
                    let short = data.len() < size;
                    body.extend_from_slice(&data);
                    if short || self.take_until(b"\r\n").await != Some(Vec::new()) {
                        return (body, false);
                    }
                }
            }
        }
    }
}
