//! A load generator's HTTPS client for the API servers: persistent HTTP/1.1 connections
//! over rustls, bearer-token requests, 1 KiB ConfigMaps.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// A server on loopback, trusted through its CA.
pub struct Target {
    pub port: u16,
    tls: tokio_rustls::TlsConnector,
}

impl Target {
    pub fn new(port: u16, ca_pem: &[u8]) -> Target {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(c.expect("CA certificate"))
                .expect("CA certificate");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Target {
            port,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    pub async fn connect(&self) -> SendRequest<Full<Bytes>> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let tls = self.tls.connect(name, tcp).await.expect("TLS handshake");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        send
    }
}

pub fn request(token: &str, method: &str, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("a valid request")
}

/// Sends one request and reads the whole response; returns the status.
pub async fn send(conn: &mut SendRequest<Full<Bytes>>, req: Request<Full<Bytes>>) -> u16 {
    conn.ready().await.expect("connection ready");
    let resp = conn.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    resp.into_body().collect().await.expect("response body");
    status
}

/// A ConfigMap of about 1 KiB.
pub fn configmap(name: &str) -> Bytes {
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"payload": "x".repeat(1024 - 100)},
    });
    Bytes::from(serde_json::to_vec(&body).expect("JSON"))
}
