//! Email notifier over SMTP (lettre): multipart text + HTML; lettre writes
//! `Date`, `Message-ID` and `MIME-Version`, and encodes the subject per
//! RFC 2047 when it needs to.

use super::NotifyError;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use netspectra_model::alert::AlertRecord;
use netspectra_model::config::SmtpConfig;
use std::time::Duration;

/// The `smtp` section, ready to send.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    relay: String,
}

/// How the connection to the relay is secured.
fn tls_mode(smtp: &SmtpConfig) -> Result<&'static str, NotifyError> {
    Ok(match smtp.tls.trim() {
        "none" => "none",
        "starttls" => "starttls",
        "tls" => "tls",
        "" if smtp.port == 465 => "tls",
        "" if !smtp.password.is_empty() => "starttls",
        "" => "none",
        other => {
            return Err(NotifyError::Setup(format!(
                "smtp.tls: unknown value `{other}`; allowed: none, starttls, tls"
            )))
        }
    })
}

impl Email {
    /// A mailer for the `smtp` section (checked: host, sender, recipients).
    pub fn new(smtp: &SmtpConfig) -> Result<Email, NotifyError> {
        let host = smtp.host.trim();
        let parse = |field: &str, text: &str| {
            text.trim().parse::<Mailbox>().map_err(|e| {
                NotifyError::Setup(format!(
                    "smtp.{field}: `{}` is not an address: {e}",
                    text.trim()
                ))
            })
        };
        let from = parse(
            "from",
            if smtp.from.trim().is_empty() {
                "netspectra@localhost"
            } else {
                &smtp.from
            },
        )?;
        let to = smtp
            .to
            .split(',')
            .filter(|t| !t.trim().is_empty())
            .map(|t| parse("to", t))
            .collect::<Result<Vec<_>, _>>()?;
        let builder = match tls_mode(smtp)? {
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            _ => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                host,
            )),
        }
        .map_err(|e| NotifyError::Setup(format!("smtp.host `{host}`: {e}")))?;
        let mut builder = builder.timeout(Some(Duration::from_secs(20)));
        if smtp.port != 0 {
            builder = builder.port(smtp.port);
        }
        if !smtp.username.is_empty() {
            builder = builder.credentials(Credentials::new(
                smtp.username.clone(),
                smtp.password.clone(),
            ));
        }
        Ok(Email {
            transport: builder.build(),
            from,
            to,
            relay: format!("{host}:{}", smtp.port),
        })
    }

    /// Mails one group to every recipient.
    pub async fn send(&self, alerts: &[AlertRecord]) -> Result<(), NotifyError> {
        let mut message = Message::builder()
            .message_id(None)
            .date_now()
            .from(self.from.clone())
            .subject(super::text::subject(alerts));
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .multipart(MultiPart::alternative_plain_html(
                super::text::plain(alerts),
                super::text::html(alerts),
            ))
            .map_err(|e| NotifyError::Send(format!("building the mail: {e}")))?;
        // lettre's errors never include the password.
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| NotifyError::Send(format!("SMTP {}: {e}", self.relay)))
    }
}
