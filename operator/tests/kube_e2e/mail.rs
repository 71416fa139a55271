//! Just enough of LMTP, POP3 and pop3d's account API to deliver mail and list a maildrop, over
//! plain sockets on loopback (pop3d accepts USER/PASS there), so a test can poll a maildrop many
//! times a second without a process per read.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type Conn = BufReader<TcpStream>;

async fn connect(port: u16) -> Result<Conn, String> {
    TcpStream::connect(("127.0.0.1", port)).await.map(BufReader::new).map_err(|e| format!("connect {port}: {e}"))
}

async fn line(conn: &mut Conn) -> Result<String, String> {
    let mut l = String::new();
    match conn.read_line(&mut l).await {
        Ok(0) => Err("connection closed".into()),
        Ok(_) => Ok(l.trim_end().to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

async fn send(conn: &mut Conn, text: &str) -> Result<(), String> {
    conn.get_mut().write_all(format!("{text}\r\n").as_bytes()).await.map_err(|e| e.to_string())
}

/// An SMTP/LMTP reply (all its lines); `Err` unless its code starts with `want`.
async fn reply(conn: &mut Conn, want: char) -> Result<String, String> {
    loop {
        let l = line(conn).await?;
        if l.as_bytes().get(3) != Some(&b'-') {
            return if l.starts_with(want) { Ok(l) } else { Err(l) };
        }
    }
}

/// One message to `to` over LMTP; `Ok` only on the recipient's `250`.
pub async fn deliver(port: u16, to: &str, subject: &str) -> Result<(), String> {
    let mut c = connect(port).await?;
    reply(&mut c, '2').await?;
    for (command, want) in [
        ("LHLO e2e.example".to_owned(), '2'),
        ("MAIL FROM:<sender@example.org>".into(), '2'),
        (format!("RCPT TO:<{to}>"), '2'),
        ("DATA".into(), '3'),
    ] {
        send(&mut c, &command).await?;
        reply(&mut c, want).await.map_err(|e| format!("{command}: {e}"))?;
    }
    send(&mut c, &format!("Subject: {subject}\r\n\r\ndelivered before dc2 existed\r\n.")).await?;
    reply(&mut c, '2').await.map_err(|e| format!("end of data: {e}"))?;
    send(&mut c, "QUIT").await
}

async fn pop3_ok(conn: &mut Conn, command: &str) -> Result<String, String> {
    send(conn, command).await?;
    let l = line(conn).await?;
    if l.starts_with("+OK") {
        Ok(l)
    } else {
        Err(format!("{}: {l}", command.split(' ').next().unwrap_or(command)))
    }
}

/// The maildrop as a POP3 client sees it: STAT's count and every UIDL, in order. Reads only
/// (QUIT without DELE deletes nothing). `Err` carries pop3d's answer (a refused login, ...).
pub async fn maildrop(port: u16, user: &str, password: &str) -> Result<(usize, Vec<String>), String> {
    let mut c = connect(port).await?;
    let greeting = line(&mut c).await?;
    if !greeting.starts_with("+OK") {
        return Err(greeting);
    }
    pop3_ok(&mut c, &format!("USER {user}")).await?;
    pop3_ok(&mut c, &format!("PASS {password}")).await?;
    let stat = pop3_ok(&mut c, "STAT").await?;
    let count = stat.split_whitespace().nth(1).and_then(|n| n.parse().ok()).ok_or(format!("STAT: {stat}"))?;
    pop3_ok(&mut c, "UIDL").await?;
    let mut uids = Vec::new();
    loop {
        let l = line(&mut c).await?;
        if l == "." {
            break;
        }
        uids.push(l.split_whitespace().nth(1).ok_or(format!("UIDL line {l}"))?.to_owned());
    }
    pop3_ok(&mut c, "QUIT").await?;
    Ok((count, uids))
}

/// Creates an account through the admin API (`PUT /users/ADDRESS`, bearer token).
pub async fn create_account(admin: u16, token: &str, address: &str, password: &str) -> Result<(), String> {
    let body = serde_json::json!({ "password": password }).to_string();
    let request = format!(
        "PUT /users/{address} HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(("127.0.0.1", admin)).await.map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.map_err(|e| e.to_string())?;
    match answer.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(answer),
    }
}
