package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/sluice-stream/sluice/auth"
	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/coordinator"
)

// clientSecurity are the TLS and token flags of workers and client
// commands. Their defaults come from the environment; the token's is read
// only when used, so that -h does not print it.
type clientSecurity struct {
	useTLS *bool
	ca     *string
	cert   *string
	key    *string
	token  *string
	getenv func(string) string
}

func addClientSecurity(fs *flag.FlagSet) *clientSecurity {
	return &clientSecurity{
		useTLS: fs.Bool("tls", os.Getenv("SLUICE_TLS") == "1", "dial the coordinators over TLS trusting the system's CAs; implied by --tls-ca and --tls-cert (env SLUICE_TLS=1)"),
		ca:     fs.String("tls-ca", os.Getenv("SLUICE_TLS_CA"), "PEM file of the CA that signed the coordinators' certificates (env SLUICE_TLS_CA)"),
		cert:   fs.String("tls-cert", os.Getenv("SLUICE_TLS_CERT"), "PEM client certificate for mutual TLS: CommonName the principal, OrganizationalUnit the role (env SLUICE_TLS_CERT)"),
		key:    fs.String("tls-key", os.Getenv("SLUICE_TLS_KEY"), "PEM key of --tls-cert (env SLUICE_TLS_KEY)"),
		token:  fs.String("token", "", "bearer token or JWT sent as \"authorization: Bearer <token>\"; better from env SLUICE_TOKEN, which ps does not show"),
		getenv: os.Getenv,
	}
}

// tlsConfig is nil when TLS is off.
func (s *clientSecurity) tlsConfig() (*tls.Config, error) {
	if !*s.useTLS && *s.ca == "" && *s.cert == "" && *s.key == "" {
		return nil, nil
	}
	cfg, err := auth.ClientTLS(*s.ca, *s.cert, *s.key)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca, --tls-cert, --tls-key: %w", err)
	}
	return cfg, nil
}

func (s *clientSecurity) bearer() string {
	if *s.token != "" {
		return *s.token
	}
	return s.getenv("SLUICE_TOKEN")
}

// dialOptions are the SDK's options for these flags.
func (s *clientSecurity) dialOptions() ([]grpc.DialOption, error) {
	cfg, err := s.tlsConfig()
	if err != nil {
		return nil, err
	}
	var opts []grpc.DialOption
	if cfg != nil {
		opts = append(opts, client.WithTLS(cfg))
	}
	if t := s.bearer(); t != "" {
		opts = append(opts, client.WithToken(t))
	}
	return opts, nil
}

// serverSecurity are a coordinator's TLS and authentication flags.
type serverSecurity struct {
	cert, key, clientCA *string
	tokenFile, jwtKey   *string
	insecure            *bool
}

func addServerSecurity(fs *flag.FlagSet) *serverSecurity {
	return &serverSecurity{
		cert:      fs.String("tls-cert", "", "PEM certificate to serve gRPC over TLS"),
		key:       fs.String("tls-key", "", "PEM key of --tls-cert"),
		clientCA:  fs.String("tls-client-ca", "", "PEM CA that signs client certificates: mutual TLS, every client and worker must present one (CommonName the principal, OrganizationalUnit the role)"),
		tokenFile: fs.String("token-file", "", "bearer tokens, one \"role name token\" a line (roles admin, viewer, worker; a worker's name is its id; # comments)"),
		jwtKey:    fs.String("jwt-public-key", "", "PEM public key (RSA, ECDSA or Ed25519) verifying JWT bearer tokens: sub the principal, role the role, exp required"),
		insecure:  fs.Bool("insecure", false, "serve on a non-loopback --grpc-addr with neither TLS nor authentication (anyone reaching it can do anything)"),
	}
}

// apply sets cfg's TLS and Auth, and refuses to expose an open coordinator.
func (s *serverSecurity) apply(cfg *coordinator.Config, addr string) error {
	if *s.clientCA != "" && (*s.cert == "" || *s.key == "") {
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS")
	}
	if *s.cert != "" || *s.key != "" {
		t, err := auth.ServerTLS(*s.cert, *s.key, *s.clientCA)
		if err != nil {
			return fmt.Errorf("--tls-cert, --tls-key, --tls-client-ca: %w", err)
		}
		cfg.TLS = t
	}
	a, err := auth.New(auth.Config{TokenFile: *s.tokenFile, JWTPublicKey: *s.jwtKey, ClientCerts: *s.clientCA != ""})
	if err != nil {
		return err
	}
	cfg.Auth = a
	return auth.CheckExposure(addr, cfg.TLS != nil, a != nil, *s.insecure)
}

// etcdSecurity are a coordinator's etcd client TLS and authentication flags.
type etcdSecurity struct {
	ca, cert, key  *string
	user, password *string
	getenv         func(string) string
}

func addEtcdSecurity(fs *flag.FlagSet) *etcdSecurity {
	return &etcdSecurity{
		ca:       fs.String("etcd-ca", "", "PEM CA that signed etcd's server certificate: talk to etcd over TLS"),
		cert:     fs.String("etcd-cert", "", "PEM client certificate for etcd (client certificate authentication)"),
		key:      fs.String("etcd-key", "", "PEM key of --etcd-cert"),
		user:     fs.String("etcd-user", "", "etcd user (etcd authentication)"),
		password: fs.String("etcd-password", "", "password of --etcd-user; better from env SLUICE_ETCD_PASSWORD, which ps does not show"),
		getenv:   os.Getenv,
	}
}

// config builds the etcd client config for endpoints.
func (s *etcdSecurity) config(endpoints []string) (clientv3.Config, error) {
	cfg := clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if *s.ca != "" || *s.cert != "" || *s.key != "" {
		t, err := auth.ClientTLS(*s.ca, *s.cert, *s.key)
		if err != nil {
			return cfg, fmt.Errorf("--etcd-ca, --etcd-cert, --etcd-key: %w", err)
		}
		cfg.TLS = t
	}
	password := *s.password
	if password == "" {
		password = s.getenv("SLUICE_ETCD_PASSWORD")
	}
	switch {
	case *s.user == "" && password != "":
		return cfg, errors.New("--etcd-password (or SLUICE_ETCD_PASSWORD) needs --etcd-user")
	case *s.user != "" && password == "":
		return cfg, errors.New("--etcd-user needs --etcd-password or SLUICE_ETCD_PASSWORD")
	}
	cfg.Username, cfg.Password = *s.user, password
	return cfg, nil
}
