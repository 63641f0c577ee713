#!/usr/bin/env bash
# Installs and starts the services byop's tests run against, on Debian 12 as
# root: Docker Engine, Redis, a CNCF distribution registry, buildkitd, plus
# buildctl and (when it works with the local engine) Docker Compose v2, and a
# busybox base image in the local registry. Writes the BYOP_TEST_* variables
# to an env file that `make test` sources.
#
# Idempotent: a daemon that already answers is reused, never restarted; tools
# are rebuilt only when missing or at the wrong version. Needs nothing from the
# internet but Debian's apt and the Go module proxy.
#
# Settings (environment):
#   BYOP_CACHE_DIR  project-local cache: tools, env file (default: <repo>/.cache)
#   BYOP_STATE_DIR  machine-wide daemon state: data, configs, logs (default: /var/lib/byop-dev)
#   BYOP_WAIT       seconds to wait for a daemon to answer (default: 60)
#   BYOP_COMPOSE_V2 0 to skip building Docker Compose v2 (default: 1)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BYOP_CACHE_DIR:-$ROOT/.cache}
TOOLS=$CACHE/bin
ENV_FILE=$CACHE/test.env
STATE=${BYOP_STATE_DIR:-/var/lib/byop-dev}
LOGS=$STATE/log
WAIT=${BYOP_WAIT:-60}

REDIS_ADDR=127.0.0.1:6379
REGISTRY_ADDR=127.0.0.1:5000
BUILDKIT_SOCK=/run/buildkit/buildkitd.sock
BUILDKIT_ADDR=unix://$BUILDKIT_SOCK

# Docker Compose v2 built from its Go module. v2.40.3 is the newest v2 the
# module proxy offers; it builds with Go 1.26 and, negotiating API 1.41, runs
# `up`/`down` against Debian 12's Docker Engine 20.10.
COMPOSE_MODULE=github.com/docker/compose/v2
COMPOSE_VERSION=v2.40.3

APT_PACKAGES=(docker.io runc redis-server redis-tools docker-registry docker-compose
	busybox-static openssh-server git curl iptables util-linux)

export PATH="$TOOLS:$PATH:/usr/local/sbin:/usr/sbin:/sbin"

say() { printf 'setup: %s\n' "$*" >&2; }
die() {
	printf 'setup: error: %s\n' "$*" >&2
	exit 1
}

# wait_for LOG WHAT CMD... polls CMD until it succeeds, for at most $WAIT seconds.
wait_for() {
	local log=$1 what=$2
	shift 2
	local deadline=$((SECONDS + WAIT))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			if [[ -n $log && -f $log ]]; then
				printf 'setup: last lines of %s:\n' "$log" >&2
				tail -n 20 "$log" >&2 || true
			fi
			die "$what did not answer within ${WAIT}s (log: ${log:-none})"
		fi
		sleep 0.5
	done
}

# start LOG CMD... runs CMD as a daemon in its own session, logging to LOG.
start() {
	local log=$1
	shift
	mkdir -p "$(dirname "$log")"
	printf '\n=== %s: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log"
	# 9>&-: the daemon must not inherit (and so hold) the set-up lock.
	setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
	disown
}

need_root() {
	((EUID == 0)) || die "$1 needs root (run as root, or start it yourself)"
}

# ---------------------------------------------------------------- packages

