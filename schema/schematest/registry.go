// Package schematest serves a minimal Confluent Schema Registry for tests:
// the REST calls the serializers and deserializers make (register a schema
// under a subject, get a schema by id), on loopback.
package schematest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry is a schema registry served by the test.
type Registry struct {
	*httptest.Server
	// Lookups counts GET /schemas/ids/{id} requests.
	Lookups atomic.Int64
	// Unavailable makes that many lookups answer 503 (-1: all of them).
	Unavailable atomic.Int64

	mu      sync.Mutex
	schemas []schemaInfo // id-1
	ids     map[string]int
	auth    string
}

type schemaInfo struct {
	Schema     string `json:"schema"`
	SchemaType string `json:"schemaType,omitempty"`
	References []any  `json:"references,omitempty"`
}

// New starts a registry; Close stops it. auth, if set, is the
// Authorization header every request must carry.
func New(auth string) *Registry {
	r := &Registry{ids: map[string]int{}, auth: auth}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	if r.auth != "" && req.Header.Get("Authorization") != r.auth {
		writeErr(w, http.StatusUnauthorized, 40101, "unauthorized")
		return
	}
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	switch {
	case req.Method == http.MethodPost && len(parts) == 3 && parts[0] == "subjects" && parts[2] == "versions":
		var in schemaInfo
		if err := json.NewDecoder(req.Body).Decode(&in); err != nil {
			writeErr(w, http.StatusUnprocessableEntity, 42201, err.Error())
			return
		}
		json.NewEncoder(w).Encode(map[string]int{"id": r.Register(in.Schema, in.SchemaType)})
	case req.Method == http.MethodPost && len(parts) == 2 && parts[0] == "subjects":
		// Look a schema up under a subject: its id if it is registered.
		var in schemaInfo
		if err := json.NewDecoder(req.Body).Decode(&in); err != nil {
			writeErr(w, http.StatusUnprocessableEntity, 42201, err.Error())
			return
		}
		r.mu.Lock()
		id, ok := r.ids[typeKey(in.SchemaType)+"\x00"+in.Schema]
		r.mu.Unlock()
		if !ok {
			writeErr(w, http.StatusNotFound, 40403, "Schema not found")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"id": id, "subject": parts[1], "version": 1, "schema": in.Schema})
	case req.Method == http.MethodGet && len(parts) == 3 && parts[0] == "schemas" && parts[1] == "ids":
		r.Lookups.Add(1)
		if n := r.Unavailable.Load(); n < 0 || n > 0 && r.Unavailable.CompareAndSwap(n, n-1) {
			writeErr(w, http.StatusServiceUnavailable, 50301, "unavailable")
			return
		}
		id, _ := strconv.Atoi(parts[2])
		r.mu.Lock()
		ok := id >= 1 && id <= len(r.schemas)
		var s schemaInfo
		if ok {
			s = r.schemas[id-1]
		}
		r.mu.Unlock()
		if !ok {
			writeErr(w, http.StatusNotFound, 40403, "Schema "+parts[2]+" not found")
			return
		}
		json.NewEncoder(w).Encode(s)
	default:
		writeErr(w, http.StatusNotFound, 404, "no such endpoint "+req.Method+" "+req.URL.String())
	}
}

// Register stores a schema (type "" is AVRO) and returns its id; the same
// schema gets the same id.
func (r *Registry) Register(schema, schemaType string) int {
	schemaType = typeKey(schemaType)
	r.mu.Lock()
	defer r.mu.Unlock()
	key := schemaType + "\x00" + schema
	if id, ok := r.ids[key]; ok {
		return id
	}
	r.schemas = append(r.schemas, schemaInfo{Schema: schema, SchemaType: schemaType})
	r.ids[key] = len(r.schemas)
	return len(r.schemas)
}

func writeErr(w http.ResponseWriter, status, code int, msg string) {
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error_code": code, "message": msg})
}

// typeKey is a schema type as stored: AVRO is the default, "".
func typeKey(t string) string {
	if t == "AVRO" {
		return ""
	}
	return t
}
