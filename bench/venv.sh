# Sourced by the comparison scripts: `pinned_venv DIR PACKAGE VERSION` makes (or reuses) a
# Python virtual environment in DIR holding exactly PACKAGE==VERSION, installing Debian's
# python3-venv first when Python lacks the venv module.
pinned_venv() {
    local venv=$1 package=$2 version=$3
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        local sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            -o DPkg::Lock::Timeout=600 --no-install-recommends python3-venv
    fi
    if ! "$venv/bin/python" -c "from importlib.metadata import version
assert version('$package') == '$version'" 2>/dev/null; then
        echo "==> installing $package $version into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "$package==$version"
    fi
}
