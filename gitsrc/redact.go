package gitsrc

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/byop-dev/byop/config"
)

// redactedError is an error whose text had a token removed. It unwraps only
// to sentinels, so that no caller can reach the original text.
type redactedError struct {
	msg       string
	sentinels []error
}

func (e *redactedError) Error() string   { return e.msg }
func (e *redactedError) Unwrap() []error { return e.sentinels }

// redact returns err unchanged unless its text holds the token (as sent, or
// base64-encoded as in an echoed Authorization header); then it returns a
// copy with the token removed that still matches the sentinels callers test
// for.
func redact(err error, token config.Secret) error {
	if err == nil || token.IsZero() {
		return err
	}
	forms := []string{
		token.Reveal(),
		base64.StdEncoding.EncodeToString([]byte(tokenUser + ":" + token.Reveal())),
	}
	msg := err.Error()
	leaked := false
	for _, f := range forms {
		if strings.Contains(msg, f) {
			leaked = true
			msg = strings.ReplaceAll(msg, f, "[redacted]")
		}
	}
	if !leaked {
		return err
	}
	var sentinels []error
	for _, s := range []error{
		ErrInvalidSpec, ErrCommitNotFound,
		context.Canceled, context.DeadlineExceeded,
		transport.ErrAuthenticationRequired, transport.ErrAuthorizationFailed, transport.ErrRepositoryNotFound,
	} {
		if errors.Is(err, s) {
			sentinels = append(sentinels, s)
		}
	}
	return &redactedError{msg: msg, sentinels: sentinels}
}
