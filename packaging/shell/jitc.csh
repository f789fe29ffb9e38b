# jitc: point this shell at the agent. For ~/.cshrc or ~/.tcshrc:
#   source ~/.local/lib/jitc/shell/jitc.csh
if ( `where jitc` != "" ) then
    eval `jitc agent --csh`
endif
