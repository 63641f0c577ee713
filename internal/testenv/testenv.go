// Package testenv tells integration tests where the real services are.
//
// The services (Redis, buildkitd, the registry, Docker) are installed and
// started by the project's own set-up (scripts/setup.sh, run by `make test`),
// which exports their addresses as BYOP_TEST_* variables. Without them a
// test is skipped on a developer's machine and fails in CI, so that CI never
// passes by skipping.
package testenv

import (
	"os"
	"testing"
)

// lookup returns the variable's value, or skips (fails under CI) when unset.
func lookup(t testing.TB, name, what string) string {
	t.Helper()
	if v := os.Getenv(name); v != "" {
		return v
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not set: %s is required in CI (run `make test`)", name, what)
	}
	t.Skipf("%s is not set: needs %s (run `make test`)", name, what)
	return ""
}

// Redis returns the address (host:port) of a real Redis server.
func Redis(t testing.TB) string { return lookup(t, "BYOP_TEST_REDIS", "Redis") }

// BuildKit returns the address of a real buildkitd, e.g. unix:///run/buildkit/buildkitd.sock.
func BuildKit(t testing.TB) string { return lookup(t, "BYOP_TEST_BUILDKIT", "buildkitd") }

// Registry returns the host:port of a plain-HTTP OCI registry without auth.
func Registry(t testing.TB) string { return lookup(t, "BYOP_TEST_REGISTRY", "an OCI registry") }

// BaseImage returns a small base image (busybox) already in the test
// registry, for test Dockerfiles' FROM lines: nothing is pulled from Docker Hub.
func BaseImage(t testing.TB) string {
	return lookup(t, "BYOP_TEST_BASE_IMAGE", "a base image in the test registry")
}

// Docker makes sure a Docker Engine (and docker compose) is available.
func Docker(t testing.TB) { lookup(t, "BYOP_TEST_DOCKER", "a Docker Engine") }

// SSHD returns the path of an OpenSSH server binary (Debian's
// openssh-server: /usr/sbin/sshd) that tests start on loopback.
func SSHD(t testing.TB) string { return lookup(t, "BYOP_TEST_SSHD", "an OpenSSH server (sshd)") }
