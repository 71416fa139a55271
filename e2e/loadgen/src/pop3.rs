//! A minimal POP3 client for the read half of the scenario.

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct Pop3Client {
    stream: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl Pop3Client {
    pub async fn connect(addr: &str) -> Result<Self> {
        let tcp = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        tcp.set_nodelay(true)?;
        let mut c = Self { stream: BufReader::new(tcp), line: Vec::new() };
        c.status().await.context("greeting")?;
        Ok(c)
    }

    async fn read_line(&mut self) -> Result<&[u8]> {
        self.line.clear();
        if self.stream.read_until(b'\n', &mut self.line).await? == 0 {
            bail!("connection closed by server");
        }
        Ok(&self.line)
    }

    /// Reads a status line; `-ERR` becomes an error carrying the server's text.
    async fn status(&mut self) -> Result<String> {
        let l = String::from_utf8_lossy(self.read_line().await?).trim_end().to_string();
        if l.starts_with("+OK") {
            Ok(l)
        } else {
            bail!("{l}")
        }
    }

    pub async fn cmd(&mut self, line: &str) -> Result<String> {
        self.stream.get_mut().write_all(format!("{line}\r\n").as_bytes()).await?;
        self.status().await.with_context(|| line.split(' ').next().unwrap_or("").to_string())
    }

    pub async fn login(&mut self, user: &str, password: &str) -> Result<()> {
        // USER and PASS pipelined: one round trip, as most clients do after CAPA.
        self.stream.get_mut().write_all(format!("USER {user}\r\nPASS {password}\r\n").as_bytes()).await?;
        self.status().await.context("USER")?;
        self.status().await.context("PASS")?;
        Ok(())
    }

    /// (messages, octets)
    pub async fn stat(&mut self) -> Result<(u64, u64)> {
        let l = self.cmd("STAT").await?;
        let mut it = l.split_whitespace().skip(1).map(|v| v.parse::<u64>());
        match (it.next(), it.next()) {
            (Some(Ok(n)), Some(Ok(o))) => Ok((n, o)),
            _ => bail!("bad STAT reply {l:?}"),
        }
    }

    /// RETR n; returns the octets received (after un-stuffing, before the terminator).
    pub async fn retr(&mut self, n: u64) -> Result<u64> {
        self.cmd(&format!("RETR {n}")).await?;
        let mut octets = 0u64;
        loop {
            let l = self.read_line().await?;
            if l == b".\r\n" {
                return Ok(octets);
            }
            octets += l.len() as u64 - u64::from(l.starts_with(b".."));
        }
    }

    /// A multi-line command; returns the number of lines before the terminator.
    pub async fn cmd_multi(&mut self, line: &str) -> Result<u64> {
        self.cmd(line).await?;
        let mut lines = 0;
        while self.read_line().await? != b".\r\n" {
            lines += 1;
        }
        Ok(lines)
    }

    /// Sends DELE for 1..=count pipelined and reads every reply.
    pub async fn dele_all(&mut self, count: u64) -> Result<()> {
        // In windows of 100, so neither side blocks on a full socket buffer with 100k DELEs.
        let mut n = 1;
        while n <= count {
            let end = (n + 99).min(count);
            let batch: String = (n..=end).map(|i| format!("DELE {i}\r\n")).collect();
            self.stream.get_mut().write_all(batch.as_bytes()).await?;
            for _ in n..=end {
                self.status().await.context("DELE")?;
            }
            n = end + 1;
        }
        Ok(())
    }

    pub async fn quit(&mut self) -> Result<()> {
        self.cmd("QUIT").await?;
        // The server closes after QUIT; wait for it so the deletion is committed when we return.
        let mut rest = Vec::new();
        let _ = self.stream.read_to_end(&mut rest).await;
        Ok(())
    }
}
