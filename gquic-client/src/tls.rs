//! TLS settings: root certificates (webpki roots by default), a certificate type like
//! reqwest's, and the opt-in that accepts any certificate.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::Error;

/// A root certificate to trust, from PEM or DER.
#[derive(Debug, Clone)]
pub struct Certificate(CertificateDer<'static>);

impl Certificate {
    /// From DER bytes.
    ///
    /// # Errors
    /// Never today; reserved for validation.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        Ok(Self(CertificateDer::from(der.to_vec())))
    }

    /// From a PEM `CERTIFICATE` block (the first one).
    ///
    /// # Errors
    /// If there is no certificate in `pem`.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        CertificateDer::from_pem_slice(pem)
            .map(Self)
            .map_err(|e| Error::builder(format!("no PEM certificate: {e}")))
    }

    /// Every certificate of a PEM bundle.
    ///
    /// # Errors
    /// If a block does not parse.
    pub fn from_pem_bundle(pem: &[u8]) -> Result<Vec<Self>, Error> {
        CertificateDer::pem_slice_iter(pem)
            .map(|c| c.map(Self))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::builder(format!("bad PEM bundle: {e}")))
    }
}

pub(crate) struct TlsOptions {
    pub(crate) roots: Vec<Certificate>,
    pub(crate) built_in_roots: bool,
    pub(crate) accept_invalid: bool,
    pub(crate) config: Option<rustls::ClientConfig>,
    pub(crate) key_log: bool,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            roots: Vec::new(),
            built_in_roots: true,
            accept_invalid: false,
            config: None,
            key_log: false,
        }
    }
}

impl TlsOptions {
    /// The rustls config for HTTP/3: TLS 1.3, ALPN `h3`.
    pub(crate) fn build(self) -> Result<rustls::ClientConfig, Error> {
        let mut config = match self.config {
            Some(c) => c,
            None => {
                let provider = Arc::new(gquic_transport::crypto::default_provider());
                let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(Error::builder)?;
                if self.accept_invalid {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                        .with_no_client_auth()
                } else {
                    let mut roots = rustls::RootCertStore::empty();
                    if self.built_in_roots {
                        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                    }
                    for c in self.roots {
                        roots.add(c.0).map_err(Error::builder)?;
                    }
                    builder.with_root_certificates(roots).with_no_client_auth()
                }
            }
        };
        config.alpn_protocols = vec![b"h3".to_vec()];
        if self.key_log {
            // NSS key log lines to the file SSLKEYLOGFILE names (nothing when it is unset).
            config.key_log = Arc::new(rustls::KeyLogFile::new());
        }
        Ok(config)
    }
}

/// `danger_accept_invalid_certs`: any certificate, but signatures are still checked so the
/// peer holds the key it presents.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
