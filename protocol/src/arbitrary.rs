//! proptest strategies for every message, so round-trip and robustness properties cover
//! the whole protocol (tests only).

use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::strategy::{LazyJust, Union};

use crate::*;

fn secret() -> impl Strategy<Value = SecretBytes> {
    vec(any::<u8>(), 0..64).prop_map(SecretBytes::new)
}

fn text() -> BoxedStrategy<String> {
    ".{0,24}".boxed()
}

fn texts() -> BoxedStrategy<Vec<String>> {
    vec(text(), 0..4).boxed()
}

fn kdf() -> impl Strategy<Value = KdfParams> {
    (any::<u32>(), any::<u32>()).prop_map(|(memory_mib, iterations)| KdfParams {
        memory_mib,
        iterations,
    })
}

fn command() -> impl Strategy<Value = CommandLine> {
    (text(), texts(), text()).prop_map(|(path, argv, cwd)| CommandLine { path, argv, cwd })
}

fn lease_request() -> impl Strategy<Value = LeaseRequest> {
    (
        texts(),
        command(),
        of(text()),
        of(any::<u64>()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(secrets, command, task, ttl_ms, masking, proxy)| LeaseRequest {
                secrets,
                command,
                task,
                ttl_ms,
                masking,
                proxy,
            },
        )
}

pub fn request() -> impl Strategy<Value = Request> {
    Union::new(vec![
        any::<u32>()
            .prop_map(|v| {
                Request::Hello(Hello {
                    protocol_version: v,
                })
            })
            .boxed(),
        LazyJust::new(|| Request::Status).boxed(),
        (secret(), kdf())
            .prop_map(|(passphrase, kdf)| Request::Init { passphrase, kdf })
            .boxed(),
        secret()
            .prop_map(|passphrase| Request::Unlock { passphrase })
            .boxed(),
        LazyJust::new(|| Request::Lock).boxed(),
        (
            text(),
            secret(),
            of(text()),
            any::<bool>(),
            any::<bool>(),
            of(secret()),
        )
            .prop_map(|(name, value, description, replace, canary, passphrase)| {
                Request::AddSecret(AddSecret {
                    name,
                    value,
                    description,
                    replace,
                    canary,
                    passphrase,
                })
            })
            .boxed(),
        (text(), of(secret()))
            .prop_map(|(name, passphrase)| Request::RemoveSecret { name, passphrase })
            .boxed(),
        (text(), text(), of(secret()))
            .prop_map(|(from, to, passphrase)| Request::Rename {
                from,
                to,
                passphrase,
            })
            .boxed(),
        (text(), of(text()))
            .prop_map(|(name, description)| Request::Describe { name, description })
            .boxed(),
        (secret(), secret())
            .prop_map(|(old, new)| Request::Passwd { old, new })
            .boxed(),
        text()
            .prop_map(|after| Request::ListSecrets { after })
            .boxed(),
        lease_request().prop_map(Request::Lease).boxed(),
        any::<u64>()
            .prop_map(|lease| Request::Release { lease })
            .boxed(),
        any::<u64>()
            .prop_map(|lease| Request::Guard { lease })
            .boxed(),
        any::<u64>()
            .prop_map(|after| Request::ListLeases { after })
            .boxed(),
        of(any::<u64>())
            .prop_map(|lease| Request::Revoke { lease })
            .boxed(),
        any::<u64>()
            .prop_map(|after| Request::ListPending { after })
            .boxed(),
        (any::<u64>(), secret())
            .prop_map(|(id, passphrase)| Request::Approve { id, passphrase })
            .boxed(),
        any::<u64>().prop_map(|id| Request::Deny { id }).boxed(),
        lease_request().prop_map(Request::Explain).boxed(),
        LazyJust::new(|| Request::AuditVerify).boxed(),
        secret()
            .prop_map(|passphrase| Request::AuditAccept { passphrase })
            .boxed(),
        LazyJust::new(|| Request::Stop).boxed(),
        secret()
            .prop_map(|passphrase| Request::PolicyReset { passphrase })
            .boxed(),
        (text(), of(text()), any::<u64>())
            .prop_map(|(name, description, requested)| {
                Request::RequestSecret(SecretWanted {
                    name,
                    description,
                    requested,
                })
            })
            .boxed(),
        LazyJust::new(|| Request::ListRequested).boxed(),
        (text(), text())
            .prop_map(|(backend, path)| Request::ListBackend { backend, path })
            .boxed(),
        (
            text(),
            vec(
                (text(), secret()).prop_map(|(name, value)| LeasedValue { name, value }),
                0..3,
            ),
        )
            .prop_map(|(file, entries)| Request::ImportSecrets(ImportSecrets { file, entries }))
            .boxed(),
        (
            vec(
                (text(), secret(), of(text())).prop_map(|(name, value, description)| NewSecret {
                    name,
                    value,
                    description,
                }),
                0..3,
            ),
            any::<bool>(),
            of(secret()),
        )
            .prop_map(|(entries, replace, passphrase)| {
                Request::AddSecrets(AddSecrets {
                    entries,
                    replace,
                    passphrase,
                })
            })
            .boxed(),
        (any::<u32>(), text(), texts())
            .prop_map(|(pid, profile, command)| {
                Request::RegisterSandbox(SandboxRequest {
                    pid,
                    profile,
                    command,
                })
            })
            .boxed(),
    ])
}

fn sandbox_info() -> impl Strategy<Value = SandboxInfo> {
    (any::<u64>(), text(), texts(), any::<u32>(), any::<u64>()).prop_map(
        |(id, profile, command, pid, started)| SandboxInfo {
            id,
            profile,
            command,
            pid,
            started,
        },
    )
}

fn process() -> impl Strategy<Value = ProcessInfo> {
    (any::<u32>(), of(text()), texts()).prop_map(|(pid, exe, argv)| ProcessInfo { pid, exe, argv })
}

fn policy_state() -> impl Strategy<Value = PolicyState> {
    (text(), any::<bool>(), of(text()), of(text())).prop_map(
        |(path, exists, error, approver_error)| PolicyState {
            path,
            exists,
            error,
            approver_error,
        },
    )
}

fn audit_state() -> impl Strategy<Value = AuditState> {
    (text(), of(text()), any::<u64>(), of(text())).prop_map(|(path, error, last_seq, tampered)| {
        AuditState {
            tampered,
            path,
            error,
            last_seq,
        }
    })
}

fn process_state() -> impl Strategy<Value = ProcessState> {
    (
        any::<u32>(),
        any::<bool>(),
        of(any::<u64>()),
        of(any::<u64>()),
        any::<u64>(),
    )
        .prop_map(
            |(uid, dumpable, core_limit, memlock_limit, memlock_needed)| ProcessState {
                uid,
                dumpable,
                core_limit,
                memlock_limit,
                memlock_needed,
            },
        )
}

fn status() -> impl Strategy<Value = AgentStatus> {
    (
        (
            text(),
            any::<u32>(),
            text(),
            text(),
            any::<bool>(),
            any::<bool>(),
        ),
        (
            of(any::<u32>()),
            any::<u32>(),
            any::<u64>(),
            of(any::<u64>()),
            any::<bool>(),
            any::<u32>(),
        ),
        (any::<u32>(), policy_state(), audit_state()),
        (
            of(text()),
            vec(sandbox_info(), 0..3),
            of(any::<u64>()),
            of(text()),
            any::<u32>(),
            texts(),
            texts(),
        ),
        process_state(),
    )
        .prop_map(
            |(
                (agent_version, pid, socket, vault, vault_exists, locked),
                (secrets, leases, idle_lock_secs, locks_in_secs, memory_locked, unlock_failures),
                (pending, policy, audit),
                (
                    exe,
                    sandboxes,
                    caller_sandbox,
                    gateway,
                    backend_recovered,
                    backend_unrevoked,
                    backends,
                ),
                process,
            )| AgentStatus {
                agent_version,
                pid,
                socket,
                vault,
                vault_exists,
                locked,
                secrets,
                leases,
                idle_lock_secs,
                locks_in_secs,
                memory_locked,
                unlock_failures,
                pending,
                policy,
                audit,
                exe,
                sandboxes,
                caller_sandbox,
                gateway,
                backend_recovered,
                backend_unrevoked,
                backends,
                process,
            },
        )
}

fn scope() -> impl Strategy<Value = Scope> {
    (
        (texts(), of(text()), text(), texts()),
        (any::<u32>(), vec(process(), 0..3), of(text()), texts()),
        of(any::<u64>()),
    )
        .prop_map(
            |((secrets, task, command, argv), (pid, chain, profile, warnings), sandbox)| Scope {
                secrets,
                task,
                command,
                argv,
                pid,
                chain,
                profile,
                sandbox,
                warnings,
            },
        )
}

fn lease_info() -> impl Strategy<Value = LeaseInfo> {
    (
        any::<u64>(),
        scope(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(id, scope, started, expires, ttl_secs)| LeaseInfo {
            id,
            scope,
            started,
            expires,
            ttl_secs,
        })
}

fn pending_info() -> impl Strategy<Value = PendingInfo> {
    (any::<u64>(), text(), scope(), any::<u64>(), any::<u64>()).prop_map(
        |(id, action, scope, requested, expires_in_secs)| PendingInfo {
            id,
            action,
            scope,
            requested,
            expires_in_secs,
        },
    )
}

fn explanation() -> impl Strategy<Value = Explanation> {
    let verdict =
        (text(), of(any::<u32>()), text()).prop_map(|(secret, rule, rule_text)| SecretVerdict {
            secret,
            rule,
            rule_text,
        });
    (
        (policy_state(), of(text()), vec(process(), 0..3), text()),
        (
            vec(verdict, 0..3),
            of(text()),
            text(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
        ),
        (texts(), any::<bool>(), text()),
    )
        .prop_map(
            |(
                (policy, profile, chain, command),
                (verdicts, refusal, approval, ttl_secs, max_ttl_secs, masking_required),
                (unknown, locked, identity),
            )| Explanation {
                policy,
                profile,
                identity,
                chain,
                command,
                verdicts,
                refusal,
                approval,
                ttl_secs,
                max_ttl_secs,
                masking_required,
                unknown,
                locked,
            },
        )
}

pub fn response() -> impl Strategy<Value = Response> {
    let info = (
        text(),
        of(text()),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(name, description, created, updated, canary)| SecretInfo {
            name,
            description,
            created,
            updated,
            canary,
        });
    let leased = (text(), secret()).prop_map(|(name, value)| LeasedValue { name, value });
    Union::new(vec![
        (proptest::sample::select(ErrorCode::ALL.to_vec()), text())
            .prop_map(|(code, message)| Response::Error { code, message })
            .boxed(),
        (any::<u32>(), text(), any::<u32>())
            .prop_map(|(protocol_version, agent_version, pid)| {
                Response::Welcome(Welcome {
                    protocol_version,
                    agent_version,
                    pid,
                })
            })
            .boxed(),
        LazyJust::new(|| Response::Done).boxed(),
        status().prop_map(Response::Status).boxed(),
        (vec(info, 0..4), any::<bool>())
            .prop_map(|(items, more)| Response::Secrets { items, more })
            .boxed(),
        (
            any::<u64>(),
            vec(leased, 0..4),
            any::<u64>(),
            any::<bool>(),
            of((vec(any::<u8>(), 0..64), text(), texts(), texts())),
        )
            .prop_map(|(lease, values, expires_in_ms, strict_env, gateway)| {
                Response::Leased(LeaseGrant {
                    lease,
                    values,
                    expires_in_ms,
                    strict_env,
                    gateway: gateway.map(|(url, ca_pem, placeholders, hosts)| GatewayGrant {
                        proxy_url: SecretBytes::new(url),
                        ca_pem,
                        placeholders,
                        hosts,
                    }),
                })
            })
            .boxed(),
        (any::<u64>(), text())
            .prop_map(|(lease, reason)| Response::LeaseEnded { lease, reason })
            .boxed(),
        (vec(lease_info(), 0..3), any::<bool>())
            .prop_map(|(items, more)| Response::Leases { items, more })
            .boxed(),
        any::<u32>()
            .prop_map(|count| Response::Revoked { count })
            .boxed(),
        (vec(pending_info(), 0..3), any::<bool>())
            .prop_map(|(items, more)| Response::Pending { items, more })
            .boxed(),
        (any::<u64>(), of(text()), any::<u64>(), of(text()))
            .prop_map(|(id, approver, timeout_secs, approver_failed)| {
                Response::Waiting(Waiting {
                    id,
                    approver,
                    timeout_secs,
                    approver_failed,
                })
            })
            .boxed(),
        text().prop_map(Response::NeedsPassphrase).boxed(),
        sandbox_info().prop_map(Response::SandboxRegistered).boxed(),
        vec(
            (text(), of(text()), any::<u64>()).prop_map(|(name, description, requested)| {
                SecretWanted {
                    name,
                    description,
                    requested,
                }
            }),
            0..3,
        )
        .prop_map(Response::Requested)
        .boxed(),
        texts().prop_map(Response::BackendKeys).boxed(),
        explanation().prop_map(Response::Explanation).boxed(),
        (
            texts(),
            any::<u64>(),
            of(text()),
            any::<u64>(),
            any::<u64>(),
            of(text()),
        )
            .prop_map(
                |(files, lines, problem, unsealed, never_sealed, never_sealed_at)| {
                    Response::AuditReport(AuditReport {
                        files,
                        lines,
                        problem,
                        unsealed,
                        never_sealed,
                        never_sealed_at,
                    })
                },
            )
            .boxed(),
    ])
}

/// Every `Request` variant by name: an exhaustive `match`, so a new variant does not
/// compile until it is named here — and `every_variant_is_generated` then fails until
/// `request()` makes it too.
fn request_variant(r: &Request) -> &'static str {
    match r {
        Request::Hello(_) => "Hello",
        Request::Status => "Status",
        Request::Init { .. } => "Init",
        Request::Unlock { .. } => "Unlock",
        Request::Lock => "Lock",
        Request::AddSecret(_) => "AddSecret",
        Request::RemoveSecret { .. } => "RemoveSecret",
        Request::Rename { .. } => "Rename",
        Request::Describe { .. } => "Describe",
        Request::Passwd { .. } => "Passwd",
        Request::ListSecrets { .. } => "ListSecrets",
        Request::Lease(_) => "Lease",
        Request::Release { .. } => "Release",
        Request::Guard { .. } => "Guard",
        Request::ListLeases { .. } => "ListLeases",
        Request::Revoke { .. } => "Revoke",
        Request::ListPending { .. } => "ListPending",
        Request::Approve { .. } => "Approve",
        Request::Deny { .. } => "Deny",
        Request::Explain(_) => "Explain",
        Request::AuditVerify => "AuditVerify",
        Request::AuditAccept { .. } => "AuditAccept",
        Request::Stop => "Stop",
        Request::PolicyReset { .. } => "PolicyReset",
        Request::RegisterSandbox(_) => "RegisterSandbox",
        Request::RequestSecret(_) => "RequestSecret",
        Request::ListRequested => "ListRequested",
        Request::ListBackend { .. } => "ListBackend",
        Request::ImportSecrets(_) => "ImportSecrets",
        Request::AddSecrets(_) => "AddSecrets",
    }
}

const REQUEST_VARIANTS: usize = 30;

/// The same for `Response`.
fn response_variant(r: &Response) -> &'static str {
    match r {
        Response::Error { .. } => "Error",
        Response::Welcome(_) => "Welcome",
        Response::Done => "Done",
        Response::Status(_) => "Status",
        Response::Secrets { .. } => "Secrets",
        Response::Leased(_) => "Leased",
        Response::LeaseEnded { .. } => "LeaseEnded",
        Response::Leases { .. } => "Leases",
        Response::Revoked { .. } => "Revoked",
        Response::Pending { .. } => "Pending",
        Response::Waiting(_) => "Waiting",
        Response::NeedsPassphrase(_) => "NeedsPassphrase",
        Response::Explanation(_) => "Explanation",
        Response::AuditReport(_) => "AuditReport",
        Response::SandboxRegistered(_) => "SandboxRegistered",
        Response::Requested(_) => "Requested",
        Response::BackendKeys(_) => "BackendKeys",
    }
}

const RESPONSE_VARIANTS: usize = 17;

#[test]
fn every_variant_is_generated() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::HashSet::new();
    let requests = request();
    for _ in 0..5000 {
        let r = requests.new_tree(&mut runner).unwrap().current();
        seen.insert(request_variant(&r));
    }
    assert_eq!(
        seen.len(),
        REQUEST_VARIANTS,
        "request() misses a variant: has {seen:?}"
    );
    let mut seen = std::collections::HashSet::new();
    let responses = response();
    for _ in 0..5000 {
        let r = responses.new_tree(&mut runner).unwrap().current();
        seen.insert(response_variant(&r));
    }
    assert_eq!(
        seen.len(),
        RESPONSE_VARIANTS,
        "response() misses a variant: has {seen:?}"
    );
}
