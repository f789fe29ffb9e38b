# Sourced by the bench scripts.

# throwaway_home DIR: HOME and the XDG directories inside DIR, so that the vault, the
# policy, the audit log and the agent's socket of a bench are its own and nothing of
# yours is touched.
throwaway_home() {
    export HOME="$1/home" XDG_RUNTIME_DIR="$1/run" XDG_DATA_HOME="$1/home/.local/share" \
        XDG_STATE_HOME="$1/home/.local/state" XDG_CONFIG_HOME="$1/home/.config"
    unset JITC_SOCK JITC_VAULT
    mkdir -p "$HOME" && mkdir -m 0700 "$XDG_RUNTIME_DIR"
}

# agents_up BIN_DIR: in the throwaway home set up by throwaway_home, an ssh-agent with
# one key (SSH_AUTH_SOCK, SSH_AGENT_PID) and a jitc agent of BIN_DIR (JITC_SOCK,
# agent_pid) whose new vault holds X. `agents_down` stops both (call it from the
# script's cleanup, before removing the home).
agents_up() {
    eval "$(ssh-agent -s -a "$HOME/ssh-agent.sock")" >/dev/null
    ssh-keygen -q -t ed25519 -N '' -f "$HOME/id_ed25519"
    ssh-add -q "$HOME/id_ed25519"
    eval "$("$1/jitc" agent 2>/dev/null)"
    agent_pid="$("$1/jitc" status --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')"
    printf 'bench passphrase\n' | "$1/jitc" init --passphrase-stdin 2>/dev/null
    printf 'value-of-x-123456' | "$1/jitc" add X 2>/dev/null
}
agents_down() {
    [ -n "${SSH_AGENT_PID:-}" ] && kill "$SSH_AGENT_PID" 2>/dev/null || true
    [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null || true
    # The agent is not our child: wait for it to go before its home is removed.
    while [ -n "${agent_pid:-}" ] && kill -0 "$agent_pid" 2>/dev/null; do sleep 0.05; done
}

# free_port: a TCP port on loopback that was free a moment ago.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# bao_dev_up BAO DIR ROOT_TOKEN: `bao server -dev` on a free loopback port with its
# file audit device on (declared in a config file: OpenBao does not enable audit
# devices through its API), writing to DIR/bao-audit.log. Sets bao_pid, drain_pid,
# bao_port, bao_audit and exports BAO_ADDR. Up once it says so; tried again on another
# port when its output ends first (the port was taken meanwhile). The rest of its
# output is drained, or it would die writing it. `bao_down` stops it.
bao_dev_up() {
    local bin="$1" dir="$2" root="$3" line up
    bao_audit="$dir/bao-audit.log"
    cat >"$dir/audit.hcl" <<HCL
audit "file" "to-file" {
  options {
    file_path = "$bao_audit"
  }
}
HCL
    bao_pid=
    for _ in 1 2 3 4 5; do
        bao_port="$(free_port)"
        coproc BAO { exec "$bin" server -dev "-dev-root-token-id=$root" \
            "-dev-listen-address=127.0.0.1:$bao_port" -dev-no-store-token \
            "-config=$dir/audit.hcl" 2>"$dir/bao.stderr"; }
        bao_pid=$BAO_PID
        up=
        while IFS= read -r -t 60 line <&"${BAO[0]}"; do
            case "$line" in *"Development mode should NOT be used"*) up=1; break ;; esac
        done
        if [ -n "$up" ]; then
            exec {bao_out}<&"${BAO[0]}"
            cat <&"$bao_out" >/dev/null &
            drain_pid=$!
            exec {bao_out}<&-
            break
        fi
        wait "$bao_pid" 2>/dev/null || true
        bao_pid=
    done
    [ -n "$bao_pid" ] || { echo "bao server -dev did not start: $(tail -n 5 "$dir/bao.stderr")" >&2; return 1; }
    export BAO_ADDR="http://127.0.0.1:$bao_port"
}
bao_down() {
    if [ -n "${bao_pid:-}" ]; then
        kill "$bao_pid" 2>/dev/null || true
        wait "$bao_pid" 2>/dev/null || true
    fi
    if [ -n "${drain_pid:-}" ]; then
        kill "$drain_pid" 2>/dev/null || true
        wait "$drain_pid" 2>/dev/null || true
    fi
}

# callgrind_agent_up BIN_DIR CALLGRIND_OUT: in the throwaway home set up by
# throwaway_home, BIN_DIR's agent under callgrind (its pid in vg, its output in
# $HOME/agent.out and .err), serving once it says "ready", with a new vault holding X
# (a cheap KDF: valgrind is slow). JITC_SOCK is exported. Stop it with `jitc stop`,
# then `wait "$vg"`.
callgrind_agent_up() {
    mkdir -p -m 0700 "$XDG_RUNTIME_DIR/jitc"
    export JITC_SOCK="$XDG_RUNTIME_DIR/jitc/agent.sock"
    valgrind --tool=callgrind --callgrind-out-file="$2" "$1/jitc-agentd" --socket "$JITC_SOCK" \
        >"$HOME/agent.out" 2>"$HOME/agent.err" &
    vg=$!
    until grep -q ready "$HOME/agent.out" 2>/dev/null; do
        kill -0 "$vg" 2>/dev/null || { cat "$HOME/agent.err" >&2; return 1; }
        sleep 0.1
    done
    printf 'profile passphrase\n' | "$1/jitc" init --passphrase-stdin --kdf-memory 8 --kdf-iterations 1 >/dev/null 2>&1
    printf 'value-of-x-123456' | "$1/jitc" add X >/dev/null 2>&1
}

# ops_of OUTPUT: the count in jitc-lease-bench's "ops=N".
ops_of() { sed -n 's/.* ops=\([0-9]*\).*/\1/p' <<<"$1"; }

# median: the median of the numbers on standard input, one a line.
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
