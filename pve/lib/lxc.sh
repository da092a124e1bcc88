#!/bin/bash
# Simulated lxc-freeze, lxc-unfreeze and lxc-info for the pve/sim node.
# A container's state lives in $PROXBORG_SIM_DIR/state/<vmid> (RUNNING, STOPPED or FROZEN);
# every freeze/unfreeze call is appended to $PROXBORG_SIM_DIR/log/freeze.log as
# "<epoch.ns> <program> <args...>" so tests can check what proxborg asked for and in which order.
set -euo pipefail

prog=$1
shift
D=${PROXBORG_SIM_DIR:?PROXBORG_SIM_DIR is not set}

name=""
state_only=0
args=("$@")
while (($#)); do
    case $1 in
    -n | --name) name=${2:-}; shift 2 || { echo "$prog: option -n needs a value" >&2; exit 1; } ;;
    --name=*) name=${1#--name=}; shift ;;
    -s | --state) state_only=1; shift ;;
    -q | --quiet | -P | --lxcpath | -l | --logpriority | -o | --logfile) shift ;;
    *) echo "$prog: unknown argument '$1'" >&2; exit 1 ;;
    esac
done
[[ $name =~ ^[1-9][0-9]*$ ]] || { echo "$prog: -n <vmid> is required" >&2; exit 1; }
conf_dir=$D/etc/pve/nodes/$(sed -n 's/^NODE=//p' "$D/sim.conf")/lxc
state_file=$D/state/$name
if [[ ! -f $conf_dir/$name.conf ]]; then
    echo "$prog: $name: container does not exist" >&2
    exit 1
fi
state=STOPPED
[[ -f $state_file ]] && state=$(<"$state_file")

case $prog in
lxc-freeze | lxc-unfreeze)
    printf '%s %s %s\n' "$(date +%s.%N)" "$prog" "${args[*]}" >>"$D/log/freeze.log"
    if [[ $state == STOPPED ]]; then
        echo "$prog: $name: container is not running" >&2
        exit 1
    fi
    # The container's processes: host pids listed in state/<vmid>.procs (a test registers its
    # "container" writers there). lxc-freeze stops them all and returns once every one is
    # stopped, as the cgroup freezer does; lxc-unfreeze resumes them.
    procs=()
    if [[ -f $state_file.procs ]]; then
        while read -r pid; do
            [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]] && procs+=("$pid")
        done <"$state_file.procs"
    fi
    if [[ $prog == lxc-freeze ]]; then
        for pid in "${procs[@]}"; do kill -STOP "$pid" 2>/dev/null || true; done
        for pid in "${procs[@]}"; do
            for _ in $(seq 1 500); do
                st=$(sed -n 's/^[0-9]* (.*) \(.\).*/\1/p' "/proc/$pid/stat" 2>/dev/null || echo gone)
                [[ $st == T || $st == t || $st == Z || $st == gone || -z $st ]] && break
                sleep 0.01
            done
        done
        echo FROZEN >"$state_file"
        # a slow freezer (processes in D state take seconds on a real host), for kill tests
        if [[ -f $state_file.freeze-delay ]]; then sleep "$(<"$state_file.freeze-delay")"; fi
    else
        for pid in "${procs[@]}"; do kill -CONT "$pid" 2>/dev/null || true; done
        echo RUNNING >"$state_file"
    fi
    ;;
lxc-info)
    if ((state_only)); then
        printf 'State:          %s\n' "$state"
    else
        printf 'Name:           %s\nState:          %s\n' "$name" "$state"
    fi
    ;;
*)
    echo "lxc.sh: unknown program $prog" >&2
    exit 1
    ;;
esac
