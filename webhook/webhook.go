// Package webhook receives GitHub's webhook deliveries: it checks their
// size and signature, parses them, and turns the ones byop acts on into
// tasks on the queue. It answers within milliseconds; the work happens in
// the worker.
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/google/go-github/v62/github"
	"github.com/hibiken/asynq"

	"github.com/byop-dev/byop/config"
)

// MaxBody is the largest delivery byop reads. GitHub caps payloads at 25 MB.
const MaxBody = 25 << 20

// enqueuer puts a task on the queue; *asynq.Client is one.
type enqueuer interface {
	EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

var _ enqueuer = (*asynq.Client)(nil)

// Options tune a Handler.
type Options struct {
	// Allow reports whether byop builds the repository "owner/repo".
	Allow func(fullName string) bool
	// BuildTimeout bounds one deploy task.
	BuildTimeout time.Duration
	// AllowDrafts builds previews of draft pull requests too.
	AllowDrafts bool
	// BotLogin is byop's own login; its comments are never commands.
	BotLogin string
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	Log *slog.Logger
}

// Handler is the webhook receiver, mounted at POST /webhooks/github.
type Handler struct {
	secret []byte
	queue  enqueuer
	opts   Options
}

// New returns a receiver that checks deliveries against secret. It refuses
// an empty secret: byop never accepts unsigned webhooks.
func New(secret config.Secret, queue enqueuer, opts Options) (*Handler, error) {
	if secret.IsZero() {
		return nil, errors.New("webhook secret is empty")
	}
	if opts.Allow == nil {
		opts.Allow = func(string) bool { return false }
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.BuildTimeout == 0 {
		opts.BuildTimeout = 20 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Handler{secret: []byte(secret.Reveal()), queue: queue, opts: opts}, nil
}

func (h *Handler) now() time.Time { return h.opts.Now() }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		answer(w, http.StatusMethodNotAllowed, "webhooks are POSTed")
		return
	}
	event, delivery := github.WebHookType(r), github.DeliveryID(r)
	log := h.opts.Log.With("event", event, "delivery", delivery)
	if event == "" || delivery == "" {
		answer(w, http.StatusBadRequest, "missing X-GitHub-Event or X-GitHub-Delivery header")
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			log.Warn("delivery too large", "limit", MaxBody)
			answer(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("delivery larger than %d bytes", MaxBody))
			return
		}
		answer(w, http.StatusBadRequest, "could not read the body")
		return
	}
	sig := r.Header.Get(github.SHA256SignatureHeader)
	if sig == "" {
		log.Warn("delivery without X-Hub-Signature-256")
		answer(w, http.StatusUnauthorized, "missing X-Hub-Signature-256")
		return
	}
	if err := github.ValidateSignature(sig, body, h.secret); err != nil {
		log.Warn("delivery with a bad signature")
		answer(w, http.StatusUnauthorized, "bad signature")
		return
	}
	payload, err := payloadOf(r.Header.Get("Content-Type"), body)
	if err != nil {
		answer(w, http.StatusBadRequest, err.Error())
		return
	}
	if !slices.Contains(github.MessageTypes(), event) {
		log.Debug("ignoring an event byop does not know")
		answer(w, http.StatusAccepted, "ignored: event "+event+" is not used by byop")
		return
	}
	parsed, err := github.ParseWebHook(event, payload)
	if err != nil {
		log.Warn("delivery does not parse", "err", err)
		answer(w, http.StatusBadRequest, "cannot parse "+event+" payload: "+err.Error())
		return
	}

	d := route(event, parsed, h.now().UnixNano(), h.opts)
	if d.build == nil {
		log.Debug("ignoring delivery", "why", d.why, "repo", d.repo)
		answer(w, d.code(), d.why)
		return
	}
	log = log.With("repo", d.repo, "task", d.typ)
	task, err := d.build(delivery)
	if err != nil {
		log.Warn("delivery has no task", "err", err)
		answer(w, http.StatusBadRequest, err.Error())
		return
	}
	info, err := h.queue.EnqueueContext(r.Context(), task)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict) || errors.Is(err, asynq.ErrDuplicateTask):
		log.Info("redelivery of a queued delivery: not queued again")
		answer(w, http.StatusAccepted, "already queued")
	case err != nil:
		log.Error("queue refused the task", "err", err)
		answer(w, http.StatusServiceUnavailable, "queue unavailable, redeliver later")
	default:
		log.Info("queued", "queue", info.Queue)
		answer(w, http.StatusAccepted, "queued "+info.Type)
	}
}

// readBody reads at most MaxBody bytes, into a buffer sized from the
// request's Content-Length when it gives one.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	if n := r.ContentLength; n > 0 && n <= MaxBody {
		buf.Grow(int(n) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, MaxBody))
	return buf.Bytes(), err
}

// payloadOf is the JSON of a delivery whose signature was checked: the body
// itself, or its "payload" form field (GitHub's two content types).
func payloadOf(contentType string, body []byte) ([]byte, error) {
	ctype, _, _ := mime.ParseMediaType(contentType)
	switch ctype {
	case "application/json":
		return body, nil
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, fmt.Errorf("reading the form body: %w", err)
		}
		return []byte(form.Get("payload")), nil
	}
	return nil, fmt.Errorf("webhook has unsupported Content-Type %q: configure application/json", contentType)
}

func answer(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}
