// Package auth secures Sluice's gRPC surfaces: TLS configurations from
// files, throwaway certificates for `sluice dev --tls`, authentication of
// callers (bearer tokens, JWTs, client certificates) and authorization of
// each method by role.
package auth

import (
	"context"
	"fmt"
)

// Role is what a principal may do.
type Role string

// The roles. An admin changes jobs and can do whatever a viewer can; a
// viewer reads; a worker only runs tasks (WorkerService).
const (
	RoleAdmin  Role = "admin"
	RoleViewer Role = "viewer"
	RoleWorker Role = "worker"
)

// ParseRole checks that s names a role.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAdmin, RoleViewer, RoleWorker:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q: use admin, viewer or worker", s)
}

// Principal is an authenticated caller.
type Principal struct {
	// Name is who: a token file's name, a JWT's sub, a certificate's
	// CommonName. A worker's name is its worker id.
	Name string
	Role Role
	// Method is how the caller proved it: "token", "jwt" or "certificate".
	Method string
}

type principalKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal of an authenticated call; ok is false
// when the server authenticates nobody.
func FromContext(ctx context.Context) (p Principal, ok bool) {
	p, ok = ctx.Value(principalKey{}).(Principal)
	return p, ok
}
