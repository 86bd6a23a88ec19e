//! `examples/get` (the small curl over gquic-client) as other suites drive it: against
//! `examples/hello`, with `--ca`, `-v`, `-X`/`-d`, `--data-file`, `-H`, `-o`, `-k`, and its
//! exit status.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn get(args: &[&str]) -> Output {
    Command::new(common::example("get"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn get_fetches_from_hello() {
    // Our own certificate (the example's development one is shared by every run).
    let dir = Dir(std::env::temp_dir().join(format!("gquic-get-cli-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let served = common::serve(
        "hello",
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    let base = format!("https://localhost:{}", served.port);
    let ca = cert.to_str().unwrap();

    // GET with -v: the body on stdout, status, protocol and headers on stderr.
    let o = get(&[
        &format!("{base}/api/info"),
        "--ca",
        ca,
        "-v",
        "-H",
        "x-probe: 1",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(out.contains(r#""protocol":"h3""#), "{out}");
    assert!(
        err.contains("> GET ") && err.contains("> x-probe: 1"),
        "{err}"
    );
    assert!(err.contains("< HTTP/3.0 200 OK"), "{err}");
    assert!(err.contains("< content-type: application/json"), "{err}");

    // POST with -d (the method follows from the data), and -X with --data-file into -o.
    let o = get(&[&format!("{base}/echo"), "--ca", ca, "-d", "ping"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "ping");
    let upload = dir.0.join("upload.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
    std::fs::write(&upload, &data).unwrap();
    let saved = dir.0.join("out.bin");
    let o = get(&[
        &format!("{base}/echo"),
        "--ca",
        ca,
        "-X",
        "POST",
        "--data-file",
        upload.to_str().unwrap(),
        "-o",
        saved.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(&saved).unwrap(), data);

    // Without the CA the certificate is refused (exit 1, a message saying why); -k accepts.
    let o = get(&[&format!("{base}/api/info")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("UnknownIssuer"),
        "{}",
        text(&o.stderr)
    );
    let o = get(&[&format!("{base}/api/info"), "-k"]);
    assert!(o.status.success(), "{}", text(&o.stderr));

    // An HTTP error status is not a failure (as in curl); a bad flag is.
    let o = get(&[&format!("{base}/nope"), "--ca", ca, "-v"]);
    assert!(o.status.success());
    assert!(
        text(&o.stderr).contains("< HTTP/3.0 404"),
        "{}",
        text(&o.stderr)
    );
    let o = get(&["--bogus"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("usage: get URL"),
        "{}",
        text(&o.stderr)
    );
}
