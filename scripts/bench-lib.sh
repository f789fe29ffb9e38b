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
