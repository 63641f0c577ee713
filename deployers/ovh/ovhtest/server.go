// Package ovhtest is a stand-in for the parts of the OVHcloud API byop
// uses: it checks go-ovh's request signature on every call, serves
// /auth/time, walks Public Cloud instances from BUILD to ACTIVE, deletes
// them, and keeps DNS zone records. It records every request.
package ovhtest

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Instance is a Public Cloud instance as the API returns it.
type Instance struct {
	ID          string      `json:"id"`
	Name        string      `json:"name"`
	Status      string      `json:"status"`
	Region      string      `json:"region"`
	FlavorID    string      `json:"flavorId"`
	ImageID     string      `json:"imageId"`
	SSHKeyID    string      `json:"sshKeyId,omitempty"`
	Created     string      `json:"created"`
	IPAddresses []IPAddress `json:"ipAddresses"`

	// UserData is what the creation request carried (not in API answers).
	UserData string `json:"-"`
	polls    int
}

// IPAddress is one address of an instance.
type IPAddress struct {
	IP      string `json:"ip"`
	Type    string `json:"type"`
	Version int    `json:"version"`
}

// Record is a DNS zone record.
type Record struct {
	ID        int64  `json:"id"`
	Zone      string `json:"zone"`
	FieldType string `json:"fieldType"`
	SubDomain string `json:"subDomain"`
	Target    string `json:"target"`
	TTL       int    `json:"ttl"`
}

// Call is one request the server received.
type Call struct {
	Method, Path string
	Body         string
	// Rejected says the signature (or the keys) did not check out.
	Rejected bool
}

// Server is the fake API. Point go-ovh at Endpoint.
type Server struct {
	// Endpoint is the API root, e.g. http://127.0.0.1:1234/1.0.
	Endpoint string
	// Keys the server accepts.
	AppKey, AppSecret, ConsumerKey string
	// InstanceIP is the public address given to every instance (default
	// 127.0.0.1: tests reach a local sshd there).
	InstanceIP string
	// BuildPolls is how many GETs of a new instance answer BUILD before it
	// is ACTIVE (default 2).
	BuildPolls int
	// Skew is how far the server's clock is ahead of the machine's.
	Skew time.Duration

	mu        sync.Mutex
	srv       *httptest.Server
	next      int
	instances map[string]*Instance // by service name + "/" + ID
	order     []string
	records   map[int64]*Record
	refreshes map[string]int
	calls     []Call
}

// New starts a server that accepts the given keys; it stops with the test.
func New(t testing.TB, appKey, appSecret, consumerKey string) *Server {
	s := &Server{
		AppKey: appKey, AppSecret: appSecret, ConsumerKey: consumerKey,
		InstanceIP: "127.0.0.1",
		BuildPolls: 2,
		instances:  map[string]*Instance{},
		records:    map[int64]*Record{},
		refreshes:  map[string]int{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /1.0/auth/time", s.authTime)
	mux.HandleFunc("GET /1.0/cloud/project/{sn}/instance", s.signed(s.listInstances))
	mux.HandleFunc("POST /1.0/cloud/project/{sn}/instance", s.signed(s.createInstance))
	mux.HandleFunc("GET /1.0/cloud/project/{sn}/instance/{id}", s.signed(s.getInstance))
	mux.HandleFunc("DELETE /1.0/cloud/project/{sn}/instance/{id}", s.signed(s.deleteInstance))
	mux.HandleFunc("GET /1.0/domain/zone/{zone}/record", s.signed(s.listRecords))
	mux.HandleFunc("POST /1.0/domain/zone/{zone}/record", s.signed(s.createRecord))
	mux.HandleFunc("GET /1.0/domain/zone/{zone}/record/{id}", s.signed(s.getRecord))
	mux.HandleFunc("DELETE /1.0/domain/zone/{zone}/record/{id}", s.signed(s.deleteRecord))
	mux.HandleFunc("POST /1.0/domain/zone/{zone}/refresh", s.signed(s.refresh))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.record(r, "", false)
		apiError(w, http.StatusNotFound, "Got an invalid (or empty) URL")
	})
	s.srv = httptest.NewServer(mux)
	s.Endpoint = s.srv.URL + "/1.0"
	t.Cleanup(s.srv.Close)
	return s
}

