//! Masker throughput on one core: 16 MiB of log-like output, pushed in 64 KiB writes as
//! `jitc exec` reads them, with 1 and with 100 leased values (each with all its
//! encodings) and a few occurrences embedded.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jitc::mask::Masker;

fn values(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("SECRET_{i}"),
                format!("sk_live_{i:04}_9fQ2xLm7Rt4Vb8Nc1Kd6").into_bytes(),
            )
        })
        .collect()
}

fn output(values: &[(String, Vec<u8>)], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 256);
    let mut line = 0usize;
    while out.len() < size {
        line += 1;
        out.extend_from_slice(
            format!(
                "2026-11-28T10:41:{:02}Z INFO request id={line} path=/api/v1/items status=200 took={}ms\n",
                line % 60,
                line % 97
            )
            .as_bytes(),
        );
        if line.is_multiple_of(5000) {
            let (_, v) = &values[line % values.len()];
            out.extend_from_slice(b"token=");
            out.extend_from_slice(v);
            out.push(b'\n');
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    const SIZE: usize = 16 << 20;
    let mut group = c.benchmark_group("mask");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(20);
    for n in [1, 100] {
        let vals = values(n);
        let masker = Masker::new(vals.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .expect("the masks compile");
        let data = output(&vals, SIZE);
        let mut out = Vec::with_capacity(SIZE + 1024);
        group.bench_function(format!("{n} value(s), all encodings"), |b| {
            b.iter(|| {
                out.clear();
                let mut s = masker.stream();
                for chunk in data.chunks(64 << 10) {
                    s.push_into(chunk, &mut out);
                }
                s.finish_into(&mut out);
                assert!(out.len() < data.len() + 1024);
            })
        });
    }
    group.finish();
}

/// What the agent pays on every lease: the value's encoded forms (to conceal them in
/// audit records and refuse them on command lines), for one 40-byte token.
fn encodings(c: &mut Criterion) {
    let value = b"sk_live_0042_9fQ2xLm7Rt4Vb8Nc1Kd6/+x=abc".to_vec();
    c.bench_function("encodings(40-byte value)", |b| {
        b.iter(|| {
            let forms = jitc::mask::encodings(std::hint::black_box(&value));
            assert!(forms.len() > 1);
            forms
        })
    });
}

/// What `jitc exec` pays before the command starts: compiling the masks of one lease.
fn build(c: &mut Criterion) {
    for n in [1, 100] {
        let vals = values(n);
        c.bench_function(&format!("Masker::new({n} value(s))"), |b| {
            b.iter(|| {
                Masker::new(vals.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                    .expect("the masks compile")
            })
        });
    }
}

criterion_group!(benches, bench, encodings, build);
criterion_main!(benches);
