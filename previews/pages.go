package previews

import (
	"embed"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
)

//go:embed templates/*.html
var templates embed.FS

// Pages are byop's own pages: the previews it runs and each build with its
// log and the statuses it reported. They work without GitHub: with no token
// configured, this is where byop's reports are read.
type Pages struct {
	store *Store
	log   *slog.Logger
	tmpl  *template.Template
}

// NewPages returns the pages over store.
func NewPages(store *Store, log *slog.Logger) *Pages {
	funcs := template.FuncMap{"short": func(s string) string {
		if len(s) > 7 {
			return s[:7]
		}
		return s
	}}
	return &Pages{store: store, log: log, tmpl: template.Must(template.New("").Funcs(funcs).ParseFS(templates, "templates/*.html"))}
}

// Register mounts the pages on mux.
func (p *Pages) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", p.index)
	mux.HandleFunc("GET /builds/{id}", p.build)
	mux.HandleFunc("GET /builds/{id}/log", p.rawLog)
}

func (p *Pages) index(w http.ResponseWriter, r *http.Request) {
	pvs, err := p.store.Previews(r.Context())
	if err != nil {
		p.fail(w, err)
		return
	}
	builds, err := p.store.Builds(r.Context(), Key{}, 50)
	if err != nil {
		p.fail(w, err)
		return
	}
	p.render(w, "index.html", map[string]any{"Previews": pvs, "Builds": builds})
}

func (p *Pages) build(w http.ResponseWriter, r *http.Request) {
	b, ok := p.lookup(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	lines, err := p.store.Log(ctx, b.ID, 0)
	if err != nil {
		p.fail(w, err)
		return
	}
	reports, err := p.store.Reports(ctx, b.Key.Owner, b.Key.Repo, b.SHA)
	if err != nil {
		p.fail(w, err)
		return
	}
	pv, _, err := p.store.Preview(ctx, b.Key)
	if err != nil {
		p.fail(w, err)
		return
	}
	p.render(w, "build.html", map[string]any{"Build": b, "Log": lines, "Reports": reports, "Preview": pv, "Done": b.State.Done()})
}

func (p *Pages) rawLog(w http.ResponseWriter, r *http.Request) {
	b, ok := p.lookup(w, r)
	if !ok {
		return
	}
	lines, err := p.store.Log(r.Context(), b.ID, 0)
	if err != nil {
		p.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, l := range lines {
		w.Write([]byte(l.Line + "\n"))
	}
}

func (p *Pages) lookup(w http.ResponseWriter, r *http.Request) (Build, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		http.Error(w, "no such build", http.StatusNotFound)
		return Build{}, false
	}
	b, err := p.store.Build(r.Context(), id)
	if errors.Is(err, ErrNotFound) {
		http.Error(w, "no such build", http.StatusNotFound)
		return Build{}, false
	}
	if err != nil {
		p.fail(w, err)
		return Build{}, false
	}
	return b, true
}

func (p *Pages) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := p.tmpl.ExecuteTemplate(w, name, data); err != nil {
		p.log.Warn("rendering page", "page", name, "err", err)
	}
}

func (p *Pages) fail(w http.ResponseWriter, err error) {
	p.log.Error("page failed", "err", err)
	http.Error(w, "byop could not read its store", http.StatusInternalServerError)
}
