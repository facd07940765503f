//! ferry's connectors, one folder per system, each behind a cargo feature, and the registry that
//! turns a connection URL into a connector.

#[cfg(any(feature = "mysql", feature = "postgres"))]
pub(crate) mod cascade;
pub mod defaults;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(all(feature = "mysql", feature = "postgres"))]
pub mod portable;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(all(feature = "mysql", feature = "postgres"))]
pub mod registry;
pub mod syntax;
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub(crate) mod widening;

/// Names rustls' crypto provider (ring) for the whole process, before any connection: the
/// drivers link rustls with two providers, and a TLS configuration built without one named
/// would panic. Idempotent.
pub fn install_tls_provider() {
    // ring: its post-quantum key exchange is not needed for a database link.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
}
