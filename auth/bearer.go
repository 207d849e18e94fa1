package auth

import (
	"context"
	"net"
	"strings"
)

// Bearer sends a token on every call as "authorization: Bearer <token>"
// (grpc.WithPerRPCCredentials).
type Bearer struct {
	Token string
	// AllowPlaintext sends the token without TLS; only for a loopback
	// address, where nobody can read it on the way.
	AllowPlaintext bool
}

// BearerFor returns the credentials of token for a connection to addr:
// plaintext is allowed only when addr is loopback.
func BearerFor(token, addr string) Bearer {
	return Bearer{Token: token, AllowPlaintext: IsLoopback(addr)}
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (b Bearer) RequireTransportSecurity() bool { return !b.AllowPlaintext }

// IsLoopback reports whether a host:port (or a bare host) is on this
// machine: localhost or a loopback IP.
func IsLoopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
