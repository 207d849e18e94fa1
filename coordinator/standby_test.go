package coordinator_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sluice-stream/sluice/coordinator"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// freezer is a TCP proxy whose traffic can be held, as a network partition
// holds it: connections stay open and nothing gets through.
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	held   chan struct{} // closed to release; nil while flowing
	conns  []net.Conn
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, up)
			f.mu.Unlock()
			go f.pipe(c, up)
			go f.pipe(up, c)
		}
	}()
	t.Cleanup(func() {
		f.release()
		ln.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.conns {
			c.Close()
		}
	})
	return f
}

func (f *freezer) pipe(from, to net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		f.mu.Lock()
		held := f.held
		f.mu.Unlock()
		if held != nil {
			<-held
		}
		if n > 0 {
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = to.(*net.TCPConn).CloseWrite()
			}
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held == nil {
		f.held = make(chan struct{})
	}
}

func (f *freezer) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held != nil {
		close(f.held)
		f.held = nil
	}
}

// TestStandbyCutOffFromEtcdTurnsWorkersAway: a standby that cannot reach
// etcd still answers a worker at once with FailedPrecondition, so the worker
// tries the next coordinator. It used to look the leader up in etcd with no
// bound and held the worker forever.
func TestStandbyCutOffFromEtcdTurnsWorkersAway(t *testing.T) {
	ctx := testContext(t)
	leader := newServer(t, func(_ *clientv3.Client, cfg *coordinator.Config) { cfg.SessionTTL = 2 * time.Second })
	lctx, lcancel := context.WithCancel(ctx)
	ldone := make(chan error, 1)
	go func() { ldone <- leader.coord.Run(lctx) }()
	t.Cleanup(func() { lcancel(); <-ldone })
	for !leader.coord.IsLeader() {
		select {
		case <-ctx.Done():
			t.Fatal("the first coordinator does not lead")
		case <-time.After(10 * time.Millisecond):
		}
	}

	var f *freezer
	var standbyAddr string
	standby := newServer(t, func(_ *clientv3.Client, cfg *coordinator.Config) {
		f = newFreezer(t, etcdAddr)
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{f.ln.Addr().String()}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		cfg.Etcd = cli
		cfg.SessionTTL = 2 * time.Second
		standbyAddr = cfg.AdvertiseAddr
	})
	sctx, scancel := context.WithCancel(ctx)
	sdone := make(chan error, 1)
	go func() { sdone <- standby.coord.Run(sctx) }()
	// Released first, so that the standby can stop.
	t.Cleanup(func() { f.release(); scancel(); <-sdone })
	for {
		addr, err := standby.coord.Leader(ctx)
		if err == nil && addr != standbyAddr {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the standby does not see the leader: %q, %v", addr, err)
		case <-time.After(10 * time.Millisecond):
		}
	}

	f.freeze()
	conn, err := grpc.NewClient(standbyAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Far longer than the answer may take; the code says which way it went.
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	stream, err := sluicev1.NewWorkerServiceClient(conn).Connect(cctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Send(&sluicev1.ConnectRequest{Kind: &sluicev1.ConnectRequest_Register{Register: &sluicev1.Register{WorkerId: "w1", Slots: 1}}})
	_, err = stream.Recv()
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Connect to a standby cut off from etcd: %v, want FailedPrecondition", err)
	}
}
