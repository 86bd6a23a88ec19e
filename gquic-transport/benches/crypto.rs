//! Packet protection micro-benchmarks: seal + open of a 1350-byte 1-RTT packet with
//! AES-128-GCM and ChaCha20-Poly1305, for both rustls providers (aws-lc-rs and ring).
//!
//! Run with: `cargo bench -p gquic-transport --bench crypto`

#![allow(missing_docs)] // criterion_group! generates undocumented public functions.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

#[path = "support/fixtures.rs"]
mod fixtures;

fn seal_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal_open_1350B");
    group.throughput(Throughput::Bytes(fixtures::PACKET_SIZE as u64));
    for (provider_name, provider, cipher, cipher_name) in fixtures::providers() {
        let (packet_key, header_key) = fixtures::keys(&provider, cipher);
        let (mut buf, header_len, pn_offset) = fixtures::one_rtt_packet();
        group.bench_function(format!("{cipher_name}/{provider_name}"), |b| {
            b.iter(|| {
                fixtures::seal_open(
                    black_box(&mut buf),
                    header_len,
                    pn_offset,
                    packet_key.as_ref(),
                    header_key.as_ref(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
