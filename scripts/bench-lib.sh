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
