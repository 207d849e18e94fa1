package webui

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/sluice-stream/sluice/auth"
)

// authorize checks the request's caller for the JobService method the
// request stands for, with gRPC's authenticator and role table: the UI
// grants nothing the API would not. It returns the context to call the
// JobService with, or writes 401/403 and returns false.
func (s *server) authorize(w http.ResponseWriter, r *http.Request, method string) (context.Context, bool) {
	ctx := r.Context()
	if r.Method != http.MethodGet && r.Method != http.MethodHead && crossOrigin(r) {
		// A page elsewhere may post a form here with the user's network
		// position; only this origin's own page changes jobs.
		writeError(w, http.StatusForbidden, "cross-origin request refused: the Origin header "+r.Header.Get("Origin")+" is not this server")
		return nil, false
	}
	if s.cfg.Auth == nil {
		return ctx, true
	}
	// The authenticator reads gRPC metadata and the TLS peer; give it the
	// request's Authorization header and client certificate the same way.
	actx := ctx
	if h := r.Header.Get("Authorization"); h != "" {
		actx = metadata.NewIncomingContext(actx, metadata.Pairs("authorization", h))
	}
	if r.TLS != nil {
		actx = peer.NewContext(actx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: *r.TLS}})
	}
	p, err := s.cfg.Auth.Authenticate(actx)
	if err == nil {
		err = auth.Authorize(p, method)
	}
	switch {
	case err == nil:
		return auth.NewContext(ctx, p), true
	case errors.Is(err, auth.ErrUnauthenticated):
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
		writeError(w, http.StatusUnauthorized, err.Error())
	case errors.Is(err, auth.ErrPermissionDenied):
		writeError(w, http.StatusForbidden, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
	s.log.Debug("refused a web UI request", "path", r.URL.Path, "error", err)
	return nil, false
}

// crossOrigin reports whether a browser sent the request from a page of
// another origin.
func crossOrigin(r *http.Request) bool {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return true
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return false // not a browser (curl) or a same-origin GET
	}
	u, err := url.Parse(o)
	return err != nil || u.Host != r.Host
}
