package dev

import (
	"fmt"
	"path/filepath"

	"google.golang.org/grpc"

	"github.com/sluice-stream/sluice/auth"
	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/worker"
)

// devSecurity is the mutual TLS of `sluice dev --tls`: a throwaway CA in
// the data dir, the coordinator's certificate, one for each worker
// (CommonName its id, role worker) and an admin's and a viewer's for
// people, grpcurl and the demo.
type devSecurity struct {
	certs auth.DevCerts
}

// workerID names the in-process worker i (from 0).
func workerID(i int) string { return fmt.Sprintf("dev-worker-%d", i+1) }

func newDevSecurity(cfg Config) (*devSecurity, error) {
	clients := []auth.DevClient{{Name: "admin", Role: auth.RoleAdmin}, {Name: "viewer", Role: auth.RoleViewer}}
	for i := range cfg.Workers {
		clients = append(clients, auth.DevClient{Name: workerID(i), Role: auth.RoleWorker})
	}
	certs, err := auth.EnsureDevCerts(filepath.Join(cfg.DataDir, "tls"), clients)
	if err != nil {
		return nil, fmt.Errorf("dev --tls: %w", err)
	}
	return &devSecurity{certs: certs}, nil
}

func (s *devSecurity) coordinator(c *coordinator.Config) error {
	t, err := auth.ServerTLS(s.certs.ServerCert(), s.certs.ServerKey(), s.certs.CA())
	if err != nil {
		return fmt.Errorf("dev --tls: %w", err)
	}
	c.TLS = t
	c.Auth = auth.NewAuthenticator(nil, nil, true)
	return nil
}

func (s *devSecurity) worker(w *worker.Config) error {
	t, err := auth.ClientTLS(s.certs.CA(), s.certs.ClientCert(w.ID), s.certs.ClientKey(w.ID))
	if err != nil {
		return fmt.Errorf("dev --tls: %w", err)
	}
	w.TLS = t
	return nil
}

// adminDial is how the demo reaches the coordinator: as the admin.
func (s *devSecurity) adminDial() ([]grpc.DialOption, error) {
	t, err := auth.ClientTLS(s.certs.CA(), s.certs.ClientCert("admin"), s.certs.ClientKey("admin"))
	if err != nil {
		return nil, fmt.Errorf("dev --tls: %w", err)
	}
	return []grpc.DialOption{client.WithTLS(t)}, nil
}
