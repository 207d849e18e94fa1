package main

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluice-stream/sluice/auth"
	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/dev"
)

func parseEtcdFlags(t *testing.T, env map[string]string, args ...string) (*etcdSecurity, error) {
	t.Helper()
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := addEtcdSecurity(fs)
	s.getenv = func(k string) string { return env[k] }
	return s, fs.Parse(args)
}

func TestEtcdConfig(t *testing.T) {
	certs, err := auth.EnsureDevCerts(t.TempDir(), []auth.DevClient{{Name: "sluice", Role: auth.RoleAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		tls      bool
		user, pw string
		wantErr  string
	}{
		{name: "plain"},
		{name: "tls", args: []string{"--etcd-ca", certs.CA()}, tls: true},
		{name: "mtls", args: []string{"--etcd-ca", certs.CA(), "--etcd-cert", certs.ClientCert("sluice"), "--etcd-key", certs.ClientKey("sluice")}, tls: true},
		{name: "cert without key", args: []string{"--etcd-cert", certs.ClientCert("sluice")}, wantErr: "--etcd-ca, --etcd-cert, --etcd-key"},
		{name: "missing CA", args: []string{"--etcd-ca", filepath.Join(t.TempDir(), "nope.pem")}, wantErr: "nope.pem"},
		{name: "user and password", args: []string{"--etcd-user", "sluice", "--etcd-password", "pw"}, user: "sluice", pw: "pw"},
		{name: "password from env", env: map[string]string{"SLUICE_ETCD_PASSWORD": "envpw"}, args: []string{"--etcd-user", "sluice"}, user: "sluice", pw: "envpw"},
		{name: "flag beats env", env: map[string]string{"SLUICE_ETCD_PASSWORD": "envpw"}, args: []string{"--etcd-user", "sluice", "--etcd-password", "pw"}, user: "sluice", pw: "pw"},
		{name: "user without password", args: []string{"--etcd-user", "sluice"}, wantErr: "--etcd-user needs --etcd-password or SLUICE_ETCD_PASSWORD"},
		{name: "password without user", env: map[string]string{"SLUICE_ETCD_PASSWORD": "pw"}, wantErr: "needs --etcd-user"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseEtcdFlags(t, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := s.config([]string{"127.0.0.1:2379"})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("config = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (cfg.TLS != nil) != tc.tls || cfg.Username != tc.user || cfg.Password != tc.pw {
				t.Fatalf("config TLS %v user %q password %q; want TLS %v user %q password %q", cfg.TLS != nil, cfg.Username, cfg.Password, tc.tls, tc.user, tc.pw)
			}
		})
	}
}

// TestEtcdTLSAndUser connects, as a coordinator would, to an embedded etcd
// that requires client certificates and then etcd authentication.
func TestEtcdTLSAndUser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	certs, err := auth.EnsureDevCerts(t.TempDir(), []auth.DevClient{{Name: "root", Role: auth.RoleAdmin}, {Name: "sluice", Role: auth.RoleAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	addr, peer, err := freeAddrs()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e, err := dev.StartEtcd(ctx, dev.EtcdConfig{Dir: t.TempDir(), ClientAddr: addr, PeerAddr: peer,
		TLS: &dev.EtcdTLS{CertFile: certs.ServerCert(), KeyFile: certs.ServerKey(), ClientCA: certs.CA()}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	connect := func(env map[string]string, args ...string) (*clientv3.Client, error) {
		t.Helper()
		s, err := parseEtcdFlags(t, env, args...)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := s.config([]string{addr})
		if err != nil {
			t.Fatal(err)
		}
		return clientv3.New(cfg)
	}
	tlsArgs := func(name string) []string {
		return []string{"--etcd-ca", certs.CA(), "--etcd-cert", certs.ClientCert(name), "--etcd-key", certs.ClientKey(name)}
	}
	// Without a client certificate etcd does not answer.
	noCert, err := connect(nil, "--etcd-ca", certs.CA())
	if err == nil {
		short, c := context.WithTimeout(ctx, 2*time.Second)
		_, err = noCert.Put(short, "k", "v")
		c()
		noCert.Close()
	}
	if err == nil {
		t.Fatal("etcd answered a client without a certificate")
	}
	root, err := connect(nil, tlsArgs("root")...)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.Put(ctx, "/sluice/probe", "v"); err != nil {
		t.Fatalf("put over mutual TLS: %v", err)
	}
	// Turn on etcd authentication: root, and a user for Sluice.
	for _, step := range []func() error{
		func() error { _, err := root.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := root.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := root.UserAdd(ctx, "sluice", "s3cret"); return err },
		func() error { _, err := root.UserGrantRole(ctx, "sluice", "root"); return err },
		func() error { _, err := root.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("enable etcd auth: %v", err)
		}
	}
	good, err := connect(map[string]string{"SLUICE_ETCD_PASSWORD": "s3cret"}, append(tlsArgs("sluice"), "--etcd-user", "sluice")...)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if _, err := good.Put(ctx, "/sluice/probe", "v2"); err != nil {
		t.Fatalf("put as etcd user sluice: %v", err)
	}
	if _, err := connect(nil, append(tlsArgs("sluice"), "--etcd-user", "sluice", "--etcd-password", "wrong")...); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("a wrong etcd password: %v, want authentication failed", err)
	}
}

func freeAddrs() (string, string, error) {
	a, err := dev.FreeAddr()
	if err != nil {
		return "", "", err
	}
	b, err := dev.FreeAddr()
	return a, b, err
}

func TestServerSecurity(t *testing.T) {
	certs, err := auth.EnsureDevCerts(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := writeFile(tokens, "admin alice 0123456789abcdef0123\n"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		addr      string
		args      []string
		tls, auth bool
		wantErr   string
	}{
		{name: "loopback open", addr: "127.0.0.1:7070"},
		{name: "exposed open", addr: "0.0.0.0:7070", wantErr: "--grpc-addr 0.0.0.0:7070 is not loopback"},
		{name: "exposed insecure", addr: "0.0.0.0:7070", args: []string{"--insecure"}},
		{name: "exposed tls", addr: "0.0.0.0:7070", args: []string{"--tls-cert", certs.ServerCert(), "--tls-key", certs.ServerKey()}, tls: true},
		{name: "exposed tokens", addr: "0.0.0.0:7070", args: []string{"--token-file", tokens}, auth: true},
		{name: "mtls", addr: "0.0.0.0:7070", args: []string{"--tls-cert", certs.ServerCert(), "--tls-key", certs.ServerKey(), "--tls-client-ca", certs.CA()}, tls: true, auth: true},
		{name: "client CA alone", addr: "127.0.0.1:7070", args: []string{"--tls-client-ca", certs.CA()}, wantErr: "--tls-client-ca needs --tls-cert and --tls-key"},
		{name: "cert alone", addr: "127.0.0.1:7070", args: []string{"--tls-cert", certs.ServerCert()}, wantErr: "a certificate and a key"},
		{name: "missing token file", addr: "127.0.0.1:7070", args: []string{"--token-file", tokens + ".missing"}, wantErr: "tokens.missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			s := addServerSecurity(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			var cfg coordinator.Config
			err := s.apply(&cfg, tc.addr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("apply = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || (cfg.TLS != nil) != tc.tls || (cfg.Auth != nil) != tc.auth {
				t.Fatalf("apply = %v, TLS %v auth %v; want TLS %v auth %v", err, cfg.TLS != nil, cfg.Auth != nil, tc.tls, tc.auth)
			}
		})
	}
}

func TestClientSecurityTokenFromEnv(t *testing.T) {
	fs := flag.NewFlagSet("jobs", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := addClientSecurity(fs)
	s.getenv = func(k string) string { return map[string]string{"SLUICE_TOKEN": "from-env"}[k] }
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if got := s.bearer(); got != "from-env" {
		t.Errorf("token = %q, want from-env", got)
	}
	if err := fs.Parse([]string{"--token", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if got := s.bearer(); got != "from-flag" {
		t.Errorf("token = %q, want from-flag", got)
	}
	// -h must not show a token from the environment.
	if def := fs.Lookup("token").DefValue; def != "" {
		t.Errorf("--token default %q, want empty", def)
	}
	if cfg, err := s.tlsConfig(); cfg != nil || err != nil {
		t.Errorf("no TLS flags: %v, %v; want plaintext", cfg, err)
	}
}

func writeFile(name, data string) error { return os.WriteFile(name, []byte(data), 0o600) }
