//! Run with: cargo run --example get -- URL [-X METHOD] [-H 'k: v']... [-d DATA | --data-file F]
//!           [-o FILE] [--ca FILE] [-k] [-v]
//!
//! A small curl over HTTP/3 with `gquic-client`: redirects followed, responses decompressed,
//! the body written to stdout (or `-o FILE`). `-v` prints the request line, the status, the
//! protocol and the response headers (and trailers) to stderr. `--ca FILE` trusts a PEM
//! certificate (for example the one `examples/hello` prints); `-k` accepts any certificate.
//! Exits non-zero if the request fails (an HTTP error status is not a failure, as in curl).
//! `SSLKEYLOGFILE` gets the TLS secrets (NSS key log format, for Wireshark) and `QLOGDIR` a
//! qlog trace of the connection, when they are set.

use std::io::Write;
use std::path::PathBuf;

use gquic_client::{Certificate, Client, Method};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    url: String,
    method: Option<Method>,
    headers: Vec<(String, String)>,
    data: Option<Vec<u8>>,
    output: Option<PathBuf>,
    ca: Option<PathBuf>,
    insecure: bool,
    verbose: bool,
}

const USAGE: &str = "usage: get URL [-X METHOD] [-H 'k: v']... [-d DATA | --data-file F] [-o FILE] [--ca FILE] [-k] [-v]";

fn args() -> Result<Args, String> {
    let mut url = None;
    let mut a = Args {
        url: String::new(),
        method: None,
        headers: Vec::new(),
        data: None,
        output: None,
        ca: None,
        insecure: false,
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "-X" | "--request" => {
                let m = value()?;
                a.method =
                    Some(Method::from_bytes(m.as_bytes()).map_err(|e| format!("-X {m}: {e}"))?);
            }
            "-H" | "--header" => {
                let h = value()?;
                let (k, v) = h
                    .split_once(':')
                    .ok_or(format!("-H {h:?}: expected 'name: value'"))?;
                a.headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "-d" | "--data" => a.data = Some(value()?.into_bytes()),
            "--data-file" => {
                let f = value()?;
                a.data = Some(std::fs::read(&f).map_err(|e| format!("--data-file {f}: {e}"))?);
            }
            "-o" | "--output" => a.output = Some(value()?.into()),
            "--ca" => a.ca = Some(value()?.into()),
            "-k" | "--insecure" => a.insecure = true,
            "-v" | "--verbose" => a.verbose = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other if other.starts_with('-') => {
                return Err(format!("unknown flag {other}\n{USAGE}"))
            }
            other if url.is_none() => url = Some(other.to_owned()),
            other => return Err(format!("unexpected argument {other}\n{USAGE}")),
        }
    }
    a.url = url.ok_or(USAGE)?;
    Ok(a)
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("get: {e}");
        let mut source = e.source();
        while let Some(s) = source {
            eprintln!("  caused by: {s}");
            source = s.source();
        }
        std::process::exit(1);
    }
}

async fn run() -> Result<(), BoxError> {
    let args = args()?;
    let mut builder = Client::builder()
        .danger_accept_invalid_certs(args.insecure)
        .tls_sslkeylogfile(true);
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        for cert in Certificate::from_pem_bundle(&pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build()?;
    let method = args.method.clone().unwrap_or(if args.data.is_some() {
        Method::POST
    } else {
        Method::GET
    });
    let mut req = client.request(method.clone(), &args.url);
    for (k, v) in &args.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(d) = args.data {
        req = req.body(d);
    }
    if args.verbose {
        eprintln!("> {method} {}", args.url);
        for (k, v) in &args.headers {
            eprintln!("> {k}: {v}");
        }
    }
    let mut resp = req.send().await?;
    if args.verbose {
        eprintln!("< {:?} {}", resp.version(), resp.status());
        if resp.url().as_str() != args.url {
            eprintln!("< (after redirects: {})", resp.url());
        }
        for (k, v) in resp.headers() {
            eprintln!("< {k}: {}", String::from_utf8_lossy(v.as_bytes()));
        }
    }
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => {
            Box::new(std::fs::File::create(p).map_err(|e| format!("-o {}: {e}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    while let Some(chunk) = resp.chunk().await? {
        out.write_all(&chunk)?;
    }
    out.flush()?;
    if let Some(trailers) = resp.trailers().await? {
        if args.verbose {
            for (k, v) in &trailers {
                eprintln!("< (trailer) {k}: {}", String::from_utf8_lossy(v.as_bytes()));
            }
        }
    }
    // Tell the server we are done (otherwise it waits for its idle timeout).
    client.close().await;
    Ok(())
}
