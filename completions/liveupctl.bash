# bash completion for liveupctl(1)                          -*- shell-script -*-
# Installed as /usr/share/bash-completion/completions/liveupctl.
# Completes commands, options, --mode values, and for `stage`, `reboot` and
# `unquarantine` the
# releases of the installed kernels (from /usr/lib/modules and /boot, without
# asking the daemon: completion must stay instant).

# The kernel releases installed here, one per line. LIVEUPD_COMPLETION_ROOT
# (tests) is a directory standing in for /.
_liveupctl_releases()
{
    local root=${LIVEUPD_COMPLETION_ROOT-} d r
    {
        for d in "$root"/usr/lib/modules/*/; do
            r=${d%/}
            r=${r##*/}
            if [[ -e $d/vmlinuz || -e $root/boot/vmlinuz-$r ]]; then
                printf '%s\n' "$r"
            fi
        done
        for d in "$root"/boot/vmlinuz-*; do
            [[ -e $d ]] && printf '%s\n' "${d##*/vmlinuz-}"
        done
    } | sort -u
}

_liveupctl()
{
    local cur prev words cword
    _init_completion || return

    local commands="status show kernels stage exec cancel unquarantine history hooks reboot"
    local bus="--system --session --bus --no-ask-password"
    local output="-j --json -q --quiet --no-legend --no-pager"
    local i cmd=""
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --bus) ((i++)) ;;
            -*) ;;
            *)
                cmd=${words[i]}
                break
                ;;
        esac
    done

    case $prev in
        --mode)
            mapfile -t COMPREPLY < <(compgen -W "direct systemd" -- "$cur")
            return
            ;;
        --initrd | --config)
            _filedir
            return
            ;;
        --bus | --cmdline | --append | --sha256 | --profile | --limit)
            return
            ;;
    esac

    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "--help --version $bus $output" -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
        fi
        return
    fi

    local opts=""
    case $cmd in
        status | show | kernels | cancel) opts="$bus $output" ;;
        stage) opts="--initrd --cmdline --append --sha256 --profile $bus $output" ;;
        exec) opts="--mode --ignore-inhibitors --no-wait $bus $output" ;;
        history) opts="--limit $bus $output" ;;
        hooks) opts="--config $output" ;;
        reboot) opts="--mode --ignore-inhibitors --fallback --if-needed $bus $output" ;;
        unquarantine) opts="--all $bus $output" ;;
        *) return ;;
    esac
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "--help $opts" -- "$cur")
        return
    fi
    case $cmd in
        stage | reboot | unquarantine)
            if [[ $cur == */* ]]; then
                _filedir
            else
                mapfile -t COMPREPLY < <(compgen -W "$(_liveupctl_releases)" -- "$cur")
            fi
            ;;
        hooks)
            if [[ " ${words[*]:1:cword-1} " == *" check "* ]]; then
                _filedir
            else
                mapfile -t COMPREPLY < <(compgen -W "check" -- "$cur")
            fi
            ;;
    esac
} &&
    complete -F _liveupctl liveupctl

# ex: filetype=sh
