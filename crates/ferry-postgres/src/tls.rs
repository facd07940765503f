//! TLS to PostgreSQL, as libpq spells it in the URL: `sslmode` (`disable`, `prefer` (the
//! default), `require`, `verify-full`; `verify-ca` is refused for now), `sslrootcert` (the CA to trust; else the
//! public web roots), `sslcert` and `sslkey` (a client certificate). The same settings serve the
//! ordinary connections (tokio-postgres, through [`MakeRustls`]) and the replication connection
//! (pgwire-replication's own rustls support). rustls runs on the `ring` provider.
//!
//! As in libpq, `prefer` and `require` encrypt without checking who answers (`prefer` falls back
//! to plain when the handshake fails); `verify-full` checks the chain and that the certificate
//! names the host.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ferry_core::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<SslMode> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => {
                // The replication client cannot check a chain without the name yet.
                return Err(Error::operator(
                    "config.url",
                    "sslmode=verify-ca is not supported yet",
                )
                .with_hint("use sslmode=verify-full (the chain and the host name; an IP address in the URL must be in the certificate), or require"));
            }
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::operator(
                    "config.url",
                    format!("sslmode={other} is not a TLS mode"),
                )
                .with_hint("use sslmode=disable, prefer, require or verify-full"))
            }
        })
    }
}

