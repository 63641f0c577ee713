#!/usr/bin/env bash
# P2's floor: the least a preview of a pushed commit takes on this machine,
# done by hand — shallow clone, build and push with buildctl, docker compose
# up. The bench times it from the commit to the new content answering; it
# polls the published port itself, as it polls byop's router.
#
# usage: floor.sh CLONE_URL BRANCH WORK_DIR IMAGE PROJECT PORT
#   IMAGE    where to push, e.g. 127.0.0.1:5000/bench/app:<sha>
#   PROJECT  compose project name; PORT is published on 127.0.0.1 to the
#            app's port 8080
# Environment: BUILDKIT_HOST (buildctl's address), BUILDCTL (its path).
# Prints "floor-step NAME MICROSECONDS" after each step.
set -euo pipefail
clone_url=$1 branch=$2 work=$3 image=$4 project=$5 port=$6

last=${EPOCHREALTIME//[!0-9]/}
step() {
	local now=${EPOCHREALTIME//[!0-9]/}
	echo "floor-step $1 $((now - last))"
	last=$now
}

rm -rf "$work/src"
git clone --quiet --depth 1 --branch "$branch" "$clone_url" "$work/src"
step clone

"${BUILDCTL:-buildctl}" build --progress quiet \
	--frontend dockerfile.v0 \
	--local context="$work/src" --local dockerfile="$work/src" \
	--output "type=image,name=$image,push=true,registry.insecure=true"
step build+push

cat >"$work/compose.yaml" <<YAML
services:
  app:
    image: $image
    ports: ["127.0.0.1:$port:8080"]
YAML
docker compose -p "$project" -f "$work/compose.yaml" up -d --quiet-pull --timeout 0
step pull+compose-up
