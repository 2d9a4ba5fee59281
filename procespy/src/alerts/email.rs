//! Email over SMTP (lettre): composing a message for the spool, and sending
//! a spooled message.
//!
//! TLS (`security = "starttls"` or `"tls"`) uses rustls with the system's
//! trust store (`/etc/ssl/certs`; `SSL_CERT_FILE` or `SSL_CERT_DIR` in the
//! daemon's environment replace it, for a private CA). The password is read
//! from `password_file` at each attempt, so a changed password needs no
//! restart.

use std::time::Duration;

use lettre::{
    Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    address::Envelope,
    message::{Attachment, Mailbox, MultiPart, SinglePart, header::ContentType},
    transport::smtp::{
        authentication::Credentials,
        client::{Tls, TlsParameters},
        extension::ClientId,
    },
};

use super::{message::EmailText, spool::Mail};
use crate::config::{Email, MAX_SECRET_BYTES, Security};

/// How long one attempt may take, connection and conversation together,
/// before it is given up as a transient failure. (lettre's own timeout
/// bounds the connection only, not each command of the conversation.)
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the message for `text`, ready for the spool. `seq` and `host`
/// make its Message-ID unique.
pub(crate) fn compose(
    config: &Email,
    text: &EmailText,
    host: &str,
    created: f64,
    seq: u64,
) -> Result<Mail, String> {
    let from: Mailbox = config
        .from
        .parse()
        .map_err(|err| format!("notify.email.from {:?}: {err}", config.from))?;
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(text.subject.clone())
        .user_agent(format!("procespy {}", env!("CARGO_PKG_VERSION")));
    let mut to = Vec::new();
    for address in &config.to {
        let mailbox: Mailbox = address
            .parse()
            .map_err(|err| format!("notify.email.to {address:?}: {err}"))?;
        to.push(mailbox.email.to_string());
        builder = builder.to(mailbox);
    }
    let domain = if host.is_empty() { "localhost" } else { host };
    let message_id = format!(
        "<procespy.{}.{}.{seq}@{domain}>",
        (created * 1e6) as u64,
        std::process::id()
    );
    let builder = builder.message_id(Some(message_id.clone()));
    let message = match &text.chart {
        None => builder
            .header(ContentType::TEXT_PLAIN)
            .body(text.body.clone()),
        Some(png) => builder.multipart(with_chart(&text.body, png, &message_id)),
    }
    .map_err(|err| format!("cannot build the message: {err}"))?;
    let message = String::from_utf8(message.formatted())
        .map_err(|err| format!("the message is not 7-bit text: {err}"))?;
    Ok(Mail {
        created,
        from: from.email.to_string(),
        to,
        subject: text.subject.clone(),
        message_id,
        message,
    })
}

/// The text, and an HTML version of it with the chart inline
/// (`multipart/related`, the image named by its Content-ID): mail readers
/// that show HTML show the chart, the others the text.
fn with_chart(body: &str, png: &[u8], message_id: &str) -> MultiPart {
    let cid = format!(
        "chart.{}",
        message_id.trim_matches(|c| c == '<' || c == '>')
    );
    let html = format!(
        "<!DOCTYPE html>\n<html><body>\n<p><img src=\"cid:{cid}\" width=\"{}\" height=\"{}\" alt=\"RSS over time\"></p>\n<pre>{}</pre>\n</body></html>\n",
        crate::chart::SIZE.0,
        crate::chart::SIZE.1,
        super::message::escape_markup(body)
    );
    let image = ContentType::parse("image/png").expect("a valid content type");
    MultiPart::alternative()
        .singlepart(SinglePart::plain(body.to_owned()))
        .multipart(
            MultiPart::related()
                .singlepart(SinglePart::html(html))
                .singlepart(Attachment::new_inline(cid).body(png.to_vec(), image)),
        )
}

