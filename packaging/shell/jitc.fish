# jitc: point this shell at the agent. For ~/.config/fish/conf.d/jitc.fish
if command -q jitc
    jitc agent --fish 2>/dev/null | source
end
