//! What ferry's SQL connectors share, so that no connector crate depends on another: the
//! foreign-key cascade algorithm (each sink supplies its statements), column defaults across
//! SQL dialects, the syntax of type texts, the widening error, and the process's TLS provider.

pub mod cascade;
pub mod defaults;
pub mod syntax;
pub mod widening;

/// Names rustls' crypto provider (ring) for the whole process, before any connection: the
/// drivers link rustls with two providers, and a TLS configuration built without one named
/// would panic. Idempotent.
pub fn install_tls_provider() {
    // ring: its post-quantum key exchange is not needed for a database link.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
}