/// Why a message was not sent.
#[derive(Debug)]
pub(crate) struct SendError {
    /// The server refused this message for good (5xx): retrying it will not help.
    pub(crate) permanent: bool,
    /// What happened.
    pub(crate) message: String,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The SMTP transport for `config`, reading the password file now.
pub(crate) fn transport(
    config: &Email,
    host: &str,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let server = config.server.clone();
    let tls = |server: &str| {
        TlsParameters::new(server.to_owned())
            .map_err(|err| format!("TLS setup for {server}: {err}"))
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.clone())
        .port(config.port)
        .timeout(Some(SEND_TIMEOUT))
        .tls(match config.security {
            Security::None => Tls::None,
            Security::StartTls => Tls::Required(tls(&server)?),
            Security::Tls => Tls::Wrapper(tls(&server)?),
        });
    if !host.is_empty() {
        builder = builder.hello_name(ClientId::Domain(host.to_owned()));
    }
    if let (Some(username), Some(file)) = (&config.username, &config.password_file) {
        let password = crate::config::read_trusted(file, "password file", MAX_SECRET_BYTES)
            .map_err(|err| format!("the password file {}: {err}", file.display()))?;
        let password = String::from_utf8_lossy(&password)
            .trim_end_matches(['\n', '\r'])
            .to_owned();
        builder = builder.credentials(Credentials::new(username.clone(), password));
    }
    Ok(builder.build())
}

/// Sends one spooled message; `Ok` once the server accepted it.
pub(crate) async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    mail: &Mail,
) -> Result<(), SendError> {
    let invalid = |message: String| SendError {
        permanent: true,
        message,
    };
    let from: Address = mail
        .from
        .parse()
        .map_err(|err| invalid(format!("sender {:?}: {err}", mail.from)))?;
    let to = mail
        .to
        .iter()
        .map(|a| a.parse::<Address>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid(format!("recipient: {err}")))?;
    let envelope =
        Envelope::new(Some(from), to).map_err(|err| invalid(format!("envelope: {err}")))?;
    match tokio::time::timeout(
        SEND_TIMEOUT,
        transport.send_raw(&envelope, mail.message.as_bytes()),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(SendError {
            permanent: err.is_permanent(),
            message: describe(&err),
        }),
        Err(_) => Err(SendError {
            permanent: false,
            message: format!("the conversation took longer than {SEND_TIMEOUT:?}"),
        }),
    }
}

/// The error with its causes, on one line.
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Email {
        Email {
            enabled: true,
            server: "127.0.0.1".into(),
            port: 2525,
            security: Security::None,
            from: "procespy@example.com".into(),
            to: vec![
                "ops@example.com".into(),
                "Dev Team <dev@example.com>".into(),
            ],
            ..Email::default()
        }
    }

    #[test]
    fn a_composed_message_has_headers_envelope_and_body() {
        let text = EmailText {
            subject: "[procespy@web1] stopped chromium (PID 1, RSS 2 B / limit 1 B)".into(),
            body: "procespy stopped chromium on web1.\n".into(),
            chart: None,
        };
        let mail = compose(&config(), &text, "web1", 1_764_064_933.25, 7).unwrap();
        assert_eq!(mail.from, "procespy@example.com");
        assert_eq!(mail.to, ["ops@example.com", "dev@example.com"]);
        assert_eq!(
            mail.message_id,
            format!("<procespy.1764064933250000.{}.7@web1>", std::process::id())
        );
        for needle in [
            "From: procespy@example.com\r\n",
            "To: ops@example.com, \"Dev Team\" <dev@example.com>\r\n",
            "Subject: [procespy@web1] stopped chromium (PID 1, RSS 2 B / limit 1 B)\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            "Date: ",
            "\r\n\r\nprocespy stopped chromium on web1.\r\n",
        ] {
            assert!(
                mail.message.contains(needle),
                "{needle:?} in\n{}",
                mail.message
            );
        }
        assert!(
            mail.message
                .contains(&format!("Message-ID: {}\r\n", mail.message_id))
        );
    }

    #[test]
    fn a_chart_goes_inline_beside_the_text() {
        let text = EmailText {
            subject: "s".into(),
            body: "grew from 1 B to <2 B>\n".into(),
            chart: Some(vec![0x89, b'P', b'N', b'G', 0, 1, 2]),
        };
        let mail = compose(&config(), &text, "web1", 0.0, 1).unwrap();
        for needle in [
            "Content-Type: multipart/alternative;",
            "Content-Type: multipart/related;",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Type: text/html; charset=utf-8",
            "Content-Type: image/png",
            "Content-Disposition: inline",
            "Content-ID: <chart.procespy.",
            "src=3D\"cid:chart.procespy.",
            "&lt;2 B&gt;",
        ] {
            assert!(
                mail.message.contains(needle),
                "{needle:?} in\n{}",
                mail.message
            );
        }
    }

    #[test]
    fn bad_addresses_are_reported() {
        let mut bad = config();
        bad.from = "not an address".into();
        let text = EmailText {
            subject: "s".into(),
            body: "b".into(),
            chart: None,
        };
        assert!(
            compose(&bad, &text, "h", 0.0, 1)
                .unwrap_err()
                .contains("notify.email.from")
        );
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_is_a_transient_failure() {
        // Port 1 on loopback: nothing listens, the connection is refused.
        let mut cfg = config();
        cfg.port = 1;
        let text = EmailText {
            subject: "s".into(),
            body: "b".into(),
            chart: None,
        };
        let mail = compose(&cfg, &text, "h", 0.0, 1).unwrap();
        let transport = transport(&cfg, "h").unwrap();
        let err = send(&transport, &mail).await.unwrap_err();
        assert!(!err.permanent, "{err}");
    }

    #[test]
    fn a_missing_password_file_is_reported() {
        let mut cfg = config();
        cfg.username = Some("u".into());
        cfg.password_file = Some("/nonexistent/procespy-password".into());
        let err = transport(&cfg, "h").err().unwrap();
        assert!(err.contains("/nonexistent/procespy-password"), "{err}");
    }
}