// Signature is go-ovh's request signature: "$1$" and the hex SHA-1 of the
// application secret, consumer key, method, full URL, body and timestamp
// joined by "+".
func Signature(appSecret, consumerKey, method, fullURL, body, timestamp string) string {
	h := sha1.Sum([]byte(appSecret + "+" + consumerKey + "+" + method + "+" + fullURL + "+" + body + "+" + timestamp))
	return "$1$" + hex.EncodeToString(h[:])
}

func (s *Server) now() time.Time { return time.Now().Add(s.Skew) }

func (s *Server) authTime(w http.ResponseWriter, r *http.Request) {
	s.record(r, "", false)
	writeJSON(w, s.now().Unix())
}

// signed checks a request's keys, timestamp and signature before h runs.
func (s *Server) signed(h func(w http.ResponseWriter, r *http.Request, body []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			apiError(w, http.StatusBadRequest, "unreadable body")
			return
		}
		if msg := s.check(r, body); msg != "" {
			s.record(r, string(body), true)
			apiError(w, http.StatusForbidden, msg)
			return
		}
		s.record(r, string(body), false)
		s.mu.Lock()
		defer s.mu.Unlock()
		h(w, r, body)
	}
}

func (s *Server) check(r *http.Request, body []byte) string {
	if r.Header.Get("X-Ovh-Application") != s.AppKey {
		return "Invalid application key"
	}
	if r.Header.Get("X-Ovh-Consumer") != s.ConsumerKey {
		return "Invalid credential"
	}
	ts := r.Header.Get("X-Ovh-Timestamp")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "Missing or invalid timestamp"
	}
	if d := s.now().Sub(time.Unix(sec, 0)); d > 30*time.Second || d < -30*time.Second {
		return "Query out of time"
	}
	fullURL := "http://" + r.Host + r.URL.RequestURI()
	if r.Header.Get("X-Ovh-Signature") != Signature(s.AppSecret, s.ConsumerKey, r.Method, fullURL, string(body), ts) {
		return "Invalid signature"
	}
	return ""
}

func (s *Server) record(r *http.Request, body string, rejected bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, Call{Method: r.Method, Path: r.URL.RequestURI(), Body: body, Rejected: rejected})
}

// Calls returns the requests received so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Instances returns the instances that exist in a project, oldest first.
func (s *Server) Instances(serviceName string) []Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Instance
	for _, key := range s.order {
		if in, ok := s.instances[key]; ok && key[:len(serviceName)+1] == serviceName+"/" {
			out = append(out, *in)
		}
	}
	return out
}

// AddInstance adds an instance that someone else made (already ACTIVE).
func (s *Server) AddInstance(serviceName, name string) Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.newInstance(serviceName, name)
	in.Status, in.polls = "ACTIVE", s.BuildPolls
	in.IPAddresses = []IPAddress{{IP: s.InstanceIP, Type: "public", Version: 4}}
	return *in
}

func (s *Server) newInstance(serviceName, name string) *Instance {
	s.next++
	in := &Instance{
		ID:          fmt.Sprintf("0000%04d-1111-2222-3333-444455556666", s.next),
		Name:        name,
		Status:      "BUILD",
		Created:     s.now().UTC().Format(time.RFC3339),
		IPAddresses: []IPAddress{},
	}
	key := serviceName + "/" + in.ID
	s.instances[key] = in
	s.order = append(s.order, key)
	return in
}

func (s *Server) listInstances(w http.ResponseWriter, r *http.Request, _ []byte) {
	sn := r.PathValue("sn")
	out := []Instance{}
	for _, key := range s.order {
		if in, ok := s.instances[key]; ok && key[:len(sn)+1] == sn+"/" {
			out = append(out, *in)
		}
	}
	writeJSON(w, out)
}

