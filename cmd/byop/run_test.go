package main

import (
	"bytes"
	"context"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/byop-dev/byop/internal/testenv"
	"github.com/byop-dev/byop/previews"
)

func TestRunRefusesWhatCannotWork(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		environ []string
		want    string
	}{
		{"no command", nil, nil, "usage"},
		{"unknown command", []string{"deploy"}, nil, "usage"},
		{"empty webhook secret", []string{"serve"}, nil, "webhook_secret"},
		{"blank webhook secret from env", []string{"serve"}, []string{"BYOP_WEBHOOK_SECRET= "}, "webhook_secret"},
		{"missing config file", []string{"serve", "--config", "/nonexistent/byop.yaml"}, nil, "reading config"},
		{"bad setting", []string{"serve"}, []string{"BYOP_WEBHOOK_SECRET=x", "BYOP_LOG_LEVEL=loud"}, "log_level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(context.Background(), tt.args, tt.environ, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	store, err := previews.Open(context.Background(), filepath.Join(t.TempDir(), "byop.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	tests := []struct {
		name  string
		redis func(t testing.TB) string
		code  int
		want  string
	}{
		{"Redis and the store answer", testenv.Redis, 200, "ok"},
		{"Redis down", func(testing.TB) string { return closed }, 503, "redis"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: tt.redis(t), DialTimeout: time.Second})
			defer rdb.Close()
			rec := httptest.NewRecorder()
			healthz(store, rdb)(rec, httptest.NewRequest("GET", "/healthz", nil))
			if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("got %d %q, want %d with %q", rec.Code, rec.Body, tt.code, tt.want)
			}
		})
	}
}
