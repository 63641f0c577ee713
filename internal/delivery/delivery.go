// Package delivery makes webhook deliveries as GitHub makes them — a JSON
// body POSTed with its event, a delivery ID and an HMAC-SHA256 signature of
// the body — for the tools that drive byop from outside (the demo, the
// bench).
package delivery

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
)

// Sign returns the X-Hub-Signature-256 of body under secret:
// "sha256=" and the hex HMAC-SHA256.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Webhook is one delivery.
type Webhook struct {
	Event     string // X-GitHub-Event, e.g. pull_request
	ID        string // X-GitHub-Delivery, unique per delivery
	Body      []byte // the JSON payload
	Signature string // X-Hub-Signature-256: Sign(secret, Body)
}

// NewRequest builds the POST of w to url.
func NewRequest(ctx context.Context, url string, w Webhook) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(w.Body))
	if err != nil {
		return nil, fmt.Errorf("delivering %s %s: %w", w.Event, w.ID, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", w.Event)
	req.Header.Set("X-GitHub-Delivery", w.ID)
	req.Header.Set("X-Hub-Signature-256", w.Signature)
	return req, nil
}

// Deliver POSTs w to byop's webhook receiver at url with c and fails unless
// byop queued it: 202 and an answer that starts with "queued".
func Deliver(ctx context.Context, c *http.Client, url string, w Webhook) error {
	req, err := NewRequest(ctx, url, w)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("delivering %s %s: %w", w.Event, w.ID, err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusAccepted || !bytes.HasPrefix(answer, []byte("queued")) {
		return fmt.Errorf("delivering %s %s: byop answered %s %q, want it queued", w.Event, w.ID, resp.Status, bytes.TrimSpace(answer))
	}
	return nil
}
