//! A minimal LMTP client: enough to deliver one message per transaction and read the reply.

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct LmtpClient {
    stream: BufReader<TcpStream>,
    line: String,
}

/// The outcome of one transaction as the server put it.
pub enum Outcome {
    /// 250; `again`: the server recognised a retry of a message it had stored already.
    Accepted { again: bool },
    /// Reply code and text of the first non-2xx/3xx reply.
    Refused(u16, String),
    /// The server had closed the connection (or said 421 and closed it) before taking MAIL:
    /// nothing of this transaction reached it.
    Closed(String),
}

impl LmtpClient {
    pub async fn connect(addr: &str) -> Result<Self> {
        let tcp = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        tcp.set_nodelay(true)?;
        let mut c = Self { stream: BufReader::new(tcp), line: String::new() };
        let (code, text) = c.reply().await?;
        if code != 220 {
            bail!("greeting {code} {text}");
        }
        c.stream.get_mut().write_all(b"LHLO loadgen.popfleet.test\r\n").await?;
        let (code, text) = c.reply().await?;
        if code != 250 {
            bail!("LHLO {code} {text}");
        }
        Ok(c)
    }

    /// Reads one (possibly multi-line) reply.
    async fn reply(&mut self) -> Result<(u16, String)> {
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                bail!("connection closed by server");
            }
            let l = self.line.trim_end();
            if l.len() < 3 {
                bail!("short reply {l:?}");
            }
            let code: u16 = l[..3].parse().with_context(|| format!("bad reply {l:?}"))?;
            if l.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, l.get(4..).unwrap_or("").to_string()));
            }
        }
    }

    /// One transaction, pipelined (MAIL, RCPT, DATA in one write, as Postfix does).
    /// `dot_stuffed` must already end with CRLF.CRLF.
    pub async fn deliver(&mut self, from: &str, rcpt: &str, dot_stuffed: &[u8]) -> Result<Outcome> {
        let cmds = format!("MAIL FROM:<{from}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n");
        if let Err(e) = self.stream.get_mut().write_all(cmds.as_bytes()).await {
            return Ok(Outcome::Closed(format!("{e}")));
        }
        let mut refused = None;
        let mut data_code = 0;
        for (expect, what) in [(250, "MAIL"), (250, "RCPT"), (354, "DATA")] {
            let reply = self.reply().await;
            let (code, text) = match reply {
                Err(e) if what == "MAIL" => return Ok(Outcome::Closed(format!("{e:#}"))),
                Ok((421, text)) if what == "MAIL" => return Ok(Outcome::Closed(format!("421 {text}"))),
                r => r?,
            };
            data_code = code;
            if code != expect && refused.is_none() {
                refused = Some((code, format!("{what}: {text}")));
            }
        }
        if let Some((code, text)) = refused {
            if data_code == 354 {
                // The server wants a body for a transaction we consider failed: don't send one,
                // drop the connection (the caller does not pool a connection that errored).
                bail!("DATA accepted after a refused MAIL/RCPT ({code} {text})");
            }
            // A failed transaction leaves the envelope open on the server: reset it, as MTAs do,
            // before this connection carries the next one.
            self.stream.get_mut().write_all(b"RSET\r\n").await?;
            let (rset, rtext) = self.reply().await?;
            if rset != 250 {
                bail!("RSET {rset} {rtext}");
            }
            return Ok(Outcome::Refused(code, text));
        }
        self.stream.get_mut().write_all(dot_stuffed).await?;
        let (code, text) = self.reply().await?;
        Ok(if code == 250 {
            Outcome::Accepted { again: text.contains("Already delivered as") }
        } else {
            Outcome::Refused(code, text)
        })
    }
}