install_packages() {
	local missing=() p
	for p in "${APT_PACKAGES[@]}"; do
		if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) != installed ]]; then
			missing+=("$p")
		fi
	done
	((${#missing[@]} == 0)) && return 0
	need_root "installing ${missing[*]}"
	say "installing ${missing[*]}"
	# Keep package scripts from starting their own daemons: this script
	# starts each service itself, with its own configuration.
	local policy=/usr/sbin/policy-rc.d made_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made_policy=1
	fi
	local rc=0
	{
		DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	} >"$CACHE/apt.log" 2>&1 || rc=$?
	((made_policy)) && rm -f "$policy"
	((rc == 0)) || {
		tail -n 20 "$CACHE/apt.log" >&2
		die "apt-get failed (log: $CACHE/apt.log)"
	}
}

# ---------------------------------------------------------------- tools from Go modules

# build_tools MODULE VERSION LDFLAGS PKG... builds PKGs of MODULE@VERSION into
# $TOOLS from a throwaway module that requires it. Unlike `go install
# pkg@version`, this works whether or not the tool's go.mod has replace
# directives (buildkit's has had them).
build_tools() {
	local module=$1 version=$2 ldflags=$3
	shift 3
	local tmp
	tmp=$(mktemp -d)
	local log
	log=$CACHE/build-$(basename "${module%/v[0-9]*}").log
	say "building $* at $version (log: $log)"
	local start_s=$SECONDS
	# (set -e does not hold inside a command tested by ||: chain with &&.)
	(
		cd "$tmp" &&
			printf 'module byoptools\n\ngo %s\n' "$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')" >go.mod &&
			{
				printf '//go:build tools\n\npackage tools\n\nimport (\n'
				printf '\t_ "%s"\n' "$@"
				printf ')\n'
			} >tools.go &&
			go get "${@/%/@$version}" &&
			GOBIN=$TOOLS go install -ldflags "$ldflags" "$@"
	) >"$log" 2>&1 || {
		tail -n 20 "$log" >&2
		rm -rf "$tmp"
		die "building $* failed (log: $log)"
	}
	rm -rf "$tmp"
	say "built $* in $((SECONDS - start_s))s"
}

# has_version BIN VERSION: BIN's --version output names VERSION.
has_version() {
	[[ -x $1 ]] && "$1" --version 2>/dev/null | grep -qF " $2"
}

install_buildkit() {
	BUILDKIT_VERSION=$(cd "$ROOT" && go list -m -f '{{.Version}}' github.com/moby/buildkit) ||
		die "reading the buildkit version from go.mod"
	if has_version "$TOOLS/buildkitd" "$BUILDKIT_VERSION" && has_version "$TOOLS/buildctl" "$BUILDKIT_VERSION"; then
		return 0
	fi
	build_tools github.com/moby/buildkit "$BUILDKIT_VERSION" \
		"-X github.com/moby/buildkit/version.Version=$BUILDKIT_VERSION" \
		github.com/moby/buildkit/cmd/buildkitd github.com/moby/buildkit/cmd/buildctl
	has_version "$TOOLS/buildkitd" "$BUILDKIT_VERSION" || die "built buildkitd does not report $BUILDKIT_VERSION"
}

compose_plugin_dir() { echo "${DOCKER_CONFIG:-${HOME:-/root}/.docker}/cli-plugins"; }

install_compose() {
	[[ ${BYOP_COMPOSE_V2:-1} == 0 ]] && return 0
	local plugin
	plugin=$(compose_plugin_dir)/docker-compose
	if [[ -x $plugin ]] && "$plugin" version --short 2>/dev/null | grep -qxF "${COMPOSE_VERSION#v}"; then
		return 0
	fi
	if ! has_version "$TOOLS/docker-compose" "$COMPOSE_VERSION"; then
		build_tools "$COMPOSE_MODULE" "$COMPOSE_VERSION" \
			"-X $COMPOSE_MODULE/internal.Version=$COMPOSE_VERSION" \
			"$COMPOSE_MODULE/cmd"
		mv -f "$TOOLS/cmd" "$TOOLS/docker-compose"
	fi
	mkdir -p "$(dirname "$plugin")"
	install -m 755 "$TOOLS/docker-compose" "$plugin.tmp"
	mv -f "$plugin.tmp" "$plugin"
}

# ---------------------------------------------------------------- services

# ensure_cgroups mounts cgroup v1 hierarchies when none is mounted (a bare VM
# without an init system); Docker and runc need them.
ensure_cgroups() {
	grep -qE '^[^ ]+ [^ ]+ cgroup2? ' /proc/self/mounts && return 0
	need_root "mounting cgroups"
	say "mounting cgroups"
	mountpoint -q /sys/fs/cgroup || mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
	local sub enabled
	while read -r sub _ _ enabled; do
		[[ $sub == \#* || $enabled != 1 ]] && continue
		mkdir -p "/sys/fs/cgroup/$sub"
		mountpoint -q "/sys/fs/cgroup/$sub" || mount -t cgroup -o "$sub" cgroup "/sys/fs/cgroup/$sub" ||
			say "warning: could not mount cgroup $sub"
	done </proc/cgroups
}

docker_answers() { docker version --format '{{.Server.Version}}'; }

ensure_docker() {
	docker_answers >/dev/null 2>&1 && return 0
	need_root "starting dockerd"
	ensure_cgroups
	local args=()
	if ! iptables -t nat -L -n >/dev/null 2>&1; then
		if [[ -x /usr/sbin/iptables-legacy ]] && iptables-legacy -t nat -L -n >/dev/null 2>&1; then
			update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
			update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null 2>&1 || true
		else
			say "warning: iptables unusable here; starting dockerd with --iptables=false"
			args+=(--iptables=false)
		fi
	fi
	say "starting dockerd (log: $LOGS/dockerd.log)"
	start "$LOGS/dockerd.log" dockerd "${args[@]}"
	wait_for "$LOGS/dockerd.log" dockerd docker_answers
}

redis_answers() { [[ $(redis-cli -h "${REDIS_ADDR%:*}" -p "${REDIS_ADDR##*:}" ping 2>/dev/null) == PONG ]]; }

ensure_redis() {
	redis_answers && return 0
	mkdir -p "$STATE/redis"
	say "starting redis-server on $REDIS_ADDR (log: $LOGS/redis.log)"
	start "$LOGS/redis.log" redis-server --bind "${REDIS_ADDR%:*}" --port "${REDIS_ADDR##*:}" \
		--dir "$STATE/redis" --save '' --appendonly no --daemonize no
	wait_for "$LOGS/redis.log" redis-server redis_answers
}

registry_answers() { curl -fsS -o /dev/null "http://$REGISTRY_ADDR/v2/"; }

ensure_registry() {
	registry_answers 2>/dev/null && return 0
	local cfg=$STATE/etc/registry.yml
	mkdir -p "$STATE/etc" "$STATE/registry"
	# Debian's default config asks for htpasswd auth; tests need plain HTTP,
	# no auth, and deletes.
	cat >"$cfg" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/registry
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: $REGISTRY_ADDR
EOF
	say "starting registry on $REGISTRY_ADDR (log: $LOGS/registry.log)"
	start "$LOGS/registry.log" docker-registry serve "$cfg"
	wait_for "$LOGS/registry.log" registry registry_answers
}

buildkit_answers() { buildctl --addr "$BUILDKIT_ADDR" debug workers; }

ensure_buildkit() {
	if buildkit_answers >/dev/null 2>&1; then
		local running
		running=$(buildctl --addr "$BUILDKIT_ADDR" debug info 2>/dev/null | awk '$1 == "BuildKit:" { print $3 }')
		if [[ -n $running && $running != "$BUILDKIT_VERSION" ]]; then
			say "warning: the running buildkitd is $running but go.mod pins $BUILDKIT_VERSION; stop it and run this again to replace it"
		fi
		return 0
	fi
	need_root "starting buildkitd"
	ensure_cgroups
	local cfg=$STATE/etc/buildkitd.toml
	mkdir -p "$STATE/etc" "$STATE/buildkit" "$(dirname "$BUILDKIT_SOCK")"
	cat >"$cfg" <<EOF
root = "$STATE/buildkit"

[grpc]
  address = ["$BUILDKIT_ADDR"]

[worker.oci]
  enabled = true
  binary = "runc"
  # No CNI here: build steps share the host's network.
  networkMode = "host"

[worker.containerd]
  enabled = false

[registry."$REGISTRY_ADDR"]
  http = true
  insecure = true

[registry."localhost:${REGISTRY_ADDR##*:}"]
  http = true
  insecure = true
EOF
	say "starting buildkitd on $BUILDKIT_ADDR (log: $LOGS/buildkitd.log)"
	start "$LOGS/buildkitd.log" buildkitd --config "$cfg"
	wait_for "$LOGS/buildkitd.log" buildkitd buildkit_answers
}

# compose_works checks that `docker compose` can bring a trivial project up
# and down against the local engine.
compose_works() {
	local dir rc=0
	dir=$(mktemp -d)
	cat >"$dir/compose.yaml" <<EOF
services:
  probe:
    image: $BASE_IMAGE
    command: ["sleep", "30"]
EOF
	{
		docker compose -p byop-setup-probe -f "$dir/compose.yaml" up -d &&
			docker compose -p byop-setup-probe -f "$dir/compose.yaml" ps --status running -q | grep -q .
	} >"$CACHE/compose-probe.log" 2>&1 || rc=$?
	docker compose -p byop-setup-probe -f "$dir/compose.yaml" down -t 0 >>"$CACHE/compose-probe.log" 2>&1 || true
	rm -rf "$dir"
	return "$rc"
}

# ---------------------------------------------------------------- base image

busybox_version() {
	local banner
	banner=$(/bin/busybox --help 2>&1 || true)
	banner=${banner%%$'\n'*}
	[[ $banner =~ ^BusyBox\ v([0-9][0-9.]*) ]] || die "cannot read busybox's version from: $banner"
	echo "${BASH_REMATCH[1]}"
}

ensure_base_image() {
	local repo=byop/busybox tag=$BUSYBOX_VERSION
	if curl -fsS -o /dev/null -I \
		-H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		"http://$REGISTRY_ADDR/v2/$repo/manifests/$tag" 2>/dev/null; then
		return 0
	fi
	say "pushing $BASE_IMAGE"
	(cd "$ROOT" && go run ./hack/baseimage -busybox /bin/busybox -version "$BUSYBOX_VERSION" -insecure "$BASE_IMAGE") >&2 ||
		die "building the base image"
}

# ---------------------------------------------------------------- main

main() {
	mkdir -p "$CACHE" "$TOOLS"
	[[ -d $STATE ]] || { need_root "creating $STATE"; mkdir -p "$STATE"; }
	mkdir -p "$LOGS"
	# One set-up at a time on a machine.
	exec 9>"$STATE/setup.lock"
	flock -w 1800 9 || die "another set-up still holds $STATE/setup.lock"

	install_packages
	install_buildkit
	install_compose

	ensure_docker
	ensure_redis
	ensure_registry
	ensure_buildkit

	BUSYBOX_VERSION=$(busybox_version)
	BASE_IMAGE=$REGISTRY_ADDR/byop/busybox:$BUSYBOX_VERSION
	ensure_base_image

	local compose="docker-compose"
	if [[ ${BYOP_COMPOSE_V2:-1} != 0 ]] && docker compose version >/dev/null 2>&1; then
		if [[ -f $CACHE/compose-ok ]] || compose_works; then
			compose="docker compose"
			touch "$CACHE/compose-ok"
		else
			say "warning: docker compose v2 does not work with this engine (log: $CACHE/compose-probe.log); using docker-compose v1"
		fi
	fi

	# Tests start their own sshd (the "VPS" of the remote deployer) on loopback.
	local sshd
	sshd=$(command -v sshd) || die "sshd not found (package openssh-server)"

	local tmp=$ENV_FILE.tmp
	cat >"$tmp" <<EOF
# Written by scripts/setup.sh: the services byop's tests run against.
export BYOP_TEST_REDIS=$REDIS_ADDR
export BYOP_TEST_BUILDKIT=$BUILDKIT_ADDR
export BYOP_TEST_REGISTRY=$REGISTRY_ADDR
export BYOP_TEST_BASE_IMAGE=$BASE_IMAGE
export BYOP_TEST_DOCKER=1
export BYOP_TEST_COMPOSE="$compose"
export BYOP_TEST_SSHD=$sshd
export PATH="$TOOLS:\$PATH"
EOF
	mv -f "$tmp" "$ENV_FILE"
	say "ready: $ENV_FILE"
}

# Sourcing the script (to try one function) runs nothing.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
