package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// ErrUnauthenticated is returned for a call without valid credentials.
var ErrUnauthenticated = errors.New("unauthenticated")

// Config says how callers authenticate. Each part is optional; with none,
// nobody is authenticated and every call is allowed.
type Config struct {
	// TokenFile holds bearer tokens (see Tokens).
	TokenFile string
	// JWTPublicKey is a PEM public key file that verifies JWTs.
	JWTPublicKey string
	// ClientCerts accepts verified TLS client certificates (mutual TLS):
	// the Subject CommonName is the principal, its OrganizationalUnit the
	// role.
	ClientCerts bool
}

// Authenticator finds who makes a call.
type Authenticator struct {
	tokens *Tokens
	jwt    *JWTVerifier
	certs  bool
}

// New loads what cfg names. It returns nil, nil when cfg configures no way
// to authenticate.
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{certs: cfg.ClientCerts}
	var err error
	if cfg.TokenFile != "" {
		if a.tokens, err = LoadTokens(cfg.TokenFile); err != nil {
			return nil, err
		}
	}
	if cfg.JWTPublicKey != "" {
		if a.jwt, err = LoadJWTKey(cfg.JWTPublicKey); err != nil {
			return nil, err
		}
	}
	if a.tokens == nil && a.jwt == nil && !a.certs {
		return nil, nil
	}
	return a, nil
}

// NewAuthenticator builds an Authenticator from loaded parts; either may be nil.
func NewAuthenticator(tokens *Tokens, jwt *JWTVerifier, clientCerts bool) *Authenticator {
	return &Authenticator{tokens: tokens, jwt: jwt, certs: clientCerts}
}

// Authenticate returns the principal of the call in ctx: a bearer token in
// the authorization metadata if there is one (a token from the token file,
// else a JWT), else a verified client certificate.
func (a *Authenticator) Authenticate(ctx context.Context) (Principal, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if vals := md.Get("authorization"); len(vals) > 0 {
		token, ok := bearer(vals[0])
		if !ok {
			return Principal{}, fmt.Errorf("%w: the authorization header must be \"Bearer <token>\"", ErrUnauthenticated)
		}
		return a.token(token)
	}
	if a.certs {
		if p, ok, err := certPrincipal(ctx); ok || err != nil {
			return p, err
		}
	}
	return Principal{}, fmt.Errorf("%w: no credentials: send \"authorization: Bearer <token>\"%s", ErrUnauthenticated, a.certHint())
}

func (a *Authenticator) certHint() string {
	if a.certs {
		return " or a client certificate"
	}
	return ""
}

func (a *Authenticator) token(token string) (Principal, error) {
	if a.tokens != nil {
		if p, ok := a.tokens.Lookup(token); ok {
			return p, nil
		}
	}
	if a.jwt != nil && strings.Count(token, ".") == 2 {
		p, err := a.jwt.Verify(token)
		if err != nil {
			return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
		}
		return p, nil
	}
	return Principal{}, fmt.Errorf("%w: the bearer token is not valid", ErrUnauthenticated)
}

func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// certPrincipal reads the verified client certificate of the call's TLS
// connection; ok is false when there is none.
func certPrincipal(ctx context.Context) (p Principal, ok bool, err error) {
	pr, found := peer.FromContext(ctx)
	if !found {
		return Principal{}, false, nil
	}
	info, isTLS := pr.AuthInfo.(credentials.TLSInfo)
	if !isTLS || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Principal{}, false, nil
	}
	leaf := info.State.VerifiedChains[0][0]
	name := leaf.Subject.CommonName
	if name == "" {
		return Principal{}, true, fmt.Errorf("%w: the client certificate has no Subject CommonName (the principal)", ErrUnauthenticated)
	}
	if len(leaf.Subject.OrganizationalUnit) != 1 {
		return Principal{}, true, fmt.Errorf("%w: the client certificate of %s has %d OrganizationalUnits; want one, the role",
			ErrUnauthenticated, name, len(leaf.Subject.OrganizationalUnit))
	}
	role, err := ParseRole(leaf.Subject.OrganizationalUnit[0])
	if err != nil {
		return Principal{}, true, fmt.Errorf("%w: the client certificate of %s: OrganizationalUnit: %w", ErrUnauthenticated, name, err)
	}
	return Principal{Name: name, Role: role, Method: "certificate"}, true, nil
}
