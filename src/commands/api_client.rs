//! A plain HTTP/1.1 GET to a running sluice's API (it listens on loopback, without TLS), for
//! `top` and `tap`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An answer whose status was 200, its body still to read.
pub struct Answer {
    pub reader: BufReader<TcpStream>,
    chunked: bool,
}

/// `GET {url}{path}`; an error names the URL and, for a status other than 200, the body.
pub fn get(url: &str, path: &str) -> Result<Answer, String> {
    let address = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
    let socket: std::net::SocketAddr = address.parse().map_err(|e| format!("{url}: not host:port ({e})"))?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2)).map_err(|e| format!("{url}: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("{url}: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(|e| format!("{url}: {e}"))?;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).map_err(|e| format!("{url}: {e}"))?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        chunked |= header.eq_ignore_ascii_case("transfer-encoding: chunked");
    }
    let mut answer = Answer { reader, chunked };
    if !status.starts_with("HTTP/1.1 200") {
        let body = answer.body().unwrap_or_default();
        return Err(format!("{url}{path}: {} {}", status.trim_end(), String::from_utf8_lossy(&body).trim_end()));
    }
    Ok(answer)
}

impl Answer {
    /// The next piece of the body (a chunk, when chunked); `None` at its end.
    pub fn next_piece(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if !self.chunked {
            let mut buf = vec![0; 64 * 1024];
            let n = self.reader.read(&mut buf)?;
            buf.truncate(n);
            return Ok((n > 0).then_some(buf));
        }
        let mut size = String::new();
        if self.reader.read_line(&mut size)? == 0 {
            return Ok(None);
        }
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if size == 0 {
            return Ok(None);
        }
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data)?;
        data.truncate(size);
        Ok(Some(data))
    }

    /// The whole body.
    pub fn body(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        while let Some(piece) = self.next_piece()? {
            body.extend_from_slice(&piece);
        }
        Ok(body)
    }
}
