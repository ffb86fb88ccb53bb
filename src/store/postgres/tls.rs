//! TLS for PostgreSQL connections through rustls, with libpq's `sslmode` meanings: `require`
//! encrypts without checking who answers, `verify-ca` checks the chain, `verify-full` the chain
//! and the host name.
//!
//! Not for: reading the URL (`connect.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::connect::{RootCerts, SslMode, TlsSettings};
use crate::store::StoreError;

/// The rustls connector for these TLS settings (used only when `sslmode` is not `disable`).
pub(super) fn tls_connector(
    settings: &TlsSettings,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS: {e}")))?;
    // libpq: with a CA file named, `require` verifies the chain as `verify-ca` does.
    let mode = match (settings.mode, &settings.roots) {
        (SslMode::Require, RootCerts::File(_)) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    let chain = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => None,
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(root_store(&settings.roots)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|e| StoreError::Config(format!("TLS: {e}")))?;
            Some(webpki)
        }
    };
    let config = match chain {
        Some(webpki) if mode == SslMode::VerifyFull => {
            builder.with_webpki_verifier(webpki).with_no_client_auth()
        }
        chain => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RelaxedVerifier { provider, chain }))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The CA certificates to trust.
pub(super) fn root_store(roots: &RootCerts) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    let path = match roots {
        RootCerts::System => {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            return Ok(store);
        }
        RootCerts::File(path) => path.clone(),
        RootCerts::Default => {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            match home.map(|h| h.join(".postgresql").join("root.crt")) {
                Some(path) if path.exists() => path,
                _ => {
                    return Err(StoreError::Config(
                        "sslmode verify-ca/verify-full needs the CA certificate: add \
                         sslrootcert=PATH (a PEM file) or sslrootcert=system to the store URL"
                            .into(),
                    ))
                }
            }
        }
    };
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            StoreError::Config(format!(
                "cannot read the CA certificates in {}: {e}",
                path.display()
            ))
        })?;
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(StoreError::Config(format!(
            "{} holds no usable CA certificate (expected PEM 'BEGIN CERTIFICATE' blocks)",
            path.display()
        )));
    }
    Ok(store)
}

/// The verifier of the modes that check less than `verify-full`: `sslmode=prefer` and `require`
/// (without a CA file) encrypt, but accept whatever certificate the server shows; `verify-ca`
/// requires the chain to lead to a trusted CA, whatever host name the certificate names.
///
/// The first is libpq's documented meaning of those modes, and what lets `require` work with
/// the self-signed certificate a PostgreSQL package generates at install time. It protects
/// against passive eavesdropping only: anyone able to intercept the connection can present
/// their own certificate. Use `verify-full` with `sslrootcert` for that. The handshake
/// signatures are still checked (with the provider's algorithms, as the WebPKI verifier checks
/// them), so the session is at least bound to the key the server presented.
#[derive(Debug)]
pub(super) struct RelaxedVerifier {
    provider: Arc<CryptoProvider>,
    /// `None`: any certificate (`prefer`, `require`); `Some`: the chain only (`verify-ca`).
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for RelaxedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_need_a_ca() {
        let missing = TlsSettings {
            mode: SslMode::VerifyFull,
            roots: RootCerts::File(PathBuf::from("/nonexistent/ca.pem")),
        };
        assert!(matches!(
            tls_connector(&missing),
            Err(StoreError::Config(_))
        ));
        let system = TlsSettings {
            mode: SslMode::VerifyFull,
            roots: RootCerts::System,
        };
        assert!(tls_connector(&system).is_ok());
        let require = TlsSettings {
            mode: SslMode::Require,
            roots: RootCerts::Default,
        };
        assert!(tls_connector(&require).is_ok());
    }
}
