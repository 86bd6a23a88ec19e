//! Wire-format micro-benchmarks: decoding a full packet of STREAM frames, ACK frames with many
//! ranges.
//!
//! Run with: `cargo bench -p gquic-transport --bench wire`

#![allow(missing_docs)] // criterion_group! generates undocumented public functions.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gquic_transport::wire::frame::{encode_ack, Frame, Iter};
use gquic_transport::wire::PacketType;
use std::hint::black_box;

#[path = "support/fixtures.rs"]
mod fixtures;

fn frame_decode(c: &mut Criterion) {
    let payload = fixtures::stream_payload();
    let mut group = c.benchmark_group("frame_decode");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("stream_frames_1350B", |b| {
        b.iter(|| {
            let mut n = 0;
            for frame in Iter::new(black_box(payload.clone()), PacketType::OneRtt) {
                if let Ok(Frame::Stream(s)) = frame {
                    n += s.data.len();
                }
            }
            n
        })
    });
    group.finish();
}

fn ack(c: &mut Criterion) {
    let mut group = c.benchmark_group("ack");
    for n in [1u64, 16, 256] {
        let ranges = fixtures::ack_ranges(n);
        let mut buf = Vec::with_capacity(4096);
        group.bench_with_input(BenchmarkId::new("encode", n), &ranges, |b, ranges| {
            b.iter(|| {
                buf.clear();
                encode_ack(black_box(ranges), 100, None, &mut buf);
            })
        });
        buf.clear();
        encode_ack(&ranges, 100, None, &mut buf);
        let encoded = Bytes::from(buf.clone());
        group.bench_with_input(
            BenchmarkId::new("decode_and_walk", n),
            &encoded,
            |b, encoded| {
                b.iter(|| {
                    let mut cursor = black_box(encoded.clone());
                    match Frame::decode(&mut cursor) {
                        Ok(Frame::Ack(ack)) => ack.iter().map(|r| r.end() - r.start()).sum::<u64>(),
                        _ => unreachable!(),
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, frame_decode, ack);
criterion_main!(benches);