/// The TLS settings of one PostgreSQL URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub mode: SslMode,
    /// Whether the URL said `sslmode` (else a key=value string's own `sslmode` stands).
    pub mode_given: bool,
    pub root_certificate: Option<PathBuf>,
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl TlsSettings {
    /// Takes the TLS parameters out of a URL's query string (the rest is for tokio-postgres).
    pub(crate) fn split_url(url: &str) -> Result<(String, TlsSettings)> {
        let mut settings = TlsSettings::default();
        // The query starts after the credentials (a password may hold a '?').
        let after_credentials = url.rfind('@').map_or(0, |at| at + 1);
        let Some(question) = url[after_credentials..].find('?') else {
            return Ok((url.to_string(), settings));
        };
        let (base, query) = (
            &url[..after_credentials + question],
            &url[after_credentials + question + 1..],
        );
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            // (An escape that does not decode leaves the value as written.)
            let value =
                ferry_sql::syntax::percent_decode(value).unwrap_or_else(|| value.to_string());
            match key {
                "sslmode" => {
                    settings.mode = SslMode::parse(&value)?;
                    settings.mode_given = true;
                }
                // libpq 16's "system": the public roots, as without the parameter.
                "sslrootcert" if value == "system" => {}
                "sslrootcert" => settings.root_certificate = Some(PathBuf::from(value)),
                "sslcert" => settings.client_certificate = Some(PathBuf::from(value)),
                "sslkey" => settings.client_key = Some(PathBuf::from(value)),
                _ => kept.push(pair),
            }
        }
        if settings.client_certificate.is_some() != settings.client_key.is_some() {
            return Err(Error::operator(
                "config.url",
                "a client certificate needs both sslcert and sslkey",
            )
            .with_hint("give both paths (PEM files), or neither"));
        }
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((url, settings))
    }

    /// The same settings for the replication connection to `host` (named for the certificate
    /// check, IP addresses included).
    pub(crate) fn replication(&self, host: &str) -> pgwire_replication::TlsConfig {
        let mode = match self.mode {
            SslMode::Disable => pgwire_replication::SslMode::Disable,
            SslMode::Prefer => pgwire_replication::SslMode::Prefer,
            SslMode::Require => pgwire_replication::SslMode::Require,
            SslMode::VerifyFull => pgwire_replication::SslMode::VerifyFull,
        };
        pgwire_replication::TlsConfig {
            mode,
            ca_pem_path: self.root_certificate.clone(),
            sni_hostname: Some(host.to_string()),
            client_cert_pem_path: self.client_certificate.clone(),
            client_key_pem_path: self.client_key.clone(),
        }
    }

    /// The rustls configuration for ordinary connections.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>> {
        // ring: no C toolchain beyond what the build has anyway (its post-quantum key
        // exchange is not needed for a database link).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        match &self.root_certificate {
            Some(path) => {
                let certificates: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_file_iter(path)
                        .and_then(|certificates| certificates.collect())
                        .map_err(|error| tls_file_error("sslrootcert", path, &error.to_string()))?;
                let (added, _) = roots.add_parsable_certificates(certificates);
                if added == 0 {
                    return Err(tls_file_error(
                        "sslrootcert",
                        path,
                        "no certificate in the file",
                    ));
                }
            }
            None => roots.extend(webpki_roots_certificates()),
        }
        let roots = Arc::new(roots);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| Error::operator("config.tls", error.to_string()))?
            .with_root_certificates(roots.clone());
        let mut config = match (&self.client_certificate, &self.client_key) {
            (Some(certificate), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_file_iter(certificate)
                        .and_then(|certificates| certificates.collect())
                        .map_err(|error| {
                            tls_file_error("sslcert", certificate, &error.to_string())
                        })?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|error| tls_file_error("sslkey", key, &error.to_string()))?;
                builder.with_client_auth_cert(chain, key).map_err(|error| {
                    Error::operator(
                        "config.tls",
                        format!("the client certificate and key do not fit: {error}"),
                    )
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        match self.mode {
            SslMode::Prefer | SslMode::Require | SslMode::Disable => {
                config
                    .dangerous()
                    .set_certificate_verifier(Arc::new(Unverified(provider)));
            }
            SslMode::VerifyFull => {}
        }
        Ok(Arc::new(config))
    }

    /// tokio-postgres' own mode: whether TLS is tried, required or never used.
    pub(crate) fn postgres_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

fn tls_file_error(parameter: &str, path: &std::path::Path, problem: &str) -> Error {
    Error::operator(
        "config.tls",
        format!("{parameter}={} cannot be used: {problem}", path.display()),
    )
    .with_hint("give the path of a readable PEM file")
}

fn webpki_roots_certificates() -> Vec<rustls::pki_types::TrustAnchor<'static>> {
    webpki_roots::TLS_SERVER_ROOTS.to_vec()
}

/// `prefer` and `require`: encrypted, but whoever answers is accepted (as in libpq).
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    // Nothing about the peer is checked in these modes (as in libpq and the replication
    // client), so certificates webpki would not parse (X.509 v1, small keys) still connect.
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// tokio-postgres' TLS hook, over rustls.
#[derive(Clone)]
pub(super) struct MakeRustls(pub Arc<ClientConfig>);

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        // A Unix socket has no host name (and its server never offers TLS there).
        let domain = if domain.is_empty() {
            "localhost"
        } else {
            domain
        };
        let name = ServerName::try_from(domain.to_string())
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

pub(super) struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            Ok(RustlsStream(connector.connect(self.name, stream).await?))
        })
    }
}

pub(super) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(context, buffer)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(context, buffer)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(context)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_the_url_and_the_rest_stays() {
        let (url, settings) = TlsSettings::split_url(
            "postgres://app@db/shop?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://app@db/shop?application_name=x");
        assert_eq!(settings.mode, SslMode::VerifyFull);
        assert_eq!(
            settings.root_certificate,
            Some(PathBuf::from("/tmp/ca.pem"))
        );
        assert!(TlsSettings::split_url("postgres://db/x?sslmode=verify-ca").is_err());
        // A '?' in the password is not the query.
        let (url, settings) =
            TlsSettings::split_url("postgres://app:p?ss@db/shop?sslmode=require").unwrap();
        assert_eq!(url, "postgres://app:p?ss@db/shop");
        assert_eq!(settings.mode, SslMode::Require);
        assert!(TlsSettings::split_url("postgres://db/x?sslmode=sometimes").is_err());
        assert!(TlsSettings::split_url("postgres://db/x?sslcert=/a.pem").is_err());
        assert_eq!(
            TlsSettings::split_url("postgres://db/x").unwrap().1.mode,
            SslMode::Prefer
        );
    }
}
