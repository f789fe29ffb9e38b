//! What opening one leased value costs (`Vault::open_value`: XChaCha20-Poly1305 of a
//! value sealed in memory), for a 17-byte token, a 300-byte key and a 4 KiB
//! certificate. The agent does this once per secret per lease.
//!
//!   cargo bench -p jitc-agentd --bench open_value
//!
//! `.cargo/config.toml` builds poly1305 with its portable backend; to measure the
//! AVX2 one it replaces, run the same with `RUSTFLAGS=` (empty: the config's flags
//! are not used).

use criterion::{Criterion, criterion_group, criterion_main};
use jitc_agentd::vault::Vault;
use jitc_protocol::{KdfParams, SecretBytes};

fn open_value(c: &mut Criterion) {
    let mut vault = Vault::create(b"bench passphrase", KdfParams::MIN).expect("a vault");
    let sizes = [17usize, 300, 4096];
    for size in sizes {
        let value = SecretBytes::from_slice(&vec![b'v'; size]);
        vault
            .insert(&format!("V{size}"), &value, None, false, false)
            .expect("inserted");
    }
    let mut group = c.benchmark_group("open_value");
    for size in sizes {
        let name = format!("V{size}");
        group.bench_function(format!("{size} bytes"), |b| {
            b.iter(|| vault.open_value(&name).expect("opened"));
        });
    }
    group.finish();
}

criterion_group!(benches, open_value);
criterion_main!(benches);
