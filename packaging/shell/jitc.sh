# jitc: point this shell at the agent (starting it if needed). For ~/.bashrc or ~/.zshrc:
#   . ~/.local/lib/jitc/shell/jitc.sh
if command -v jitc >/dev/null 2>&1; then
    eval "$(jitc agent 2>/dev/null)"
fi