func (s *Server) createInstance(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		Name           string `json:"name"`
		FlavorID       string `json:"flavorId"`
		ImageID        string `json:"imageId"`
		Region         string `json:"region"`
		SSHKeyID       string `json:"sshKeyId"`
		UserData       string `json:"userData"`
		MonthlyBilling bool   `json:"monthlyBilling"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		apiError(w, http.StatusBadRequest, "Invalid JSON")
		return
	}
	if req.Name == "" || req.FlavorID == "" || req.ImageID == "" || req.Region == "" {
		apiError(w, http.StatusBadRequest, "name, flavorId, imageId and region are required")
		return
	}
	in := s.newInstance(r.PathValue("sn"), req.Name)
	in.Region, in.FlavorID, in.ImageID, in.SSHKeyID, in.UserData = req.Region, req.FlavorID, req.ImageID, req.SSHKeyID, req.UserData
	writeJSON(w, in)
}

func (s *Server) getInstance(w http.ResponseWriter, r *http.Request, _ []byte) {
	in, ok := s.instances[r.PathValue("sn")+"/"+r.PathValue("id")]
	if !ok {
		apiError(w, http.StatusNotFound, "Instance not found")
		return
	}
	in.polls++
	if in.Status == "BUILD" && in.polls > s.BuildPolls {
		in.Status = "ACTIVE"
		in.IPAddresses = []IPAddress{{IP: s.InstanceIP, Type: "public", Version: 4}, {IP: "fe80::1", Type: "public", Version: 6}}
	}
	writeJSON(w, in)
}

func (s *Server) deleteInstance(w http.ResponseWriter, r *http.Request, _ []byte) {
	key := r.PathValue("sn") + "/" + r.PathValue("id")
	if _, ok := s.instances[key]; !ok {
		apiError(w, http.StatusNotFound, "Instance not found")
		return
	}
	delete(s.instances, key)
	writeJSON(w, nil)
}

func (s *Server) listRecords(w http.ResponseWriter, r *http.Request, _ []byte) {
	zone, q := r.PathValue("zone"), r.URL.Query()
	ids := []int64{}
	for id, rec := range s.records {
		if rec.Zone == zone && (q.Get("fieldType") == "" || q.Get("fieldType") == rec.FieldType) &&
			(!q.Has("subDomain") || q.Get("subDomain") == rec.SubDomain) {
			ids = append(ids, id)
		}
	}
	writeJSON(w, ids)
}

func (s *Server) createRecord(w http.ResponseWriter, r *http.Request, body []byte) {
	var rec Record
	if err := json.Unmarshal(body, &rec); err != nil || rec.FieldType == "" || rec.Target == "" {
		apiError(w, http.StatusBadRequest, "fieldType and target are required")
		return
	}
	s.next++
	rec.ID, rec.Zone = int64(s.next), r.PathValue("zone")
	s.records[rec.ID] = &rec
	writeJSON(w, rec)
}

func (s *Server) getRecord(w http.ResponseWriter, r *http.Request, _ []byte) {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	rec, ok := s.records[id]
	if !ok || rec.Zone != r.PathValue("zone") {
		apiError(w, http.StatusNotFound, "record not found")
		return
	}
	writeJSON(w, rec)
}

func (s *Server) deleteRecord(w http.ResponseWriter, r *http.Request, _ []byte) {
	id, _ := strconv.ParseInt(r.PathValue("id"), 10, 64)
	rec, ok := s.records[id]
	if !ok || rec.Zone != r.PathValue("zone") {
		apiError(w, http.StatusNotFound, "record not found")
		return
	}
	delete(s.records, id)
	writeJSON(w, nil)
}

func (s *Server) refresh(w http.ResponseWriter, r *http.Request, _ []byte) {
	s.refreshes[r.PathValue("zone")]++
	writeJSON(w, nil)
}

// Records returns a zone's records.
func (s *Server) Records(zone string) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	for _, rec := range s.records {
		if rec.Zone == zone {
			out = append(out, *rec)
		}
	}
	return out
}

// Refreshes returns how often a zone was refreshed.
func (s *Server) Refreshes(zone string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshes[zone]
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"message": msg})
}
