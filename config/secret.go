package config

import "log/slog"

// Secret holds a credential. It never prints itself: fmt, slog and JSON all
// see "[redacted]". Call Reveal only where the value is handed to the party
// it is meant for (an Authorization header, an HMAC key).
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// IsZero reports whether no secret is set.
func (s Secret) IsZero() bool { return s == "" }

// String redacts the value for fmt's %s and %v.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString redacts the value for fmt's %#v.
func (s Secret) GoString() string { return s.String() }

// LogValue redacts the value for slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText redacts the value for encoders (JSON, YAML) that honour it.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
