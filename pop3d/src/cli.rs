//! `pop3d user ...`: account management through the admin API.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context};
use serde_json::{json, Value};

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account; the password is read from stdin or prompted for.
    Add { address: String },
    /// Change an account's password; read from stdin or prompted for.
    Passwd { address: String },
    /// Delete an account and all of its mail.
    Del { address: String },
    /// List accounts.
    List,
    /// Set an account's mailbox quota in MiB, or `none` for the server's default.
    Quota { address: String, quota_mb: String },
}

#[derive(clap::Args, Debug)]
pub struct UserArgs {
    /// Base URL of the admin API.
    #[arg(long, global = true, env = "POP3D_ADMIN_URL", default_value = "http://127.0.0.1:8080")]
    pub admin_url: String,
    /// File holding the admin API's bearer token (or set POP3D_ADMIN_TOKEN; there is no flag
    /// for the token itself, so it never shows in `ps`).
    #[arg(long, global = true, env = "POP3D_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: UserCommand,
}

pub fn run(args: UserArgs) -> anyhow::Result<()> {
    let base = args.admin_url.trim_end_matches('/');
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let auth = admin_token(&args)?.map(|t| format!("Bearer {t}"));
    // Without a token the header is empty, which the server treats as absent.
    let auth = auth.unwrap_or_default();
    let user_url = |address: &str| format!("{base}/users/{}", encode_path(address));
    let response = match &args.command {
        UserCommand::Add { address } | UserCommand::Passwd { address } => {
            let password = read_password()?;
            agent.put(&user_url(address)).header("Authorization", &auth).send_json(json!({ "password": password }))
        }
        UserCommand::Del { address } => agent.delete(&user_url(address)).header("Authorization", &auth).call(),
        UserCommand::List => agent.get(&format!("{base}/users")).header("Authorization", &auth).call(),
        UserCommand::Quota { address, quota_mb } => {
            let quota: Value = match quota_mb.as_str() {
                "none" => Value::Null,
                mb => mb
                    .parse::<u64>()
                    .map(Value::from)
                    .with_context(|| format!("quota must be MiB or none, not {mb:?}"))?,
            };
            agent
                .put(&format!("{}/quota", user_url(address)))
                .header("Authorization", &auth)
                .send_json(json!({ "quota_mb": quota }))
        }
    };
    let mut response = response.with_context(|| format!("cannot reach the admin API at {base}"))?;
    let status = response.status();
    let body: Value =
        if status.as_u16() == 204 { Value::Null } else { response.body_mut().read_json().unwrap_or(Value::Null) };
    if !status.is_success() {
        let message = body.get("error").and_then(Value::as_str).unwrap_or("request failed");
        bail!("{message} (HTTP {status})");
    }
    match args.command {
        UserCommand::Add { address } | UserCommand::Passwd { address } => {
            let created = body.get("created").and_then(Value::as_bool).unwrap_or(false);
            println!("{} {}", if created { "created" } else { "updated" }, address.to_lowercase());
        }
        UserCommand::Del { address } => println!("deleted {}", address.to_lowercase()),
        UserCommand::Quota { address, .. } => match body.get("quota_octets").and_then(Value::as_u64) {
            Some(octets) => println!("quota of {} is {} MiB", address.to_lowercase(), octets >> 20),
            None => println!("{} has no quota", address.to_lowercase()),
        },
        UserCommand::List => {
            for user in body.get("users").and_then(Value::as_array).into_iter().flatten() {
                println!("{}", user.as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}

fn admin_token(args: &UserArgs) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.admin_token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the admin token file {}", path.display()))?;
        return Ok(Some(text.trim().to_owned()));
    }
    Ok(std::env::var("POP3D_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()))
}

/// Never from the command line (it would show in `ps` and shell history).
fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            bail!("the passwords differ");
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        if password.is_empty() {
            bail!("no password on stdin");
        }
        Ok(password)
    }
}

fn encode_path(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'@' | b'.' | b'-' | b'_' | b'+' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
