package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestAuthenticateHeader(t *testing.T) {
	tokens, err := ParseTokens(strings.NewReader("viewer bob aaaaaaaaaaaaaaaaaaaa\n"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	v, err := ParseJWTKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	good, _ := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"sub": "carol", "role": "admin", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(key)
	a := NewAuthenticator(tokens, v, false)
	tests := []struct {
		header  string // "" sends none
		want    Principal
		wantErr string
	}{
		{"Bearer aaaaaaaaaaaaaaaaaaaa", Principal{Name: "bob", Role: RoleViewer, Method: "token"}, ""},
		{"bearer   aaaaaaaaaaaaaaaaaaaa ", Principal{Name: "bob", Role: RoleViewer, Method: "token"}, ""},
		{"Bearer " + good, Principal{Name: "carol", Role: RoleAdmin, Method: "jwt"}, ""},
		{"Bearer " + good + "x", Principal{}, "signature is invalid"},
		{"Bearer nope", Principal{}, "the bearer token is not valid"},
		{"Basic YWxpY2U6cHc=", Principal{}, `must be "Bearer <token>"`},
		{"Bearer ", Principal{}, `must be "Bearer <token>"`},
		{"", Principal{}, "no credentials"},
	}
	for _, tc := range tests {
		ctx := context.Background()
		if tc.header != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", tc.header))
		}
		p, err := a.Authenticate(ctx)
		if tc.wantErr == "" {
			if err != nil || p != tc.want {
				t.Errorf("Authenticate(%q) = %+v, %v; want %+v", tc.header, p, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("Authenticate(%q) = %+v, %v; want an error containing %q", tc.header, p, err, tc.wantErr)
		}
	}
}

func TestNewNothingConfigured(t *testing.T) {
	a, err := New(Config{})
	if a != nil || err != nil {
		t.Fatalf("New(Config{}) = %v, %v; want nil, nil", a, err)
	}
	if _, err := New(Config{TokenFile: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("a missing token file: no error")
	}
}

// testServer serves JobService (unimplemented: a call that passes the
// interceptors gets codes.Unimplemented) and health over TLS from certs.
func testServer(t *testing.T, certs DevCerts, a *Authenticator) string {
	t.Helper()
	cfg, err := ServerTLS(certs.ServerCert(), certs.ServerKey(), certs.CA())
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(append(a.ServerOptions(), grpc.Creds(credentials.NewTLS(cfg)))...)
	sluicev1.RegisterJobServiceServer(gs, sluicev1.UnimplementedJobServiceServer{})
	sluicev1.RegisterWorkerServiceServer(gs, sluicev1.UnimplementedWorkerServiceServer{})
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

func TestInterceptorsOverMutualTLS(t *testing.T) {
	certs, err := EnsureDevCerts(t.TempDir(), []DevClient{{"admin", RoleAdmin}, {"viewer", RoleViewer}, {"w1", RoleWorker}})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := ParseTokens(strings.NewReader("viewer bob aaaaaaaaaaaaaaaaaaaa\n"))
	if err != nil {
		t.Fatal(err)
	}
	addr := testServer(t, certs, NewAuthenticator(tokens, nil, true))
	dial := func(name string, opts ...grpc.DialOption) *grpc.ClientConn {
		cert, key := "", ""
		if name != "" {
			cert, key = certs.ClientCert(name), certs.ClientKey(name)
		}
		cfg, err := ClientTLS(certs.CA(), cert, key)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	submit := func(conn *grpc.ClientConn) codes.Code {
		_, err := sluicev1.NewJobServiceClient(conn).SubmitJob(ctx, &sluicev1.SubmitJobRequest{})
		return status.Code(err)
	}
	list := func(conn *grpc.ClientConn) codes.Code {
		_, err := sluicev1.NewJobServiceClient(conn).ListJobs(ctx, &sluicev1.ListJobsRequest{})
		return status.Code(err)
	}
	connect := func(conn *grpc.ClientConn) codes.Code {
		s, err := sluicev1.NewWorkerServiceClient(conn).Connect(ctx)
		if err == nil {
			_, err = s.Recv()
		}
		return status.Code(err)
	}
	tests := []struct {
		name string
		conn *grpc.ClientConn
		call func(*grpc.ClientConn) codes.Code
		want codes.Code
	}{
		{"admin submits", dial("admin"), submit, codes.Unimplemented},
		{"viewer submits", dial("viewer"), submit, codes.PermissionDenied},
		{"viewer lists", dial("viewer"), list, codes.Unimplemented},
		{"worker lists", dial("w1"), list, codes.PermissionDenied},
		{"worker connects", dial("w1"), connect, codes.Unimplemented},
		{"admin connects", dial("admin"), connect, codes.PermissionDenied},
		{"a token wins over a worker's cert", dial("w1", grpc.WithPerRPCCredentials(Bearer{Token: "aaaaaaaaaaaaaaaaaaaa"})), list, codes.Unimplemented},
		{"a bad token is not saved by a cert", dial("admin", grpc.WithPerRPCCredentials(Bearer{Token: "bbbbbbbbbbbbbbbbbbbb"})), list, codes.Unauthenticated},
		{"no client certificate", dial(""), list, codes.Unavailable},
	}
	for _, tc := range tests {
		if got := tc.call(tc.conn); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	// Health stays open (to anyone with a certificate, under mTLS).
	if _, err := healthpb.NewHealthClient(dial("viewer")).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health: %v", err)
	}
}

func TestInterceptorsWithoutCertificates(t *testing.T) {
	tokens, err := ParseTokens(strings.NewReader("admin alice aaaaaaaaaaaaaaaaaaaa\n"))
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(NewAuthenticator(tokens, nil, false).ServerOptions()...)
	sluicev1.RegisterJobServiceServer(gs, sluicev1.UnimplementedJobServiceServer{})
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		token string
		want  codes.Code
	}{{"", codes.Unauthenticated}, {"aaaaaaaaaaaaaaaaaaaa", codes.Unimplemented}, {"aaaaaaaaaaaaaaaaaaab", codes.Unauthenticated}} {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if tc.token != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(BearerFor(tc.token, lis.Addr().String())))
		}
		conn, err := grpc.NewClient(lis.Addr().String(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		_, err = sluicev1.NewJobServiceClient(conn).GetJob(ctx, &sluicev1.GetJobRequest{Name: "x"})
		if status.Code(err) != tc.want {
			t.Errorf("token %q: %v, want %v", tc.token, err, tc.want)
		}
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Errorf("health with token %q: %v", tc.token, err)
		}
		conn.Close()
	}
}

func TestEnsureDevCertsKeepsFiles(t *testing.T) {
	dir := t.TempDir()
	clients := []DevClient{{"admin", RoleAdmin}, {"w1", RoleWorker}}
	certs, err := EnsureDevCerts(dir, clients)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := os.ReadFile(certs.CA())
	w1, _ := os.ReadFile(certs.ClientCert("w1"))
	// A missing client is added, signed by the same CA; the others stay.
	if err := os.Remove(certs.ClientCert("admin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(certs.ClientKey("admin")); err != nil {
		t.Fatal(err)
	}
	certs, err = EnsureDevCerts(dir, append(clients, DevClient{"w2", RoleWorker}))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(certs.CA()); string(b) != string(ca) {
		t.Error("the CA was replaced")
	}
	if b, _ := os.ReadFile(certs.ClientCert("w1")); string(b) != string(w1) {
		t.Error("w1's certificate was replaced")
	}
	for _, name := range []string{"admin", "w2"} {
		if _, err := ClientTLS(certs.CA(), certs.ClientCert(name), certs.ClientKey(name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		b, _ := os.ReadFile(certs.ClientCert(name))
		block, _ := pem.Decode(b)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s is not signed by the first CA: %v", name, err)
		}
	}
	if info, err := os.Stat(certs.ClientKey("w2")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("w2's key: %v, mode %v; want 0600", err, info.Mode())
	}
	// A certificate without its key is the user's: an error, not a new pair.
	if err := os.Remove(certs.ServerKey()); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureDevCerts(dir, clients); err == nil || !strings.Contains(err.Error(), "server-key.pem") {
		t.Errorf("a missing server key: %v, want an error naming it", err)
	}
	if _, err := EnsureDevCerts(t.TempDir(), []DevClient{{"../x", RoleAdmin}}); err == nil {
		t.Error("a client name with a path: no error")
	}
}
