package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TestCertificatePrincipal: a client certificate must name the principal
// (CommonName) and one known role (OrganizationalUnit).
func TestCertificatePrincipal(t *testing.T) {
	certs, err := EnsureDevCerts(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, caKey, err := loadCA(certs.CA(), certs.caKey())
	if err != nil {
		t.Fatal(err)
	}
	addr := testServer(t, certs, NewAuthenticator(nil, nil, true))
	tests := []struct {
		name    string
		subject pkix.Name
		want    codes.Code
		msg     string
	}{
		{"viewer", pkix.Name{CommonName: "eve", OrganizationalUnit: []string{"viewer"}}, codes.Unimplemented, ""},
		{"no role", pkix.Name{CommonName: "eve"}, codes.Unauthenticated, "the client certificate of eve has 0 OrganizationalUnits"},
		{"two roles", pkix.Name{CommonName: "eve", OrganizationalUnit: []string{"viewer", "admin"}}, codes.Unauthenticated, "has 2 OrganizationalUnits"},
		{"unknown role", pkix.Name{CommonName: "eve", OrganizationalUnit: []string{"root"}}, codes.Unauthenticated, `unknown role "root"`},
		{"no name", pkix.Name{OrganizationalUnit: []string{"admin"}}, codes.Unauthenticated, "no Subject CommonName"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			certFile, keyFile := filepath.Join(t.TempDir(), "c.pem"), filepath.Join(t.TempDir(), "k.pem")
			tmpl := &x509.Certificate{Subject: tc.subject, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
			if err := ensureLeaf(certFile, keyFile, tmpl, ca, caKey); err != nil {
				t.Fatal(err)
			}
			cfg, err := ClientTLS(certs.CA(), certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_, err = sluicev1.NewJobServiceClient(conn).ListJobs(ctx, &sluicev1.ListJobsRequest{})
			if status.Code(err) != tc.want || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Errorf("case %d: %v, want %v containing %q", i, err, tc.want, tc.msg)
			}
		})
	}
}

// TestTLSMinimumVersion: the server refuses TLS below 1.2.
func TestTLSMinimumVersion(t *testing.T) {
	certs, err := EnsureDevCerts(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ServerTLS(certs.ServerCert(), certs.ServerKey(), "")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ClientTLS(certs.CA(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	if srv.MinVersion != tls.VersionTLS12 || cli.MinVersion != tls.VersionTLS12 {
		t.Fatalf("MinVersion server %x client %x, want TLS 1.2", srv.MinVersion, cli.MinVersion)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	old := cli.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if c, err := tls.Dial("tcp", lis.Addr().String(), old); err == nil {
		c.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	c, err := tls.Dial("tcp", lis.Addr().String(), cli)
	if err != nil {
		t.Fatalf("a TLS 1.2+ handshake: %v", err)
	}
	c.Close()
}
