package previews

import (
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
)

// Router is byop's preview router: it serves each preview host by reverse
// proxy to where that preview runs. Switching a host to a new upstream is one
// map write; requests in flight finish on the old one.
type Router struct {
	log *slog.Logger

	mu     sync.RWMutex
	routes map[string]*route
}

type route struct {
	upstream *url.URL
	proxy    *httputil.ReverseProxy
}

// NewRouter returns a router with no routes.
func NewRouter(log *slog.Logger) *Router {
	return &Router{log: log, routes: make(map[string]*route)}
}

// Set routes host to upstream, replacing any earlier upstream.
func (r *Router) Set(host string, upstream *url.URL) {
	host = normalHost(host)
	rt := &route{upstream: upstream}
	rt.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.SetXForwarded()
			pr.Out.Host = pr.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			r.log.Warn("preview upstream failed", "host", host, "upstream", upstream.String(), "err", err)
			page(w, http.StatusBadGateway, "This preview is not answering", "The preview for "+host+" is not answering right now. It may be restarting; try again in a moment.")
		},
	}
	r.mu.Lock()
	r.routes[host] = rt
	r.mu.Unlock()
}

// Remove stops routing host.
func (r *Router) Remove(host string) {
	r.mu.Lock()
	delete(r.routes, normalHost(host))
	r.mu.Unlock()
}

// Upstream returns where host is routed.
func (r *Router) Upstream(host string) (*url.URL, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rt, ok := r.routes[normalHost(host)]
	if !ok {
		return nil, false
	}
	return rt.upstream, true
}

func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.RLock()
	rt, ok := r.routes[normalHost(req.Host)]
	r.mu.RUnlock()
	if !ok {
		page(w, http.StatusNotFound, "No preview here", "byop has no preview at "+req.Host+". It may not be built yet, or its pull request was closed.")
		return
	}
	rt.proxy.ServeHTTP(w, req)
}

func normalHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:4em auto"><h1>{{.Title}}</h1><p>{{.Text}}</p><p><small>byop</small></p></body></html>
`))

func page(w http.ResponseWriter, code int, title, text string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = pageTmpl.Execute(w, struct{ Title, Text string }{title, text})
}
