package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
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
